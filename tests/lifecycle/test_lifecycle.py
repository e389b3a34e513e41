"""The whole cash-card lifecycle through the Python API, on every storage backend.

memory, SQLite and PostgreSQL (a fresh schema per test) run the same scenarios: issue,
pay, deposit, double deposit, withdrawal with lost acknowledgement, breach evidence,
refusals that change nothing, and concurrent deposits racing for the same payments.
"""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from jointpay.crypto.certs import SigningKey
from jointpay.home import Home
from jointpay.protocol.deposit import make_deposit
from jointpay.protocol.messages import AuthKind
from jointpay.protocol.terminal import PaymentDeclined
from jointpay.service.errors import BadInput, Refused
from jointpay.service.policy import DAY
from jointpay.storage.base import Conflict
from worlds import PIN, Clock


def balances(h: Home) -> dict[str, int]:
    with h.bank() as bank, bank.store.transaction() as tx:
        return {a.id: a.balance for a in tx.list_accounts()}


def test_lifecycle(world: dict[str, Any]) -> None:
    h, card = world["home"], world["alice"]
    paid = [h.pay(card, "Shop", amount, PIN) for amount in (1250, 300, 4000)]
    assert [p.ser for p in paid] == [0, 1, 2]
    with h.bank() as bank:
        batch = h.export_batch("Shop")
        receipt = h.deposit("Shop", bank, batch)
        assert (receipt["accepted"], receipt["rejected"]) == (3, 0)
        assert bank.account(bank.merchant("Shop").account_id).balance == 5550
        again = h.deposit("Shop", bank, batch)
        assert again["accepted"] == 0
        assert {r["reason"] for r in again["results"]} == {"duplicate"}
        assert bank.account(bank.merchant("Shop").account_id).balance == 5550
        out = h.withdraw(card, bank, pin=PIN, amount=1000, renew=True)
        assert out.balance == 20_000 - 5550 + 1000
        assert out.renewed
        assert out.seq == 2
        report = bank.audit()
        assert report.ok, report.violations
        assert bank.account(f"card:{card}").balance == 20_000 - 5550 + 1000


def test_a_card_whose_highest_ser_was_lowered_is_audited_and_never_credits_twice(
    world: dict[str, Any],
) -> None:
    """A deposit looks for earlier records of a payment only at or below the card's
    highest deposited ser. Were that figure ever lowered (a bad restore, a hand edit),
    the audit names it, and the payments table's key still refuses the second credit:
    the deposit fails whole and moves nothing."""
    h, card = world["home"], world["alice"]
    for amount in (500, 700):
        h.pay(card, "Shop", amount, PIN)
    with h.bank() as bank:
        batch = h.export_batch("Shop")
        assert h.deposit("Shop", bank, batch)["accepted"] == 2
        with bank.store.transaction() as tx:
            tx.update_card(replace(tx.lock_card(card), highest_ser=0))
        report = bank.audit()
        assert not report.ok
        assert report.violations == [f"card {card}: payment ser 1 above its highest recorded ser 0"]
        before = balances(h)
        with pytest.raises(Conflict):
            h.deposit("Shop", bank, batch)
        assert balances(h) == before


def test_clone_is_caught_and_hot_listed(world: dict[str, Any]) -> None:
    h, card = world["home"], world["alice"]
    path = h.card(card).path
    snapshot = path.read_bytes()
    first = h.pay(card, "Shop", 700, PIN)
    path.write_bytes(snapshot)  # roll the card back...
    second = h.pay(card, "Cafe", 900, PIN)  # ...and spend the same ser again
    assert first.ser == second.ser
    with h.bank() as bank:
        assert h.deposit("Shop", bank)["accepted"] == 1
        r = h.deposit("Cafe", bank)
        assert r["results"][0]["reason"] == "duplicate"
        alerts = bank.alerts()
        assert [a.kind for a in alerts] == ["double_spend"]
        evidence = json.loads(alerts[0].evidence)
        assert evidence["first_spec"] == first.spec.hex()
        assert evidence["second_spec"] == second.spec.hex()
        assert bank.card(card).status.value == "blacklisted"
        assert [e.card_number for e in bank.hotlist(0)] == [card]
        assert h.sync_hotlist("Shop", bank) == 1
        assert bank.audit().ok
    world["clock"].now += 10
    with pytest.raises(PaymentDeclined) as exc:
        h.pay(card, "Shop", 100, PIN)
    assert exc.value.code == "blacklisted"


