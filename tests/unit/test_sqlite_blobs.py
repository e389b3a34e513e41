"""The identity adapter for ``bytes`` (jointpay.storage.sqlite_blobs): registered by
both SQLite stores, and changing nothing that is stored."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from jointpay.adapters.terminal_store import SqliteTerminalStore
from jointpay.storage.sql import make_engine
from jointpay.storage.sqlite_blobs import bind_bytes_directly


def _registered() -> object:
    return sqlite3.adapters.get((bytes, sqlite3.PrepareProtocol))


def test_both_sqlite_stores_register_it(tmp_path: Path) -> None:
    sqlite3.adapters.pop((bytes, sqlite3.PrepareProtocol), None)
    make_engine(f"sqlite:///{tmp_path / 'bank.db'}").dispose()
    assert _registered() is bytes
    sqlite3.adapters.pop((bytes, sqlite3.PrepareProtocol), None)
    SqliteTerminalStore(tmp_path / "terminal.db").close()
    assert _registered() is bytes


def test_blobs_round_trip_unchanged() -> None:
    bind_bytes_directly()
    values = [b"", b"\x00", bytes(range(256)), b"\xff" * 1000]
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (i INTEGER PRIMARY KEY, v BLOB)")
    db.executemany("INSERT INTO t VALUES (?, ?)", list(enumerate(values)))
    got = [row[0] for row in db.execute("SELECT v FROM t ORDER BY i")]
    assert got == values
    assert all(type(v) is bytes for v in got)
    # stored as blobs, not as text: typeof() tells what SQLite holds
    assert {row[0] for row in db.execute("SELECT typeof(v) FROM t")} == {"blob"}
    db.close()


def test_the_adapter_returns_the_same_object() -> None:
    value = b"jointpay"
    assert bytes(value) is value  # no copy per bound parameter
