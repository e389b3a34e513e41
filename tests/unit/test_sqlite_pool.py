"""A SQLite store keeps its connections open between transactions (jointpay.storage.sql):
the write-ahead log is checkpointed by SQLite's own rule and when the store closes, not
at the end of every transaction."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from jointpay.domain.records import Account, AccountKind
from jointpay.storage.sql import SQLITE_POOL_SIZE, SqlStore


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