def test_a_breach_keeps_an_already_listed_cards_listing_time(world: dict[str, Any]) -> None:
    """A clone's double spend found in a batch hot-lists its card; a card listed
    earlier keeps its listing time, so the batch's later payments made after it are
    refused (they were once credited: the breach moved the time to the deposit's)."""
    h, clock, card = world["home"], world["clock"], world["alice"]
    path = h.card(card).path
    snapshot = path.read_bytes()
    h.pay(card, "Cafe", 700, PIN)
    with h.bank() as bank:
        assert h.deposit("Cafe", bank)["accepted"] == 1
    path.write_bytes(snapshot)  # the clone spends ser 0 again...
    h.pay(card, "Shop", 900, PIN)
    clock.now += 10
    with h.bank() as bank:
        bank.blacklist(card)  # ...the card is reported stolen...
        listed = bank.card(card).blacklisted_at
    clock.now += 10
    h.pay(card, "Shop", 50, PIN)  # ...and pays once more, after the listing
    clock.now += 10
    with h.bank() as bank:
        receipt = h.deposit("Shop", bank)
        assert [(r["ser"], r["reason"]) for r in receipt["results"]] == [
            (0, "duplicate"),
            (1, "blacklisted"),
        ]
        assert receipt["accepted"] == 0
        assert bank.card(card).blacklisted_at == listed
        assert bank.audit().ok


