"""Payments between banks, in one process (tests/scheme_world.py): each hop can be
reached into, and the books of the three parties are audited after each case."""

from __future__ import annotations

import copy
import threading
from pathlib import Path

import pytest

from jointpay.service.policy import DAY, Policy
from jointpay.service.scheme import Unreachable
from scheme_world import Scheme, scheme
from worlds import PIN


def test_a_foreign_clones_second_spend_reaches_its_issuer(tmp_path: Path) -> None:
    """A clone of bank-b's card spends its ser 0 again at another merchant of bank-a.
    bank-a has that (card, ser) booked under another spec: it still sends it to be
    cleared, and bank-b refuses it (duplicate), keeps both specs as double_spend
    evidence and hot-lists the card, as it does for a clone at its own merchants. It
    used to be refused at bank-a, out of the issuer's sight."""
    w: Scheme = scheme(tmp_path)
    w.ha.open_merchant(w.a, "Cafe")
    w.ha.sync_hotlist("Cafe", w.a)
    path = w.hb.card(w.card).path
    snapshot = path.read_bytes()
    first = w.ha.pay(w.card, "Shop", 1_000, PIN)
    path.write_bytes(snapshot)  # the clone: the card's state before it paid
    second = w.ha.pay(w.card, "Cafe", 1_500, PIN)
    assert first.ser == second.ser
    assert first.spec != second.spec
    batch = w.ha.export_batch("Shop")
    shop = w.ha.deposit("Shop", w.a, batch)
    cafe = w.ha.deposit("Cafe", w.a)
    assert [(r["status"], r["reason"]) for r in shop["results"]] == [("accepted", None)]
    assert [(r["status"], r["reason"]) for r in cafe["results"]] == [("rejected", "duplicate")]
    assert [a.kind for a in w.b.alerts()] == ["double_spend"]
    assert w.b.card(w.card).status.value == "blacklisted"
    # the same payment deposited again is refused at bank-a itself, and raises nothing
    again = w.ha.deposit("Shop", w.a, batch)
    assert [(r["status"], r["reason"]) for r in again["results"]] == [("rejected", "duplicate")]
    assert [a.kind for a in w.b.alerts()] == ["double_spend"]
    assert w.audits_ok()


def _statuses(receipt: dict[str, object]) -> list[tuple[object, object]]:
    return [(r["status"], r["reason"]) for r in receipt["results"]]  # type: ignore[attr-defined,index]


def test_a_deposit_through_the_house_is_judged_by_the_merchants_bank_before_it_is_cleared(
    tmp_path: Path,
) -> None:
    """bank-a keeps payments 30 days, bank-b 90. A 40-day-old payment deposited through
    the house is stale at bank-a: it must never reach bank-b. The house used to clear
    it first: bank-b debited the card, the house owed bank-a, and bank-a refused it."""
    w = scheme(tmp_path, policy_a=Policy(deposit_window=30 * DAY))
    w.ha.pay(w.card, "Shop", 1_000, PIN)
    float_before = w.b.account(w.b.card(w.card).float_account).balance
    w.clock.now += 40 * DAY
    receipt = w.ha.deposit("Shop", w.via_house)
    assert _statuses(receipt) == [("rejected", "stale")]
    assert w.b.account(w.b.card(w.card).float_account).balance == float_before
    assert w.house.positions() == {"bank-a": 0, "bank-b": 0}
    assert w.audits_ok()


def test_a_relayed_batch_carrying_a_payment_twice_credits_it_once(tmp_path: Path) -> None:
    """A hand-merged batch with one foreign payment twice: the first is credited, the
    copy refused, through the house as directly (the house's answers for the two used
    to be keyed by (card, ser), the second overwriting the first: both refused at
    bank-a, while bank-b and the house had booked the first)."""
    w = scheme(tmp_path)
    w.ha.pay(w.card, "Shop", 1_000, PIN)
    batch = w.ha.export_batch("Shop")
    payments = batch["cards"][0]["payments"]
    payments.append(copy.deepcopy(payments[0]))
    receipt = w.ha.deposit("Shop", w.via_house, batch)
    assert _statuses(receipt) == [("accepted", None), ("rejected", "duplicate")]
    assert w.a.account(w.a.merchant("Shop").account_id).balance == 1_000
    assert w.house.positions() == {"bank-a": 1_000, "bank-b": -1_000}
    assert w.audits_ok()


