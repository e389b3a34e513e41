"""Clearing between banks under a clone, a replay and a second settlement run (each
case failed on the code before its fix): tests/scheme_world.py, every book audited."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from jointpay.crypto.certs import BankRole, issue_bank_cert
from jointpay.domain.records import Transfer
from jointpay.protocol.spec import PaymentSpec
from jointpay.service.clearing import PENDING_KEY, ClearingHouse
from jointpay.service.errors import BadInput, Refused
from jointpay.service.interbank import Candidate
from jointpay.service.policy import DAY
from jointpay.service.scheme import CLEAR_FORMAT, CLEAR_TAG, ClearingLink, Unreachable, sign_body
from jointpay.storage import open_store
from pg import fresh_database
from scheme_world import Scheme, scheme
from worlds import PIN


def _statuses(receipt: dict[str, Any]) -> list[tuple[object, object]]:
    return [(r["status"], r["reason"]) for r in receipt["results"]]


def _forget_taken(w: Scheme, merchant: str) -> None:
    """The terminal's record of its pending payments dropped (a second terminal of the
    same merchant, in effect): its next payment may reuse a (card, ser)."""
    with w.ha.terminal(merchant) as (_, store):
        store._db.execute("DELETE FROM payments")


def test_a_clones_two_spends_in_one_batch_are_answered_each_by_the_house(
    tmp_path: Path,
) -> None:
    """A clone of bank-b's card spends its ser 0 twice at bank-a's Shop, and both
    payments reach bank-a in one batch. bank-b takes the first and refuses the second
    (duplicate, double_spend evidence). The house read bank-b's answers by (card, ser),
    the second overwriting the first: it booked neither and told bank-a both were
    refused, while bank-b had debited the card and booked that it owed the house."""
    w = scheme(tmp_path)
    path = w.hb.card(w.card).path
    snapshot = path.read_bytes()
    w.ha.pay(w.card, "Shop", 1_000, PIN)
    first = w.ha.export_batch("Shop")
    _forget_taken(w, "Shop")
    path.write_bytes(snapshot)  # the clone: the card's state before it paid
    w.ha.pay(w.card, "Shop", 1_500, PIN)
    batch = w.ha.export_batch("Shop")
    batch["cards"][0]["payments"] = first["cards"][0]["payments"] + batch["cards"][0]["payments"]
    receipt = w.ha.deposit("Shop", w.a, batch)
    assert _statuses(receipt) == [("accepted", None), ("rejected", "duplicate")]
    assert w.a.account(w.a.merchant("Shop").account_id).balance == 1_000
    assert w.house.positions() == {"bank-a": 1_000, "bank-b": -1_000}
    assert [a.kind for a in w.b.alerts()] == ["double_spend"]
    assert w.audits_ok()


class _Paced:
    """The house's store, its settlement postings held at a barrier: two runs that
    both read the positions before either posts meet there (one that cannot get that
    far, waiting for the other's lock, breaks it after a few seconds)."""

    def __init__(self, store: Any, barrier: threading.Barrier) -> None:
        self._store, self._barrier = store, barrier

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    @contextmanager
    def transaction(self, **kw: Any) -> Iterator[Any]:
        with self._store.transaction(**kw) as tx:
            yield _PacedTx(tx, self._barrier)


class _PacedTx:
    def __init__(self, tx: Any, barrier: threading.Barrier) -> None:
        self._tx, self._barrier = tx, barrier

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tx, name)

    def post(self, transfer: Transfer) -> None:
        if transfer.kind == "settlement":
            with suppress(threading.BrokenBarrierError):
                self._barrier.wait(3)
        self._tx.post(transfer)


def test_two_settlement_runs_at_once_pay_each_position_once(tmp_path: Path) -> None:
    """`clearing settle` twice at once (a timer and an operator) on PostgreSQL: each run
    read the members' positions without a lock and posted their opposite, so both paid
    bank-a its 10.00 (and told it so twice) and left the house owing -10.00. The
    positions are now read under the accounts' locks: the second run finds them at 0."""
    with fresh_database() as url:
        w = scheme(tmp_path, house_url=url)
        w.ha.pay(w.card, "Shop", 1_000, PIN)
        assert _statuses(w.ha.deposit("Shop", w.a)) == [("accepted", None)]
        real = w.house.store
        w.house.store = _Paced(real, threading.Barrier(2))  # type: ignore[assignment]
        runs: list[dict[str, Any]] = []
        threads = [threading.Thread(target=lambda: runs.append(w.house.settle())) for _ in "ab"]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        w.house.store = real
        paid = sorted((r["paid"] for r in runs), key=len)
        assert paid == [{}, {"bank-a": 1_000, "bank-b": -1_000}]
        assert w.house.positions() == {"bank-a": 0, "bank-b": 0}
        assert w.a.interbank_position("ch-1")["balance"] == 0
        assert w.b.interbank_position("ch-1")["balance"] == 0
        assert w.audits_ok()
        real.close()