def test_a_withdrawal_racing_a_deposit_cannot_refuse_the_deposits_cheques(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cheque is paid from the holder's account, which another card of the holder
    can draw on. A withdrawal that lowered it between the deposit's check and its
    posting made the posting refuse the whole deposit, every merchant's payment in it:
    the deposit now holds the account from its check to its commit."""
    from jointpay.service import deposit as deposit_module

    h, alice = world["home"], world["alice"]
    with h.bank() as bank:
        cheque = h.issue_card(
            bank, holder="bob", pin=PIN, load=0, mode="cheque", limit=0, user_key="card"
        ).card_number
        cash = h.issue_card(
            bank, holder="bob", pin=PIN, load=0, mode="cash", limit=0, user_key="card"
        ).card_number
    h.pay(alice, "Shop", 1_000, PIN)
    h.pay(cheque, "Shop", 6_000, PIN)  # bob's account holds 10,000
    checked, release = threading.Event(), threading.Event()
    book = deposit_module.DepositRun._book

    def paused_book(run: deposit_module.DepositRun) -> None:
        checked.set()  # every payment checked, nothing posted yet
        release.wait(30)
        book(run)

    monkeypatch.setattr(deposit_module.DepositRun, "_book", paused_book)
    outcome: dict[str, Any] = {}
    with h.bank() as bank:

        def deposit() -> None:
            outcome["receipt"] = h.deposit("Shop", bank)

        def withdraw() -> None:
            try:
                h.withdraw(cash, bank, pin=PIN, amount=8_000, renew=False)
            except Refused as exc:
                outcome["withdrawal"] = exc.code
            else:
                outcome["withdrawal"] = "done"

        first = threading.Thread(target=deposit)
        first.start()
        assert checked.wait(30)
        second = threading.Thread(target=withdraw)
        second.start()
        second.join(0.5)  # it waits for the deposit's hold on bob's account...
        release.set()
        first.join(30)
        second.join(30)
        statuses = {r["card"]: r["status"] for r in outcome["receipt"]["results"]}
        assert statuses == {alice: "accepted", cheque: "accepted"}
        assert outcome["withdrawal"] == "insufficient_funds"  # ...then finds 4,000 left
        assert bank.account("holder:bob").balance == 4_000
        assert bank.audit().ok


@pytest.mark.parametrize("other", ["withdrawal with a fee", "repayment from the account"])
def test_a_deposit_with_a_cheque_and_the_holders_other_business_do_not_deadlock(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch, other: str
) -> None:
    """The deposit holds the cheque holder's account from its checks to its commit.
    Its posting then locked the accounts sorting before it (the bank's income, the
    holder's credit card's float) while a withdrawal with a fee, or a repayment from
    the holder's account, held those and waited for the holder's: PostgreSQL killed
    one of the two as a deadlock. The deposit now locks all of them at once, sorted."""
    from jointpay.service import deposit as deposit_module

    h = world["home"]
    with h.bank() as bank:
        cheque = h.issue_card(
            bank, holder="bob", pin=PIN, load=0, mode="cheque", limit=0, user_key="card"
        ).card_number
        if other == "withdrawal with a fee":
            cash = h.issue_card(
                bank, holder="bob", pin=PIN, load=1_000, mode="cash", limit=0, user_key="card"
            ).card_number
            bank.set_policy(payment_fee=5, withdrawal_fee=25)
        else:
            credit = h.issue_card(
                bank, holder="bob", pin=PIN, load=0, mode="credit", limit=5_000, user_key="card"
            ).card_number
    h.pay(cheque, "Shop", 300, PIN)
    if other != "withdrawal with a fee":
        h.pay(credit, "Shop", 400, PIN)
    checked, release = threading.Event(), threading.Event()
    book = deposit_module.DepositRun._book

    def paused_book(run: deposit_module.DepositRun) -> None:
        checked.set()  # the cheque holder's account is held; nothing posted yet
        release.wait(30)
        book(run)

    monkeypatch.setattr(deposit_module.DepositRun, "_book", paused_book)
    outcome: dict[str, Any] = {}
    with h.bank() as bank:

        def deposit() -> None:
            try:
                outcome["deposit"] = [r["status"] for r in h.deposit("Shop", bank)["results"]]
            except Exception as exc:
                outcome["deposit"] = repr(exc)

        def business() -> None:
            try:
                if other == "withdrawal with a fee":
                    h.withdraw(cash, bank, pin=PIN, amount=100, renew=False)
                else:
                    bank.repay("bob", 100, ref="r-1", from_account=True)
                outcome["other"] = "done"
            except Exception as exc:
                outcome["other"] = repr(exc)

        first = threading.Thread(target=deposit)
        first.start()
        assert checked.wait(30)
        second = threading.Thread(target=business)
        second.start()
        second.join(0.5)  # it takes what it can and waits for the rest
        release.set()
        first.join(30)
        second.join(30)
        assert outcome == {"deposit": ["accepted"] * (2 if other[0] == "r" else 1), "other": "done"}
        assert bank.audit().ok


def test_the_audit_reads_one_moment_of_the_books_while_the_bank_works(
    world: dict[str, Any],
) -> None:
    """Each of the audit's queries saw its own moment on PostgreSQL (READ COMMITTED):
    with accounts being opened meanwhile, a sound bank failed 23 of 200 audits (an
    account's balance against its entries, equity against its postings)."""
    h = world["home"]
    stop = threading.Event()

    def open_accounts() -> None:
        with h.bank() as bank:
            i = 0
            while not stop.is_set():
                bank.open_account(f"h{i}", 100)
                i += 1

    writer = threading.Thread(target=open_accounts)
    writer.start()
    try:
        with h.bank() as bank:
            failed = [r.violations for r in (bank.audit() for _ in range(60)) if not r.ok]
    finally:
        stop.set()
        writer.join(30)
    assert failed == []


def test_a_damaged_batch_file_does_not_settle_the_terminals_sound_copy(
    world: dict[str, Any],
) -> None:
    """A batch file whose copy of a payment was damaged gets that payment rejected, as
    it should. The terminal used to mark its own sound copy rejected with it (the
    receipt names (card, ser) only): the merchant could never deposit it again."""
    h, card = world["home"], world["alice"]
    h.pay(card, "Shop", 100, PIN)
    h.pay(card, "Shop", 200, PIN)
    batch = h.export_batch("Shop")
    damaged = json.loads(json.dumps(batch))
    r = damaged["cards"][0]["payments"][1]["r"]
    damaged["cards"][0]["payments"][1]["r"] = r[:-2] + ("00" if r[-2:] != "00" else "01")
    damaged["cards"][0]["payments"][0]["spec"] = batch["cards"][0]["payments"][0]["spec"].upper()
    damaged["cards"][0]["payments"].append({"ser": [1], "spec": "00", "b": "00", "r": "00"})
    with h.bank() as bank:
        receipt = h.deposit("Shop", bank, damaged)
        assert [(r["ser"], r["status"], r["reason"]) for r in receipt["results"]] == [
            (0, "accepted", None),
            (1, "rejected", "bad_signature"),
            (None, "rejected", "malformed"),
        ]
        assert [p["ser"] for g in h.export_batch("Shop")["cards"] for p in g["payments"]] == [1]
        again = h.deposit("Shop", bank)  # the terminal's own copy of ser 1
        assert [(r["ser"], r["status"]) for r in again["results"]] == [(1, "accepted")]
        assert bank.account(bank.merchant("Shop").account_id).balance == 300
        assert bank.audit().ok
    assert h.export_batch("Shop")["cards"] == []


def test_a_withdrawal_of_zero_without_renewal_is_refused_before_the_card_signs(
    world: dict[str, Any],
) -> None:
    """It was refused by the bank, after the card had signed it: the card's seq and a
    withdrawal record at the bank were spent on a request that could never pass."""
    h, card = world["home"], world["alice"]
    seq = h.card(card).load().seq
    with h.bank() as bank:
        with pytest.raises(BadInput) as zero:
            h.withdraw(card, bank, pin=PIN, amount=0, renew=False)
        assert zero.value.code == "bad_amount"
        assert (h.card(card).load().seq, bank.card(card).seq) == (seq, seq)
        assert h.withdraw(card, bank, pin=PIN, amount=0, renew=True).seq == seq + 1


def test_the_receipt_says_what_the_merchant_is_credited_after_fees(
    world: dict[str, Any],
) -> None:
    h, card = world["home"], world["alice"]
    with h.bank() as bank:
        bank.set_policy(payment_fee=5)
    h.pay(card, "Shop", 100, PIN)
    h.pay(card, "Shop", 200, PIN)
    with h.bank() as bank:
        receipt = h.deposit("Shop", bank)
        assert (receipt["credited"], receipt["fees"], receipt["net"]) == ("3.00", "0.10", "2.90")
        assert bank.account(bank.merchant("Shop").account_id).balance == 290


def test_refusals_change_nothing(world: dict[str, Any], tmp_path: Path) -> None:
    h, card = world["home"], world["alice"]
    h.pay(card, "Shop", 500, PIN)
    before = balances(h)
    with h.bank() as bank:
        with pytest.raises(Refused) as r1:
            h.issue_card(
                bank, holder="bob", pin=PIN, load=999_999, mode="cash", limit=0, user_key="card"
            )
        assert r1.value.code == "insufficient_funds"
        with pytest.raises(Refused) as r2:
            h.issue_card(
                bank, holder="nobody", pin=PIN, load=0, mode="cash", limit=0, user_key="card"
            )
        assert r2.value.code == "unknown_holder"
        assert len(list((tmp_path / "cards").glob("*.card"))) == 1
        batch = h.export_batch("Shop")
        with h.terminal("Shop") as (tf, _):
            key = SigningKey.from_private_bytes(tf.sid, tf.signing_key)
            good = make_deposit(key, tf.bank_id, tf.sid, 7, bank.clock(), batch)
            forged = make_deposit(
                SigningKey.generate(tf.sid), tf.bank_id, tf.sid, 8, bank.clock(), batch
            )
            stale = make_deposit(key, tf.bank_id, tf.sid, 9, bank.clock() - 3 * DAY, batch)
            other_bank = make_deposit(
                key, "other-bank", tf.sid, 10, bank.clock(), {**batch, "bank_id": "other-bank"}
            )
        for message, code in (
            (forged, "bad_signature"),
            (stale, "stale_message"),
            (other_bank, "wrong_bank"),
        ):
            with pytest.raises(Refused) as r:
                bank.deposit(message)
            assert r.value.code == code
        with pytest.raises(BadInput):
            bank.deposit({"format": "nonsense"})
        assert balances(h) == before
        first = bank.deposit(good)
        assert bank.deposit(good) == first  # the same session again: the same receipt
        replay = make_deposit(key, tf.bank_id, tf.sid, 7, bank.clock(), {**batch, "cards": []})
        with pytest.raises(Refused) as r3:
            bank.deposit(replay)
        assert r3.value.code == "replay"
        assert bank.audit().ok


def test_deposit_reason_codes(world: dict[str, Any]) -> None:
    h, card, clock = world["home"], world["alice"], world["clock"]
    for amount in (100, 200, 300, 400):
        h.pay(card, "Shop", amount, PIN)
    batch = h.export_batch("Shop")
    payments = batch["cards"][0]["payments"]
    r = bytearray.fromhex(payments[0]["r"])
    r[-1] ^= 1
    payments[0]["r"] = r.hex()
    payments[1]["b"] = payments[1]["b"][:-2]  # 31 bytes
    payments[2]["spec"] = "00"
    with h.bank() as bank:
        receipt = h.deposit("Cafe", bank, {**batch, "sid": h.terminal_file("Cafe").sid})
        reasons = [x["reason"] for x in receipt["results"]]
        assert reasons == ["bad_signature", "malformed", "malformed", "wrong_merchant"]
        clock.now += 91 * DAY
        late = h.deposit("Shop", bank)
        assert [x["reason"] for x in late["results"]] == ["stale"] * 4
        assert bank.account(bank.merchant("Shop").account_id).balance == 0
        assert bank.audit().ok


def test_withdrawal_lost_ack_moves_money_once(world: dict[str, Any]) -> None:
    h, card = world["home"], world["alice"]
    with h.bank() as bank, h.card_client(card) as client:
        client.select()
        client.verify_pin(PIN)
        request = client.withdraw_request(2500, False, AuthKind.MAC)
        before = bank.account("holder:alice").balance
        ack1 = bank.withdraw(request)  # ...and the answer is lost
        # the holder tries again: the card sends the very same request
        client.select()
        client.verify_pin(PIN)
        assert client.withdraw_request(2500, False, AuthKind.MAC) == request
        ack2 = bank.withdraw(request)
        assert ack1 == ack2
        balance, seq = client.withdraw_complete(ack2)
        assert (balance, seq) == (22_500, 2)
        assert bank.account("holder:alice").balance == before - 2500
        with pytest.raises(Refused) as r:
            bank.withdraw(request[:-1] + bytes([request[-1] ^ 1]))
        assert r.value.code in {"bad_auth", "replay"}
        assert bank.audit().ok


def test_wrong_pin_then_locked_then_unblocked(world: dict[str, Any]) -> None:
    h, card = world["home"], world["alice"]
    for left in (2, 1):
        with pytest.raises(PaymentDeclined) as exc:
            h.pay(card, "Shop", 100, "0000")
        assert exc.value.code == "wrong_pin"
        assert f"{left} tries" in str(exc.value)
    with pytest.raises(PaymentDeclined) as exc:
        h.pay(card, "Shop", 100, "0000")
    assert "locked" in str(exc.value)
    with pytest.raises(PaymentDeclined) as exc:
        h.pay(card, "Shop", 100, PIN)
    assert exc.value.code == "locked"
    with h.bank() as bank, h.card_client(card) as client:
        bank.unblock_card(client, "1357")
    assert h.pay(card, "Shop", 100, "1357").ser == 0


@pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)
def test_concurrent_copies_of_deposits_credit_once(world: dict[str, Any]) -> None:
    """Copies of two merchants' sessions race (same card's row): each payment once."""
    h, card = world["home"], world["alice"]
    messages = []
    for merchant in ("Shop", "Cafe"):
        for i in range(15):
            h.pay(card, merchant, 10 + i, PIN)
        batch = h.export_batch(merchant)
        with h.terminal(merchant) as (tf, _):
            key = SigningKey.from_private_bytes(tf.sid, tf.signing_key)
        message = make_deposit(key, tf.bank_id, tf.sid, 1, world["clock"](), batch)
        messages += [json.loads(json.dumps(message)) for _ in range(6)]
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(messages))

    def run(message: dict[str, Any]) -> None:
        try:
            with h.bank() as bank:
                start.wait()
                results.append(bank.deposit(message))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(m,)) for m in messages]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    by_session: dict[str, set[str]] = {}
    for rec in results:
        by_session.setdefault(rec["deposit_id"], set()).add(json.dumps(rec, sort_keys=True))
    assert len(by_session) == 2
    assert all(len(v) == 1 for v in by_session.values())
    with h.bank() as bank:
        with bank.store.transaction() as tx:  # SQLite: one transaction at a time
            assert len(list(tx.iter_payments())) == 30
        total = sum(bank.account(bank.merchant(m).account_id).balance for m in ("Shop", "Cafe"))
        assert total == 2 * sum(10 + i for i in range(15))
        assert bank.audit().ok


