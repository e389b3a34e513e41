"""A SQLite store keeps its connections open between transactions (jointpay.storage.sql):
the write-ahead log is checkpointed on a thread of the store's and when the store closes,
not at the end of every transaction nor inside a commit."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from jointpay.domain.records import Account, AccountKind
from jointpay.storage.sql import CHECKPOINT_ROWS, SQLITE_POOL_SIZE, SqlStore, _Checkpointer


def _account(i: int) -> Account:
    return Account(f"holder:{i}", AccountKind.HOLDER, "EUR", f"h{i}", 0, 1)


def test_the_log_stays_while_the_store_is_open_and_is_folded_in_at_close(tmp_path: Path) -> None:
    path = tmp_path / "bank.db"
    store = SqlStore(f"sqlite:///{path}")
    with store.transaction() as tx:
        tx.create_account(_account(1))
    wal = path.with_name("bank.db-wal")
    assert wal.exists()  # the connection stayed open: no checkpoint, no deletion
    assert wal.stat().st_size > 0
    with store.transaction() as tx:
        assert [a.id for a in tx.list_accounts()] == ["holder:1"]
    store.close()
    assert not wal.exists()  # the last connection checkpointed the log into the file
    db = sqlite3.connect(path)
    try:
        assert db.execute("SELECT id FROM accounts").fetchall() == [("holder:1",)]
    finally:
        db.close()


def test_more_threads_than_kept_connections_never_wait_for_one(tmp_path: Path) -> None:
    """Past the connections it keeps, a store opens more (closed after their
    transaction): a thread never waits for a free connection, only for SQLite's lock."""
    store = SqlStore(f"sqlite:///{tmp_path / 'bank.db'}")
    n = 3 * SQLITE_POOL_SIZE
    inside = threading.Barrier(n, timeout=30)
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            conn = store.engine.raw_connection()  # checked out of the pool, all at once
            try:
                conn.cursor().execute("SELECT count(*) FROM accounts").fetchall()
                inside.wait()
            finally:
                conn.close()  # back to the pool, or closed past the kept ones
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    store.close()
    assert not errors


def test_the_log_is_folded_in_on_a_thread_of_its_own_once_enough_rows_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's own rule (a checkpoint inside the commit that brings the log past 1,000
    pages) is off: the committing thread never copies the log into the file, a thread
    of the store's does, after CHECKPOINT_ROWS changed rows, and ends when done."""
    ran: list[str] = []
    run = _Checkpointer._run

    def spy(self: _Checkpointer) -> None:
        ran.append(threading.current_thread().name)
        run(self)

    monkeypatch.setattr(_Checkpointer, "_run", spy)
    path = tmp_path / "bank.db"
    store = SqlStore(f"sqlite:///{path}")
    raw = store.engine.raw_connection()
    try:
        assert raw.cursor().execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
    finally:
        raw.close()
    with store.transaction() as tx:
        for i in range(CHECKPOINT_ROWS - 1):
            tx.create_account(_account(i))
    checkpoints = store._checkpoints
    assert checkpoints is not None
    checkpoints.wait()
    assert ran == []  # fewer rows than the threshold: the log stays
    wal = path.with_name("bank.db-wal")
    logged = wal.stat().st_size
    with store.transaction() as tx:
        tx.create_account(_account(CHECKPOINT_ROWS))
    checkpoints.wait()
    assert ran == ["jointpay-sqlite-checkpoint"]
    assert not any(t.name == "jointpay-sqlite-checkpoint" for t in threading.enumerate())
    # the log was copied into the file: a reader of the file alone sees every row
    copy = tmp_path / "copy.db"
    copy.write_bytes(path.read_bytes())  # the database file without its log
    assert wal.stat().st_size >= logged  # a passive checkpoint leaves the log in place
    db = sqlite3.connect(copy)
    try:
        assert db.execute("SELECT count(*) FROM accounts").fetchone() == (CHECKPOINT_ROWS,)
    finally:
        db.close()
    store.close()
    assert not wal.exists()