def _pay_in(w: Scheme, holder: str, amount: int) -> None:
    """Cash paid in at bank-b's counter to the holder's account (a teller's posting)."""
    from jointpay.domain.records import Leg
    from jointpay.service.bank import equity_account, holder_account

    with w.b.store.transaction() as tx:
        tx.post(
            Transfer(
                f"counter:{holder}",
                "cash_in",
                "EUR",
                (Leg(equity_account("EUR"), -amount), Leg(holder_account(holder), amount)),
                "paid in at the counter",
                w.clock(),
            )
        )


def test_a_clearing_message_replayed_later_moves_no_money(tmp_path: Path) -> None:
    """bank-a's message asking the house to clear a cheque of bank-b's card, and the
    house's message forwarding it, both say when they were signed. The cheque bounced;
    the holder's account was then funded. Either message played again an hour later
    (captured on the wire) was taken as new: bank-b paid the cheque out of the holder's
    account, the house booked it as owed to bank-a, and bank-a, which had asked for
    nothing, credited nobody (clearing audit off). Both hops now refuse a message that
    is not fresh (stale_message), and nothing moves."""
    w = scheme(tmp_path)
    w.b.open_account("cy", 500)
    cheque = w.hb.issue_card(
        w.b, holder="cy", pin=PIN, load=0, mode="cheque", limit=0, user_key="card"
    ).card_number
    w.ha.pay(cheque, "Shop", 1_000, PIN)
    to_house: list[dict[str, Any]] = []
    to_issuer: list[dict[str, Any]] = []
    clear, forward = w.house.clear, w.members["bank-b"].interbank_deposit

    def seen_clear(message: dict[str, Any]) -> dict[str, Any]:
        to_house.append(message)
        return clear(message)

    def seen_forward(message: dict[str, Any]) -> dict[str, Any]:
        to_issuer.append(message)
        return forward(message)

    w.house.clear = seen_clear  # type: ignore[method-assign]
    w.members["bank-b"].interbank_deposit = seen_forward  # type: ignore[method-assign]
    assert _statuses(w.ha.deposit("Shop", w.a)) == [("rejected", "insufficient_funds")]
    assert (len(to_house), len(to_issuer)) == (1, 1)
    _pay_in(w, "cy", 5_000)
    w.clock.now += 3_600
    holder = w.b.account("holder:cy").balance
    for replay in (lambda: clear(to_house[0]), lambda: forward(to_issuer[0])):
        with pytest.raises(Refused) as refused:
            replay()
        assert refused.value.code == "stale_message"
    assert w.b.account("holder:cy").balance == holder == 5_500
    assert w.house.positions() == {"bank-a": 0, "bank-b": 0}
    assert w.audits_ok()