def test_bank_on_its_own_fips_group(tmp_path: Path) -> None:
    """A bank generates its own FIPS 186-4 group; cards, terminals and deposits use it."""
    import hashlib

    from jointpay.crypto.fips186 import generate_bank_group

    seed = hashlib.sha256(b"jointpay-test-bank-group-298").digest()  # q is prime; p quick
    record = generate_bank_group("acme-2048", seed).to_json()
    h = Home(tmp_path, None, Clock())
    params = h.init_bank(
        suite="modp-2048-256", group=None, currency="EUR", bank_id="acme", own_group=record
    )
    assert params["group"] == "acme-2048"
    assert params["group_record"]["seed"] == seed.hex()
    with h.bank() as bank:
        bank.open_account("alice", 10_000)
        card = h.issue_card(
            bank, holder="alice", pin=PIN, load=5000, mode="cash", limit=0, user_key="card"
        ).card_number
        h.open_merchant(bank, "Shop")
    paid = h.pay(card, "Shop", 700, PIN)
    assert paid.suite == "modp-2048-256"
    with h.bank() as bank:
        assert bank.group.name == "acme-2048"
        assert h.deposit("Shop", bank)["accepted"] == 1
        assert h.withdraw(card, bank, pin=PIN, amount=100, renew=False).balance == 4400
        assert bank.audit().ok
    tampered = {**record, "g": format(int(record["g"], 16) + 1, "x")}
    with pytest.raises(BadInput):
        Home(tmp_path / "other", None, Clock()).init_bank(
            suite="modp-2048-256", group=None, currency="EUR", own_group=tampered
        )


