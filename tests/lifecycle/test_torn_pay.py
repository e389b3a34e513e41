"""A PAY whose answer is lost: the card may or may not have paid, and the terminal must
find out at the card's next reading, never charge it twice, never lose the payment.

The PC/SC tearing tests (`tests/pcsc/test_tearing.py`) cut the card's power at every
point of a payment and read it back with :meth:`Terminal.recover`; these drive the
product's own path, `Home.pay`, as a merchant would: the holder presents the card again.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jointpay.adapters import card_file
from jointpay.adapters.terminal_store import SCHEMA_VERSION, SqliteTerminalStore
from jointpay.home import Home
from jointpay.protocol.card import INS_PAY, PAYMENT_LOG, payment_from_last
from jointpay.protocol.terminal import EarlierPaymentRecovered, InFlight, PaymentDeclined
from worlds import PIN, Clock

LOAD = 20_000


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Any]:
    clock = Clock()
    h = Home(tmp_path, "memory:", clock)
    h.init_bank(suite="secp256k1", group=None, currency="EUR", bank_id="test-bank")
    with h.bank() as bank:
        bank.open_account("alice", 50_000)
        card = h.issue_card(
            bank, holder="alice", pin=PIN, load=LOAD, mode="cash", limit=0, user_key="card"
        ).card_number
        h.open_merchant(bank, "Shop")
        h.open_merchant(bank, "Cafe")
    return {"home": h, "card": card, "clock": clock}


@pytest.fixture
def cut(monkeypatch: pytest.MonkeyPatch) -> Callable[[bool], None]:
    """``cut(after)``: the next PAY is lost on its way to the card (``after`` False: the
    card never runs it) or on its way back (True: the card pays, the answer is lost)."""
    real = card_file.InProcessChannel.transmit
    plan: dict[str, bool] = {}

    def transmit(self: card_file.InProcessChannel, apdu: bytes) -> bytes:
        if apdu[1] != INS_PAY or "after" not in plan:
            return real(self, apdu)
        after = plan.pop("after")
        if after:
            real(self, apdu)
        raise ConnectionError("the card was pulled out")

    monkeypatch.setattr(card_file.InProcessChannel, "transmit", transmit)

    def arm(after: bool) -> None:
        plan["after"] = after

    return arm


def _balance(h: Home, card: str) -> int:
    return h.card(card).load().balance


def _held(h: Home, merchant: str) -> list[tuple[int, int]]:
    with h.terminal(merchant) as (_, store):
        return [(p.ser, p.amount) for p in store.pending()]


def test_a_paid_pay_whose_answer_was_lost_is_recovered_at_the_next_presentation(
    world: dict[str, Any], cut: Callable[[bool], None]
) -> None:
    h, card = world["home"], world["card"]
    cut(True)
    with pytest.raises(PaymentDeclined) as torn:
        h.pay(card, "Shop", 1250, PIN)
    assert torn.value.code == "card_removed"
    assert _balance(h, card) == LOAD - 1250  # the card paid
    assert _held(h, "Shop") == []  # the terminal does not know it yet
    # the holder presents the card again for the same purchase: no second debit
    with pytest.raises(EarlierPaymentRecovered) as again:
        h.pay(card, "Shop", 1250, PIN)
    assert again.value.code == "earlier_payment_recovered"
    assert "12.50 EUR (ser 0)" in str(again.value)
    assert (again.value.payment.ser, again.value.payment.amount) == (0, 1250)
    assert _balance(h, card) == LOAD - 1250
    assert _held(h, "Shop") == [(0, 1250)]
    # recovered once: the next presentation is a new payment
    assert h.pay(card, "Shop", 300, PIN).ser == 1
    assert _balance(h, card) == LOAD - 1550
    with h.bank() as bank:
        receipt = h.deposit("Shop", bank)
        assert [(r["ser"], r["status"]) for r in receipt["results"]] == [
            (0, "accepted"),
            (1, "accepted"),
        ]
        assert (receipt["credited"], receipt["fees"], receipt["net"]) == ("15.50", "0.00", "15.50")
        assert bank.audit().ok


def test_a_pay_lost_before_the_card_ran_it_leaves_nothing_to_recover(
    world: dict[str, Any], cut: Callable[[bool], None]
) -> None:
    h, card = world["home"], world["card"]
    cut(False)
    with pytest.raises(PaymentDeclined) as torn:
        h.pay(card, "Shop", 1250, PIN)
    assert torn.value.code == "card_removed"
    assert _balance(h, card) == LOAD
    with h.terminal("Shop") as (_, store):
        assert store.in_flight(card) is not None
    # the card's next reading finds it never paid, and this payment goes ahead
    assert h.pay(card, "Shop", 1250, PIN).ser == 0
    assert _balance(h, card) == LOAD - 1250
    assert _held(h, "Shop") == [(0, 1250)]
    with h.terminal("Shop") as (_, store):
        assert store.in_flight(card) is None


def test_a_card_that_paid_elsewhere_since_is_not_taken_for_our_payment(
    world: dict[str, Any], cut: Callable[[bool], None]
) -> None:
    h, card = world["home"], world["card"]
    cut(False)  # Shop's PAY never reached the card
    with pytest.raises(PaymentDeclined):
        h.pay(card, "Shop", 1250, PIN)
    assert h.pay(card, "Cafe", 400, PIN).ser == 0  # the card's ser 0 went to the Cafe
    assert h.pay(card, "Shop", 1250, PIN).ser == 1  # Shop does not claim the Cafe's
    assert _held(h, "Shop") == [(1, 1250)]
    assert _held(h, "Cafe") == [(0, 400)]
    assert _balance(h, card) == LOAD - 1650


def test_a_paid_pay_is_recovered_after_the_card_paid_elsewhere(
    world: dict[str, Any], cut: Callable[[bool], None]
) -> None:
    """The card keeps its last 8 payments: Shop's torn PAY, then 7 at the Cafe, and
    Shop still reads its own back by the ser it noted. One more and it is gone."""
    h, card = world["home"], world["card"]
    cut(True)  # the card paid Shop (ser 0); the answer was lost
    with pytest.raises(PaymentDeclined):
        h.pay(card, "Shop", 1250, PIN)
    for i in range(PAYMENT_LOG - 1):
        assert h.pay(card, "Cafe", 100, PIN).ser == 1 + i
    with pytest.raises(EarlierPaymentRecovered) as again:
        h.pay(card, "Shop", 1250, PIN)
    assert (again.value.payment.ser, again.value.payment.amount) == (0, 1250)
    assert _held(h, "Shop") == [(0, 1250)]
    with h.bank() as bank:
        receipt = h.deposit("Shop", bank)
        assert [(r["ser"], r["status"]) for r in receipt["results"]] == [(0, "accepted")]


def test_a_pay_torn_more_than_the_log_ago_cannot_be_read_back(
    world: dict[str, Any], cut: Callable[[bool], None]
) -> None:
    h, card = world["home"], world["card"]
    cut(True)
    with pytest.raises(PaymentDeclined):
        h.pay(card, "Shop", 1250, PIN)
    for _ in range(PAYMENT_LOG):
        h.pay(card, "Cafe", 100, PIN)
    assert h.pay(card, "Shop", 300, PIN).ser == PAYMENT_LOG + 1  # a new payment
    assert _held(h, "Shop") == [(PAYMENT_LOG + 1, 300)]
    with h.terminal("Shop") as (_, store):
        assert store.in_flight(card) is None


def test_a_card_of_the_one_payment_format_is_read_with_its_last_payment(
    world: dict[str, Any],
) -> None:
    """A card file written before the log existed has no ``earlier_payments``."""
    h, card = world["home"], world["card"]
    h.pay(card, "Cafe", 100, PIN)
    path = h.card(card).path
    state = json.loads(path.read_text())
    del state["earlier_payments"]
    path.write_text(json.dumps(state))
    loaded = h.card(card).load()
    assert (loaded.earlier_payments, payment_from_last(loaded.last_payment)[1].ser) == ((), 0)
    assert h.pay(card, "Cafe", 100, PIN).ser == 1
    assert len(h.card(card).load().earlier_payments) == 1


def test_a_refused_pay_is_not_left_in_flight(world: dict[str, Any]) -> None:
    h, card = world["home"], world["card"]
    with pytest.raises(PaymentDeclined) as refused:
        h.pay(card, "Shop", LOAD + 1, PIN)
    assert refused.value.code == "insufficient_balance"
    with h.terminal("Shop") as (_, store):
        assert store.in_flight(card) is None


def test_a_payment_recovered_after_a_renewal_keeps_the_certificate_it_was_made_under(
    world: dict[str, Any], cut: Callable[[bool], None]
) -> None:
    h, card = world["home"], world["card"]
    cut(True)
    with pytest.raises(PaymentDeclined):
        h.pay(card, "Shop", 1250, PIN)
    with h.bank() as bank:
        assert h.withdraw(card, bank, pin=PIN, amount=0, renew=True).renewed
    with pytest.raises(EarlierPaymentRecovered) as again:
        h.pay(card, "Shop", 1250, PIN)
    recovered = again.value.payment
    with h.card_client(card) as client:
        client.select()
        assert recovered.card_cert != client.cert()  # the card holds its new one
    with h.bank() as bank:
        receipt = h.deposit("Shop", bank)
        assert [(r["ser"], r["status"]) for r in receipt["results"]] == [(0, "accepted")]


def test_a_payment_torn_before_the_card_was_hot_listed_is_still_recovered(
    world: dict[str, Any], cut: Callable[[bool], None]
) -> None:
    """The card is reported stolen after a PAY whose answer was lost, and the terminal
    syncs its hot list. The card is refused from then on, but the payment it made
    before its listing is still read back (the bank honours it); it used to stay
    unread, the terminal refusing to read a hot-listed card at all."""
    h, card, clock = world["home"], world["card"], world["clock"]
    cut(True)
    with pytest.raises(PaymentDeclined):
        h.pay(card, "Shop", 1250, PIN)
    clock.now += 10
    with h.bank() as bank:
        bank.blacklist(card)
        assert h.sync_hotlist("Shop", bank) == 1
    clock.now += 10
    with pytest.raises(EarlierPaymentRecovered):
        h.pay(card, "Shop", 1250, PIN)
    assert _held(h, "Shop") == [(0, 1250)]
    with pytest.raises(PaymentDeclined) as listed:
        h.pay(card, "Shop", 1250, PIN)
    assert listed.value.code == "blacklisted"
    with h.bank() as bank:
        receipt = h.deposit("Shop", bank)
        assert [(r["ser"], r["status"]) for r in receipt["results"]] == [(0, "accepted")]
        assert bank.audit().ok


def test_a_store_of_the_first_schema_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "terminal.db"
    SqliteTerminalStore(path).close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE in_flight")
    db.execute("ALTER TABLE payments DROP COLUMN deposited_at")  # version 4's
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    store = SqliteTerminalStore(path)
    try:
        assert store.in_flight("4000000000000002") is None
        assert store._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        store.close()


def test_a_store_of_the_second_schema_keeps_its_pay_in_flight(tmp_path: Path) -> None:
    """Version 3 keeps the PAY's spec; a PAY noted by version 2 has none, and is
    recovered as before (by ser, txn, payee and CARD-CERT)."""
    path = tmp_path / "terminal.db"
    SqliteTerminalStore(path).close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE in_flight")
    db.execute("ALTER TABLE payments DROP COLUMN deposited_at")  # version 4's
    db.execute(
        "CREATE TABLE in_flight (card_number TEXT PRIMARY KEY, txn INTEGER NOT NULL,"
        " ser TEXT NOT NULL, card_cert BLOB NOT NULL)"
    )
    db.execute(
        "INSERT INTO in_flight VALUES ('4000000000000002', 7, '00000000000000000003', x'01')"
    )
    db.execute("PRAGMA user_version=2")
    db.commit()
    db.close()
    store = SqliteTerminalStore(path)
    try:
        assert store.in_flight("4000000000000002") == InFlight(
            "4000000000000002", 7, 3, b"\x01", b""
        )
        assert store._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        store.close()


def test_a_payment_read_back_must_be_the_spec_the_pay_sent(
    world: dict[str, Any], cut: Callable[[bool], None]
) -> None:
    """The card's payment of the noted ser and txn is taken only if it is the very
    spec the PAY sent: a card whose secret was extracted could otherwise hand back a
    smaller payment under the same ser and txn. (Here the note is altered instead.)"""
    h, card = world["home"], world["card"]
    cut(True)
    with pytest.raises(PaymentDeclined):
        h.pay(card, "Shop", 1250, PIN)
    with h.terminal("Shop") as (_, store):
        flight = store.in_flight(card)
        assert flight is not None
        assert flight.spec
        store._db.execute("UPDATE in_flight SET spec = x'00' WHERE card_number = ?", (card,))
    assert h.pay(card, "Shop", 300, PIN).ser == 1  # not taken for ours: a new payment
    assert _held(h, "Shop") == [(1, 300)]