def test_a_bank_does_not_clear_through_a_house_of_another_currency(tmp_path: Path) -> None:
    """bank-a keeps EUR; a house of the scheme keeps USD. bank-a took it as one of its
    houses, and the house booked bank-a's EUR cents as USD cents; its settlements, in
    USD, bank-a then refused for ever (malformed), while the house had posted its
    positions to zero. bank-a now refuses the house (currency_mismatch), and a house
    refuses a payment that is not in its currency."""
    w = scheme(tmp_path)
    usd = ClearingHouse.create(
        open_store(f"sqlite:///{tmp_path}/usd.db"), "ch-usd", "USD", clock=w.clock
    )
    cert = issue_bank_cert(
        w.root_key,
        bank_id="ch-usd",
        public_key=usd.verify_key.raw,
        role=BankRole.CLEARING,
        not_before=w.clock() - 3600,
        not_after=w.clock() + 365 * DAY,
    )
    usd.join("test-scheme", w.root_key.verify_key.raw, cert.encode())
    for bank in (w.a, w.b):
        membership = bank.interbank.membership
        assert membership is not None
        usd.add_member(membership.own_cert.encode().hex(), None)
    usd.connect = lambda bank_id, url: w.members[bank_id]  # type: ignore[method-assign,assignment,return-value]
    with pytest.raises(BadInput) as refused:
        w.a.interbank.add_clearing(usd, "ch-usd")  # type: ignore[arg-type]
    assert refused.value.code == "currency_mismatch"
    assert w.a.interbank.members_of("ch-usd") == []  # not one of bank-a's houses
    # banks that took it before (as they could) send it a payment: it is refused
    for bank in (w.a, w.b):
        m = bank.interbank.membership
        assert m is not None
        bank.interbank._save(replace(m, clearing=(*m.clearing, ClearingLink(cert, None))))
    w.ha.pay(w.card, "Shop", 1_000, PIN)
    batch = w.ha.export_batch("Shop")
    group, pay = batch["cards"][0], batch["cards"][0]["payments"][0]
    spec = bytes.fromhex(pay["spec"])
    candidate = Candidate(
        bytes.fromhex(group["cert"]),
        "bank-b",
        w.card,
        pay["ser"],
        spec,
        bytes.fromhex(pay["b"]),
        bytes.fromhex(pay["r"]),
        PaymentSpec.decode(spec).amount,
    )
    w.a.interbank.connect = lambda link: usd  # type: ignore[assignment,return-value]
    (answer,) = w.a.interbank._clear_at(
        ClearingLink(cert, None), batch["sid"], "ref-1", [candidate]
    )
    assert (answer.status, answer.reason) == ("rejected", "currency_mismatch")
    assert w.b.account(w.b.card(w.card).float_account).balance == 20_000
    assert usd.positions() == {"bank-a": 0, "bank-b": 0}


def test_a_foreign_payment_is_not_refused_for_good_while_the_house_is_down(
    tmp_path: Path,
) -> None:
    """bank-a knows bank-b's card (its CARD-CERT verified at an earlier deposit) and
    its one house is down when the merchant deposits again, its copy of the house's
    member list having expired. bank-a found no house to route the payment to and
    refused it `unknown_card`, which the terminal takes as final: the card had paid,
    the merchant never was. It is now `clearing_unavailable`: the terminal keeps it
    and it is credited at the next deposit once the house answers."""
    w = scheme(tmp_path)
    w.ha.pay(w.card, "Shop", 1_000, PIN)
    assert _statuses(w.ha.deposit("Shop", w.a)) == [("accepted", None)]
    w.ha.pay(w.card, "Shop", 700, PIN)
    connect = w.a.interbank.connect

    def down(link: object) -> Any:
        raise Unreachable("ch-1 is down")

    w.a.interbank.connect = down
    w.a.interbank._members.clear()  # the member list's DIRECTORY_TTL has passed
    assert _statuses(w.ha.deposit("Shop", w.a)) == [("rejected", "clearing_unavailable")]
    w.a.interbank.connect = connect  # the house is back
    assert _statuses(w.ha.deposit("Shop", w.a)) == [("accepted", None)]
    assert w.a.account(w.a.merchant("Shop").account_id).balance == 1_700
    assert w.audits_ok()


@pytest.mark.parametrize("house_db", ["sqlite", "postgresql"])
def test_a_payment_cleared_twice_at_once_is_booked_once_and_accepted_twice(
    tmp_path: Path, house_db: str
) -> None:
    """bank-a asks the house twice at once about the same payment (a deposit sent again
    while its first answer is late), a new payment riding with one of the two. bank-b
    books the payment once and answers `accepted` to both (the same acquirer's retry).
    The house wrote its record of the payment in both runs: the run that came second
    failed on the record's key and rolled back (a new payment with it, which bank-b
    had booked: a 500 to bank-a, and the house's books off bank-b's until a retry).
    That run now finds the payment recorded and books only what is new."""
    with ExitStack() as stack:
        url = stack.enter_context(fresh_database()) if house_db == "postgresql" else None
        _cleared_twice_at_once(scheme(tmp_path, house_url=url))