def test_online_clearance_above_the_floor_limit(world: dict[str, Any]) -> None:
    """FIG. 8: the terminal asks the bank above its floor limit, and for a sample below."""
    from jointpay.protocol.terminal import OnlinePolicy

    h: Home = world["home"]
    card = world["alice"]
    # Below the floor limit: offline; above it: the bank clears it from the card's record.
    assert h.pay(card, "Shop", 500, PIN, floor_limit=1000).amount == 500
    assert h.pay(card, "Shop", 1500, PIN, floor_limit=1000).amount == 1500
    assert h.pay(card, "Shop", 100, PIN, online_sample=1.0).amount == 100

    # The bank hot-lists the card; the terminal has not synchronised its hot list yet.
    with h.bank() as bank:
        bank.blacklist(card, "stolen")
    before = balances(h)
    with pytest.raises(PaymentDeclined) as exc:
        h.pay(card, "Shop", 2000, PIN, floor_limit=1000)
    assert exc.value.code == "online_declined"
    assert "blacklisted" in str(exc.value)
    assert h.pay(card, "Shop", 200, PIN, floor_limit=1000).amount == 200  # below: offline
    assert balances(h) == before  # clearance moves no money
    # More than the bank's record of the card's balance: declined on-line.
    with pytest.raises(PaymentDeclined) as exc:
        h.pay(card, "Shop", 30_000, PIN, floor_limit=0)
    assert exc.value.code in ("online_declined", "insufficient_balance")
    with pytest.raises(ValueError):
        OnlinePolicy(lambda c, a: None, sample=1.5)  # type: ignore[arg-type,return-value]


