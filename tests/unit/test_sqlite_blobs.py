"""The identity adapters for ``bytes`` and ``None`` (jointpay.storage.sqlite_blobs):
registered by both SQLite stores, and changing nothing that is stored."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from jointpay.adapters.terminal_store import SqliteTerminalStore
from jointpay.storage.sql import make_engine
from jointpay.storage.sqlite_blobs import register_identity_adapters

KEYS = [(bytes, sqlite3.PrepareProtocol), (type(None), sqlite3.PrepareProtocol)]


def _forget() -> None:
    for key in KEYS:
        sqlite3.adapters.pop(key, None)


def _registered() -> bool:
    return all(key in sqlite3.adapters for key in KEYS)


def test_both_sqlite_stores_register_them(tmp_path: Path) -> None:
    _forget()
    make_engine(f"sqlite:///{tmp_path / 'bank.db'}").dispose()
    assert _registered()
    _forget()
    SqliteTerminalStore(tmp_path / "terminal.db").close()
    assert _registered()


def test_blobs_round_trip_unchanged() -> None:
    register_identity_adapters()
    values = [b"", b"\x00", bytes(range(256)), b"\xff" * 1000]
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (i INTEGER PRIMARY KEY, v BLOB)")
    db.executemany("INSERT INTO t VALUES (?, ?)", list(enumerate(values)))
    got = [row[0] for row in db.execute("SELECT v FROM t ORDER BY i")]
    assert got == values
    assert all(type(v) is bytes for v in got)
    # stored as blobs, not as text: typeof() tells what SQLite holds
    assert {row[0] for row in db.execute("SELECT typeof(v) FROM t")} == {"blob"}
    db.execute("INSERT INTO t VALUES (?, ?)", (len(values), None))
    assert db.execute("SELECT typeof(v) FROM t WHERE i = ?", (len(values),)).fetchone() == ("null",)
    db.close()


def test_the_adapters_return_the_same_object() -> None:
    register_identity_adapters()
    value = b"jointpay"
    for key, given in zip(KEYS, (value, None), strict=True):
        assert sqlite3.adapters[key](given) is given  # no copy per bound parameter