def _cleared_twice_at_once(w: Scheme) -> None:
    w.ha.pay(w.card, "Shop", 1_000, PIN)
    first = w.ha.export_batch("Shop")
    _forget_taken(w, "Shop")
    w.ha.pay(w.card, "Shop", 700, PIN)
    both = w.ha.export_batch("Shop")
    both["cards"][0]["payments"] = first["cards"][0]["payments"] + both["cards"][0]["payments"]

    def ask(batch: dict[str, Any], ref: str) -> dict[str, Any]:
        body = {
            "format": CLEAR_FORMAT,
            "acquirer": "bank-a",
            "clearing_house": "ch-1",
            "ref": ref,
            "time": w.clock(),
            "batch": batch,
        }
        return sign_body(w.a.signing_key, CLEAR_TAG, body)

    barrier = threading.Barrier(2)
    forward = w.members["bank-b"].interbank_deposit

    def slow(message: dict[str, Any]) -> dict[str, Any]:
        answer = forward(message)
        with suppress(threading.BrokenBarrierError):
            barrier.wait(5)  # both runs have bank-b's answer before either books
        return answer

    w.members["bank-b"].interbank_deposit = slow  # type: ignore[method-assign]
    answers: dict[str, Any] = {}

    def run(batch: dict[str, Any], ref: str) -> None:
        try:
            answers[ref] = [r["status"] for r in w.house.clear(ask(batch, ref))["results"]]
        except Exception as exc:
            answers[ref] = exc

    threads = [
        threading.Thread(target=run, args=(first, "one")),
        threading.Thread(target=run, args=(both, "two")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert answers == {"one": ["accepted"], "two": ["accepted", "accepted"]}
    assert w.house.positions() == {"bank-a": 1_700, "bank-b": -1_700}
    assert w.b.interbank_position("ch-1")["balance"] == 1_700


def test_an_online_check_with_the_house_down_is_unreachable_not_a_refusal(
    tmp_path: Path,
) -> None:
    """bank-a's terminal asks on-line about bank-b's card while bank-a's one house is
    down (its member list expired). bank-a answered `unknown_card`, a refusal: a payment
    above the floor limit was declined `online_declined`, and a sampled one below it
    too, where an unreachable bank lets it go on offline. It is now `bank_unreachable`,
    and the terminal goes by its floor limit."""
    from jointpay.protocol.terminal import Clearance, PaymentDeclined

    w = scheme(tmp_path)
    cleared: list[Clearance] = []
    w.ha.pay(w.card, "Shop", 1_000, PIN, bank=w.a, floor_limit=500, cleared=cleared.append)
    assert cleared.pop().status == "approved"  # through the house, from bank-b

    def down(link: object) -> Any:
        raise Unreachable("ch-1 is down")

    w.a.interbank.connect = down
    w.a.interbank._members.clear()  # the member list's DIRECTORY_TTL has passed
    with pytest.raises(PaymentDeclined) as declined:
        w.ha.pay(w.card, "Shop", 1_000, PIN, bank=w.a, floor_limit=500)
    assert declined.value.code == "bank_unreachable"
    taken = w.ha.pay(
        w.card, "Shop", 100, PIN, bank=w.a, floor_limit=500, online_sample=1.0,
        cleared=cleared.append,
    )  # fmt: skip
    assert taken.amount == 100
    assert cleared.pop().status == "unreachable"


@pytest.mark.parametrize("amount", [1 << 63, -(1 << 63), 10**30])
def test_a_settlement_of_an_amount_no_account_can_hold_is_malformed(
    tmp_path: Path, amount: int
) -> None:
    """A house's settlement whose amount no 64-bit balance can hold (a house's defect)
    is refused as malformed before anything is written; it was a driver's range error
    (HTTP 500)."""
    from jointpay.service.scheme import SETTLEMENT_FORMAT, SETTLEMENT_TAG

    w = scheme(tmp_path)
    message = sign_body(
        w.house._key,
        SETTLEMENT_TAG,
        {
            "format": SETTLEMENT_FORMAT,
            "clearing_house": w.house.ch_id,
            "bank_id": "bank-a",
            "settlement": "s-huge",
            "amount": amount,
            "currency": "EUR",
            "time": w.clock.now,
        },
    )
    with pytest.raises(BadInput) as refused:
        w.a.interbank.settlement(message)
    assert refused.value.code == "malformed"
    assert "out of range" in refused.value.message
    assert w.audits_ok()


def test_a_card_of_another_bank_seen_first_while_the_house_is_down_is_kept(
    tmp_path: Path,
) -> None:
    """bank-a has never seen bank-b's card when the merchant deposits its payment, and
    its one house is down (the member list expired): bank-a cannot verify the CARD-CERT,
    and rejected it `unknown_card`, final (the terminal kept the payment only because
    the rejection, of a certificate, names no card). It is now `clearing_unavailable`,
    which the terminal keeps by its reason, and the next deposit, the house back,
    credits it."""
    w = scheme(tmp_path)
    w.ha.pay(w.card, "Shop", 700, PIN)
    connect = w.a.interbank.connect

    def down(link: object) -> Any:
        raise Unreachable("ch-1 is down")

    w.a.interbank.connect = down
    w.a.interbank._members.clear()  # the member list's DIRECTORY_TTL has passed
    receipt = w.ha.deposit("Shop", w.a)
    assert _statuses(receipt) == [("rejected", "clearing_unavailable")]
    w.a.interbank.connect = connect  # the house is back
    assert _statuses(w.ha.deposit("Shop", w.a)) == [("accepted", None)]
    assert w.a.account(w.a.merchant("Shop").account_id).balance == 700
    assert w.audits_ok()


class _HeldStrikeOut:
    """The house's store, the run of this thread held once it has read the settlements
    in flight to strike out what it delivered (its second read of them: the first is
    the settlement's own), while ``meanwhile`` runs in another thread (for 3 s at
    most: with the fix it waits for this run's locks)."""

    def __init__(self, store: Any, meanwhile: Any) -> None:
        self._store, self._meanwhile = store, meanwhile
        self._thread, self._reads = threading.get_ident(), 0
        self.helper: threading.Thread | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    @contextmanager
    def transaction(self, **kw: Any) -> Iterator[Any]:
        with self._store.transaction(**kw) as tx:
            yield _HeldTx(tx, self)


class _HeldTx:
    def __init__(self, tx: Any, held: _HeldStrikeOut) -> None:
        self._tx, self._held = tx, held

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tx, name)

    def config_get(self, key: str) -> str | None:
        value = self._tx.config_get(key)
        held = self._held
        if key == PENDING_KEY and threading.get_ident() == held._thread:
            held._reads += 1
            if held._reads == 2:
                held.helper = threading.Thread(target=held._meanwhile)
                held.helper.start()
                held.helper.join(3)
        return value


def test_a_settlement_made_while_another_run_strikes_out_its_own_stays_in_flight(
    tmp_path: Path,
) -> None:
    """Two `clearing settle` runs overlap on PostgreSQL: the first has delivered its
    settlements and read the list in flight to strike them out, when a second run
    posts a new settlement and cannot deliver it (the members are down). The first run
    then wrote back the list as it had read it, less its own: the second run's
    settlement was gone from the list, never delivered, and the members' books never
    mirrored the house's again. The strike-out now reads the list under the position
    accounts' locks, as a settlement run does."""
    with fresh_database() as url:
        w = scheme(tmp_path, house_url=url)
        w.ha.pay(w.card, "Shop", 1_000, PIN)
        assert _statuses(w.ha.deposit("Shop", w.a)) == [("accepted", None)]
        connect = w.house.connect
        second: dict[str, Any] = {}

        def down(bank_id: str, url: str | None) -> Any:
            raise Unreachable(f"{bank_id} is down")

        def meanwhile() -> None:  # another payment, and a run that cannot deliver
            w.ha.pay(w.card, "Shop", 300, PIN)
            assert _statuses(w.ha.deposit("Shop", w.a)) == [("accepted", None)]
            w.house.connect = down  # type: ignore[assignment]
            second.update(w.house.settle())

        real = w.house.store
        held = _HeldStrikeOut(real, meanwhile)
        w.house.store = held  # type: ignore[assignment]
        first = w.house.settle()
        assert held.helper is not None
        held.helper.join(30)
        w.house.store = real
        assert first["paid"] == {"bank-a": 1_000, "bank-b": -1_000}
        assert first["delivered"] == 2
        assert second["paid"] == {"bank-a": 300, "bank-b": -300}
        assert second["undelivered"] == ["bank-a", "bank-b"]
        w.house.connect = connect  # type: ignore[method-assign]
        again = w.house.settle()  # the members are back: the second run's is delivered
        assert (again["paid"], again["delivered"], again["undelivered"]) == ({}, 2, [])
        assert w.a.interbank_position("ch-1")["balance"] == 0
        assert w.b.interbank_position("ch-1")["balance"] == 0
        assert w.audits_ok()
        real.close()
