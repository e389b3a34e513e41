"""The merchant terminal's store (jointpay.adapters.terminal_store): what a receipt
changes, whether the terminal holds all, some or none of the payments it answers."""

from __future__ import annotations

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