def test_two_settlement_runs_at_once_lose_no_settlement(tmp_path: Path) -> None:
    """Run 1 posts settlement S1 and hangs delivering it to bank-a (down); run 2 posts
    S2 and fails to deliver either. Run 1 used to write back its own leftovers ([S1])
    over the list run 2 had stored ([S1, S2]): S2 was never delivered, and bank-a's
    books stayed off the house's. Each run now strikes out only what it delivered."""
    w = scheme(tmp_path)
    w.ha.pay(w.card, "Shop", 1_000, PIN)
    w.ha.deposit("Shop", w.a)
    members = dict(w.members)
    hanging, release = threading.Event(), threading.Event()
    calls: list[int] = []

    class Down:
        def interbank_settlement(self, message: object) -> dict[str, object]:
            calls.append(1)
            if len(calls) == 1:  # run 1: a slow time-out...
                hanging.set()
                release.wait(10)
            raise Unreachable("bank-a is down")  # ...then a failure, as for run 2

    w.house.connect = lambda bank_id, url: (  # type: ignore[method-assign]
        Down() if bank_id == "bank-a" else members[bank_id]
    )
    runs: dict[int, dict[str, object]] = {}
    first = threading.Thread(target=lambda: runs.__setitem__(1, w.house.settle()))
    first.start()
    assert hanging.wait(10)
    w.ha.pay(w.card, "Shop", 700, PIN)  # more clearing meanwhile
    w.ha.deposit("Shop", w.a)
    runs[2] = w.house.settle()
    release.set()
    first.join(10)
    assert runs[1]["undelivered"] == runs[2]["undelivered"] == ["bank-a"]
    w.house.connect = lambda bank_id, url: members[bank_id]  # type: ignore[method-assign]
    retry = w.house.settle()  # bank-a is back
    assert (retry["delivered"], retry["undelivered"]) == (2, [])
    assert w.a.interbank_position("ch-1")["balance"] == 0
    assert w.audits_ok()


def test_other_banks_cards_are_cleared_before_the_deposit_holds_the_database(
    tmp_path: Path,
) -> None:
    """The house answers over the network. While it did, the deposit's transaction
    held the merchant's and the cards' locks, and on SQLite the whole database: every
    other request of the bank waited (a hung house: 500s after the 30 s busy time-out).
    Now the bank is free while the house works."""
    w = scheme(tmp_path)
    w.ha.pay(w.card, "Shop", 1_000, PIN)
    real = w.house.clear
    during: dict[str, object] = {}

    def clear(message: object) -> dict[str, object]:
        def write() -> None:
            during["account"] = w.a.open_account("zed", 100).id

        other = threading.Thread(target=write)
        other.start()
        other.join(5)  # a write of the bank's own, while the house works
        during["free"] = not other.is_alive()
        return real(message)

    w.house.clear = clear  # type: ignore[method-assign]
    receipt = w.ha.deposit("Shop", w.a)
    assert _statuses(receipt) == [("accepted", None)]
    assert during == {"free": True, "account": "holder:zed"}
    assert w.audits_ok()


def test_a_session_the_bank_refuses_clears_nothing(tmp_path: Path) -> None:
    """The other banks' cards are cleared only for a session the bank takes: one
    under a merchant key it does not know, or a sequence number used before, never
    reaches the house."""
    from jointpay.crypto.certs import SigningKey
    from jointpay.protocol.deposit import make_deposit
    from jointpay.service.errors import Refused

    w = scheme(tmp_path)
    w.ha.pay(w.card, "Shop", 1_000, PIN)
    batch = w.ha.export_batch("Shop")
    calls: list[object] = []
    real = w.house.clear

    def clear(message: object) -> dict[str, object]:
        calls.append(message)
        return real(message)

    w.house.clear = clear  # type: ignore[method-assign]
    sid = w.a.merchant("Shop").sid
    forged = make_deposit(SigningKey.generate(sid), "bank-a", sid, 1, w.clock(), batch)
    with pytest.raises(Refused) as refused:
        w.a.deposit(forged)
    assert refused.value.code == "bad_signature"
    assert calls == []
    assert _statuses(w.ha.deposit("Shop", w.a, batch)) == [("accepted", None)]
    assert len(calls) == 1
    assert w.audits_ok()


def _house_question(w: Scheme, **changes: object) -> dict[str, object]:
    """bank-a's question to the house about bank-b's card, signed by bank-a."""
    from jointpay.service.scheme import CLEAR_TAG, sign_body

    body: dict[str, object] = {
        "format": "jointpay-online/1",
        "acquirer": "bank-a",
        "clearing_house": "ch-1",
        "issuer": "bank-b",
        "merchant": "SP-test",
        "card": w.card,
        "amount": 1_000,
        "time": w.clock(),
    }
    return sign_body(w.a.signing_key, CLEAR_TAG, {**body, **changes})


