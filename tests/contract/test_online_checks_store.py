"""The count of on-line checks per (card, merchant's bank, S_id), over memory, SQLite and
PostgreSQL: the policy's ``online_checks`` within ``online_checks_window`` are recorded,
the next is refused and records nothing, the window slides, old rows go, and on
PostgreSQL two checks at the limit at once never both pass."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from jointpay.storage import open_store
from jointpay.storage import tables as t
from jointpay.storage.base import ONLINE_SWEEP, Store, online_free_at
from jointpay.storage.memory import MemoryStore
from jointpay.storage.sql import SqlStore
from pg import fresh_schema, schema_url

T = 1_800_000_000
CARD, OTHER_CARD = "4000000000000002", "4000000000000010"
W = 3_600


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "memory":
        s = open_store("memory:")
        yield s
        s.close()
    elif request.param == "sqlite":
        s = open_store(None, home=tmp_path)
        yield s
        s.close()
    else:
        with fresh_schema() as schema:
            s = open_store(schema_url(schema))
            yield s
            s.close()


def ask(
    store: Store, at: int, card: str = CARD, bank: str = "bank-a", sid: str = "SP1", limit: int = 3
) -> bool:
    with store.transaction() as tx:
        return tx.count_online_check(card, bank, sid, at, window=W, limit=limit)


def rows(store: Store) -> int:
    """How many rows the table holds (a row is one key's checks of one second)."""
    if isinstance(store, MemoryStore):
        return sum(len(v) for v in store._data.online_checks.values())
    assert isinstance(store, SqlStore)
    with store.transaction() as tx:
        return int(tx.c.execute(select(func.count()).select_from(t.online_checks)).scalar_one())


def test_the_limit_is_per_card_and_merchant_and_a_refusal_records_nothing(store: Store) -> None:
    assert [ask(store, T), ask(store, T), ask(store, T + 1)] == [True, True, True]
    before = rows(store)
    assert ask(store, T + 2) is False
    assert ask(store, T + 2) is False
    assert rows(store) == before  # a refusal writes nothing
    # the same S_id at another bank, another S_id, another card: each its own count
    assert ask(store, T + 2, bank="bank-b") is True
    assert ask(store, T + 2, sid="SP2") is True
    assert ask(store, T + 2, card=OTHER_CARD) is True


def test_the_window_slides(store: Store) -> None:
    assert [ask(store, T), ask(store, T + 100), ask(store, T + 200)] == [True] * 3
    assert ask(store, T + W - 1) is False  # all three within (T - 1, T + W - 1]
    assert ask(store, T + W) is True  # the check at T is out of (T, T + W]
    assert ask(store, T + W) is False
    assert ask(store, T + W + 100) is True  # and the one at T + 100


def free_at(store: Store, at: int, limit: int = 3) -> int:
    with store.transaction() as tx:
        return tx.online_check_free_at(CARD, "bank-a", "SP1", at, window=W, limit=limit)


def test_a_refused_merchant_is_told_when_it_may_ask_again(store: Store) -> None:
    """The second from which the key holds fewer than the limit in its window: when
    enough of its oldest checks have left it (a check of second t leaves at t + W)."""
    assert free_at(store, T) == T  # nothing asked: at once
    assert [ask(store, T), ask(store, T + 100), ask(store, T + 100)] == [True] * 3
    assert free_at(store, T + 200) == T + W  # the check at T leaves first
    assert ask(store, T + W - 1) is False
    assert ask(store, free_at(store, T + W - 1)) is True  # asked then, it is answered
    # (T + 100) x 2 and (T + W) x 1: one must go, and the oldest second holds two
    assert free_at(store, T + W) == T + 100 + W
    assert free_at(store, T + W, limit=4) == T + W  # under a limit of 4 it may ask now
    assert free_at(store, T + W, limit=1) == T + W + W  # all three must go
    assert ask(store, T + 100 + W - 1) is False
    assert ask(store, T + 100 + W) is True
    assert ask(store, T + 100 + W) is True  # now (T + W) and (T + 100 + W) x 2: the limit
    assert free_at(store, T + 100 + W) == T + W + W  # the one at T + W leaves first


def test_free_at_counts_only_the_window_and_any_order() -> None:
    rows = [(T + 50, 1), (T - W, 5), (T + 10, 2), (T + 30, 1)]  # T - W is out of the window
    assert online_free_at(rows, T + 60, window=W, limit=5) == T + 60  # 4 in the window
    assert online_free_at(rows, T + 60, window=W, limit=4) == T + 10 + W
    assert online_free_at(rows, T + 60, window=W, limit=2) == T + 30 + W
    assert online_free_at(rows, T + 60, window=W, limit=1) == T + 50 + W
    assert online_free_at([], T, window=W, limit=1) == T


def test_a_failed_transaction_records_no_check(store: Store) -> None:
    def fails() -> None:
        with store.transaction() as tx:
            assert tx.count_online_check(CARD, "bank-a", "SP1", T, window=W, limit=1)
            raise RuntimeError("the use case failed")

    with pytest.raises(RuntimeError):
        fails()
    assert ask(store, T, limit=1) is True


def test_old_rows_go_the_askers_at_once_and_everyone_elses_a_sweep_at_a_time(
    store: Store,
) -> None:
    """The table holds about one window's checks: a check deletes its key's expired rows
    and up to ONLINE_SWEEP of other keys', so keys never asked again are cleaned too."""
    for n in range(ONLINE_SWEEP + 20):
        assert ask(store, T, card=f"50000000{n:08d}", limit=1)
    assert ask(store, T + 1)
    assert ask(store, T + 2)
    assert rows(store) == ONLINE_SWEEP + 22
    later = T + W + 5  # every row above has expired
    assert ask(store, later)
    assert rows(store) == 20 + 1  # its own two old rows, and 100 of the others
    assert ask(store, later, sid="SP2")
    assert rows(store) == 2


@pytest.mark.postgres
def test_on_postgresql_a_second_check_at_the_limit_waits_for_the_first_and_is_refused() -> None:
    """Check 1 takes the last place and has not committed; check 2, at once, must wait
    for it (the key's lock), then count it and be refused. Counting without the lock,
    check 2 saw check 1's row uncommitted, not at all, and both passed."""
    with fresh_schema() as schema:
        store = open_store(schema_url(schema))
        try:
            first_in, release = threading.Event(), threading.Event()
            results: dict[str, bool] = {}

            def first() -> None:
                with store.transaction() as tx:
                    results["first"] = tx.count_online_check(
                        CARD, "bank-a", "SP1", T, window=W, limit=1
                    )
                    first_in.set()
                    release.wait(10)

            def second() -> None:  # a second later: another row, no key in common
                results["second"] = ask(store, T + 1, limit=1)

            one = threading.Thread(target=first)
            one.start()
            assert first_in.wait(10)
            two = threading.Thread(target=second)
            two.start()
            two.join(0.5)
            waited = two.is_alive()
            release.set()
            one.join(10)
            two.join(10)
            assert waited, "the second check did not wait for the first"
            assert results == {"first": True, "second": False}
            assert rows(store) == 1
        finally:
            store.close()


@pytest.mark.postgres
def test_on_postgresql_concurrent_checks_at_the_limit_admit_exactly_the_limit() -> None:
    """Twelve checks at once, each in its own transaction, about one card by one
    merchant with a limit of 5: five pass, seven are refused; another merchant's
    checks at the same moment are counted apart."""
    with fresh_schema() as schema:
        store = open_store(schema_url(schema))
        try:
            start = threading.Barrier(16)
            got: list[tuple[str, bool]] = []
            lock = threading.Lock()

            def check(sid: str) -> None:
                start.wait(10)
                ok = ask(store, T, sid=sid, limit=5)
                with lock:
                    got.append((sid, ok))

            threads = [threading.Thread(target=check, args=("SP1",)) for _ in range(12)]
            threads += [threading.Thread(target=check, args=("SP2",)) for _ in range(4)]
            for th in threads:
                th.start()
            for th in threads:
                th.join(30)
            assert sorted(ok for sid, ok in got if sid == "SP1") == [False] * 7 + [True] * 5
            assert [ok for sid, ok in got if sid == "SP2"] == [True] * 4
            assert ask(store, T + 1, limit=5) is False
        finally:
            store.close()