def test_a_refused_withdrawal_is_signed_recorded_and_never_applied(world: dict[str, Any]) -> None:
    """FIG. 10 step 880 says no: the card gets a signed refusal and moves on; a replay of
    the refused request, even once the holder could pay, gets the same refusal."""
    from jointpay.protocol.terminal import CardError

    h: Home = world["home"]
    card = world["alice"]
    with h.card_client(card) as client:
        client.select()
        client.verify_pin(PIN)
        request = client.withdraw_request(10_000_000, False, AuthKind.SIGNATURE)
    with h.bank() as bank:
        before = balances(h)
        with pytest.raises(Refused) as exc:
            bank.withdraw(request)
        assert exc.value.code == "insufficient_funds"
        proof = exc.value.proof
        assert proof
        with h.card_client(card) as client:  # a forged refusal is refused by the card
            client.select()
            with pytest.raises(CardError) as bad:
                client.withdraw_refused(proof[:-1] + bytes([proof[-1] ^ 1]))
            assert bad.value.sw == 0x6982
            balance, seq = client.withdraw_refused(proof)
        assert (balance, seq) == (20_000, 2)
        assert not h.card(card).load().pending_withdrawal
        bank.open_account("alice-rich", 0)  # (the holder's money arrives later...)
        with pytest.raises(Refused) as again:
            bank.withdraw(request)  # ...and the refused request is replayed: still no
        assert again.value.code == "insufficient_funds"
        assert again.value.proof == proof
        assert balances(h) == {**before, "holder:alice-rich": 0}
        out = h.withdraw(card, bank, pin=PIN, amount=1_000, renew=False)
        assert (out.balance, out.seq) == (21_000, 3)
        assert bank.audit().ok
