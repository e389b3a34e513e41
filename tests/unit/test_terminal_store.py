"""The merchant terminal's store (jointpay.adapters.terminal_store): what a receipt
changes, whether the terminal holds all, some or none of the payments it answers."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from jointpay.adapters.terminal_store import SqliteTerminalStore
from jointpay.protocol.terminal import TakenPayment


def _taken(card: str, ser: int) -> TakenPayment:
    return TakenPayment(
        card, b"cert", b"\x01" * 32, "secp256k1", b"\x02" * 33, ser, b"spec %d" % ser,
        b"b" * 32, b"r" * 32, b"", 100 + ser, "EUR", 1_700_000_000, ser,
    )  # fmt: skip


def _result(card: str, ser: int, status: str = "accepted", reason: str | None = None) -> dict:
    return {"card": card, "ser": ser, "status": status, "reason": reason, "amount": "1.00"}


@pytest.fixture
def store(tmp_path: Path) -> SqliteTerminalStore:
    s = SqliteTerminalStore(tmp_path / "terminal.db")
    for ser in range(6):
        s.add_payment(_taken("4000000000000001", ser))
    return s


def _states(store: SqliteTerminalStore) -> list[tuple[str, str, int, object, object, object]]:
    return [
        (card, ser, deposit, status, reason)
        for card, ser, deposit, status, reason in store._db.execute(
            "SELECT card_number, ser, deposit_id, status, reason FROM payments ORDER BY ser"
        )
    ]


@pytest.mark.parametrize("extra", [0, 3, 500], ids=["held", "some-not-held", "mostly-not-held"])
def test_a_receipt_settles_exactly_the_pending_payments_it_answers(
    store: SqliteTerminalStore, extra: int
) -> None:
    """Whether the receipt answers only payments this terminal holds or also many it
    does not (a batch file from elsewhere): the same rows change, the same count."""
    results = [
        _result("4000000000000001", 0),
        _result("4000000000000001", 1, "rejected", "bad_signature"),
        _result("4000000000000001", 2, "rejected", "insufficient_balance"),
        _result("4000000000000001", 3, "rejected", "clearing_unavailable"),  # retryable
    ]
    results += [_result("4000000000000002", ser) for ser in range(extra)]
    results.append(_result("4000000000000001", 99))  # never taken here
    assert store.record_results("S1:1", results) == 3
    states = _states(store)
    assert [s[2:] for s in states] == [
        ("S1:1", "accepted", None),
        ("S1:1", "rejected", "bad_signature"),
        ("S1:1", "rejected", "insufficient_balance"),
        (None, None, None),  # a retryable rejection stays pending
        (None, None, None),
        (None, None, None),
    ]
    assert store.count_pending() == 3
    # settled once: a second receipt for the same payments changes nothing
    assert store.record_results("S1:2", results) == 0
    assert _states(store) == states


def test_a_receipt_for_payments_the_terminal_does_not_hold_changes_nothing(
    tmp_path: Path,
) -> None:
    empty = SqliteTerminalStore(tmp_path / "empty.db")
    assert empty.record_results("S1:1", [_result("4000000000000002", s) for s in range(50)]) == 0
    assert empty.count_pending() == 0


def test_since_gives_what_the_bank_settled_since_whenever_it_was_taken(
    store: SqliteTerminalStore, tmp_path: Path
) -> None:
    """``pending(deposited_since=T)``: the pending payments, and those the bank settled
    at or after T by its receipt's time, whenever they were taken (all were taken long
    before T here); one settled by a store that kept no time is given too."""
    card = "4000000000000001"
    store.record_results("S1:1", [_result(card, 0), _result(card, 1)], 1_800_000_000)
    store.record_results("S1:2", [_result(card, 2, "rejected", "stale")], 1_800_000_500)
    store.record_results("S1:3", [_result(card, 3)], None)  # no time known
    sers = lambda since: [p.ser for p in store.pending(deposited_since=since)]  # noqa: E731
    assert sers(None) == [4, 5]
    assert sers(1_800_000_000) == [0, 1, 2, 3, 4, 5]
    assert sers(1_800_000_001) == [2, 3, 4, 5]
    assert sers(1_900_000_000) == [3, 4, 5]
    # a store of version 3 (no deposit times) upgraded: its deposited payments are given
    path = tmp_path / "v3.db"
    old = SqliteTerminalStore(path)
    old.add_payment(_taken(card, 0))
    old.record_results("S1:1", [_result(card, 0)], 1_800_000_000)
    old.close()
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE payments DROP COLUMN deposited_at")
    db.execute("PRAGMA user_version=3")
    db.commit()
    db.close()
    upgraded = SqliteTerminalStore(path)
    assert [p.ser for p in upgraded.pending(deposited_since=1_900_000_000)] == [0]
    assert list(upgraded.pending()) == []
    upgraded.close()