def test_an_online_check_through_the_house_names_its_merchant_and_is_fresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """bank-a's merchant asks about bank-b's card: the house forwards the question with
    the merchant's S_id, and bank-b logs whom it answered (yes-or-no answers bracket a
    balance; the log is where such questioning shows). The hops refuse a question that
    is stale, addressed to another house, or of an amount out of range; before, a
    question captured once was answered for ever, at any amount."""
    import logging

    from jointpay.service.errors import BadInput, Refused

    w = scheme(tmp_path)
    tf = w.ha.terminal_file("Shop")
    with caplog.at_level(logging.INFO, logger="jointpay.online"):
        answer = w.ha.online_check("Shop", w.card, 20_000, w.a, issuer="bank-b")
    assert (answer["approved"], answer["reason"]) == (True, None)
    assert (
        [r.getMessage() for r in caplog.records]
        == [  # bank-b's, naming the asker
            f"online check by bank-a/{tf.sid}: card ...{w.card[-4:]}, 20000: approved"
        ]
    )
    fresh = w.house.online_check(_house_question(w))
    assert fresh["approved"] is True
    refusals = {
        "stale": ({"time": w.clock() - 3_600}, Refused, "stale_message"),
        "other house": ({"clearing_house": "ch-9"}, BadInput, "malformed"),
        "negative": ({"amount": -5}, BadInput, "malformed"),
        "too large": ({"amount": 1 << 80}, BadInput, "malformed"),
        "no merchant": ({"merchant": 7}, BadInput, "malformed"),
    }
    for name, (change, kind, code) in refusals.items():
        with pytest.raises(kind) as refused:
            w.house.online_check(_house_question(w, **change))
        assert refused.value.code == code, name


def test_the_issuer_refuses_a_house_question_that_is_stale_or_for_another_bank(
    tmp_path: Path,
) -> None:
    from jointpay.service.errors import BadInput, Refused
    from jointpay.service.scheme import INTERBANK_TAG, sign_body

    w = scheme(tmp_path)

    def ask(**changes: object) -> dict[str, object]:
        body: dict[str, object] = {
            "format": "jointpay-online/1",
            "clearing_house": "ch-1",
            "acquirer": "bank-a",
            "issuer": "bank-b",
            "merchant": "SP-test",
            "card": w.card,
            "amount": 1_000,
            "time": w.clock(),
        }
        return sign_body(w.house._key, INTERBANK_TAG, {**body, **changes})

    assert w.b.interbank_online_check(ask())["approved"] is True
    with pytest.raises(Refused) as stale:
        w.b.interbank_online_check(ask(time=w.clock() - 3_600))
    assert stale.value.code == "stale_message"
    for change in ({"issuer": "bank-a"}, {"amount": 0}, {"amount": 1 << 63}):
        with pytest.raises(BadInput) as bad:
            w.b.interbank_online_check(ask(**change))
        assert bad.value.code == "malformed", change


def test_a_pay_torn_before_the_terminal_registered_with_the_cards_bank_is_recovered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bank-a's Shop takes a PAY from bank-b's card as a merchant of the scheme; its
    answer is lost; the Shop then opens an account at bank-b (`merchant add-bank`).
    The card's next presentation must read the PAY back as it was made, with bank-a's
    MERCHANT-CERT: with the one the card would pay today (bank-b's) the card said it
    kept no such payment, and the terminal took a second payment."""
    from jointpay.adapters import card_file
    from jointpay.protocol.card import INS_PAY
    from jointpay.protocol.terminal import EarlierPaymentRecovered, PaymentDeclined

    w = scheme(tmp_path)
    real = card_file.InProcessChannel.transmit
    cut = {"armed": True}

    def transmit(self: card_file.InProcessChannel, apdu: bytes) -> bytes:
        if apdu[1] != INS_PAY or not cut.pop("armed", False):
            return real(self, apdu)
        real(self, apdu)  # the card pays; its answer is lost
        raise ConnectionError("the card was pulled out")

    monkeypatch.setattr(card_file.InProcessChannel, "transmit", transmit)
    with pytest.raises(PaymentDeclined):
        w.ha.pay(w.card, "Shop", 1_250, PIN)
    key = bytes.fromhex(w.ha.merchant_key("Shop")["public_key"])
    _, cert = w.b.open_merchant("Shop", key)
    w.ha.add_bank("Shop", w.b, cert, f"sqlite:///{w.root}/b.db")
    with pytest.raises(EarlierPaymentRecovered) as again:
        w.ha.pay(w.card, "Shop", 1_250, PIN)
    assert (again.value.payment.ser, again.value.payment.amount) == (0, 1_250)
    assert w.hb.card(w.card).load().balance == 20_000 - 1_250  # paid once
