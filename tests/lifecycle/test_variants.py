"""The patent's variants on every backend: payments converted from another currency,
cheque cards, credit cards (limit restored by FIG. 10, settlement run)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from jointpay import home as home_module
from jointpay.domain.money import convert, parse_rate
from jointpay.home import Home
from jointpay.protocol import terminal as terminal_module
from jointpay.protocol.spec import Conversion, PaymentSpec
from jointpay.protocol.terminal import PaymentDeclined, Terminal
from jointpay.service.errors import BadInput, Refused
from jointpay.service.policy import DAY
from worlds import PIN


def reasons(receipt: dict[str, Any]) -> list[str | None]:
    return [r["reason"] for r in receipt["results"]]


# -- currency conversion ---------------------------------------------------------------
def test_a_converted_payment_is_checked_against_the_rate_of_its_time(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    h: Home = world["home"]
    card, clock = world["alice"], world["clock"]
    with h.bank() as bank:
        bank.set_rate("USD", parse_rate("0.92"), clock.now - DAY)
        bank.set_rate("JPY", parse_rate("0.0061"), clock.now - DAY)
        assert bank.rates()["rates"]["USD"] == [{"from": clock.now - DAY, "rate": "0.92"}]
    at_bank = h.pay(card, "Shop", "10.00", PIN, price_currency="USD")  # the bank's rate
    close = h.pay(card, "Shop", "10.00", PIN, price_currency="USD", rate="0.925")  # 0.54 %
    yen = h.pay(card, "Shop", "1234", PIN, price_currency="JPY", rate="0.0061")
    far = h.pay(card, "Shop", "10.00", PIN, price_currency="USD", rate="0.95")  # 3.3 %
    h.pay(card, "Shop", "10.00", PIN, price_currency="GBP", rate="1.15")  # no bank rate
    assert (at_bank.amount, close.amount, yen.amount, far.amount) == (920, 925, 753, 950)
    spec = PaymentSpec.decode(at_bank.spec)
    assert spec.conversion is not None
    assert (spec.conversion.orig_amount, spec.conversion.orig_currency) == (1000, "USD")
    # A terminal that states the bank's rate but converts to its own advantage:
    monkeypatch.setattr(terminal_module, "convert", lambda *a: 1000)
    monkeypatch.setattr(home_module, "convert", lambda *a: 1000)
    greedy = h.pay(card, "Shop", "10.00", PIN, price_currency="USD", rate="0.92")
    monkeypatch.undo()
    assert greedy.amount == 1000
    # A rate published later does not apply to a payment made before it.
    with h.bank() as bank:
        bank.set_rate("USD", parse_rate("0.95"), clock.now + 1)
        clock.now += 2
        receipt = h.deposit("Shop", bank)
        assert reasons(receipt) == [None, None, None] + ["currency_mismatch"] * 3
        assert bank.account(bank.merchant("Shop").account_id).balance == 920 + 925 + 753
        assert bank.audit().ok
    after = h.pay(card, "Shop", "10.00", PIN, price_currency="USD")  # the new rate now
    assert after.amount == 950


def test_conversion_arithmetic_and_refusals(world: dict[str, Any]) -> None:
    assert convert(1, "USD", parse_rate("0.5"), "EUR") == 1  # 0.5 cent rounds half up
    assert convert(999, "JPY", parse_rate("0.006"), "KWD") == 5994  # 5.994 KWD
    assert convert(1, "KWD", parse_rate("3.25"), "EUR") == 0  # 0.325 cent rounds down
    h: Home = world["home"]
    with h.bank() as bank:
        with pytest.raises(BadInput):
            bank.set_rate("EUR", parse_rate("1"))  # the bank's own currency
        with pytest.raises(Refused) as exc:
            h.pay(world["alice"], "Shop", "10.00", PIN, price_currency="CHF", bank=bank)
        assert exc.value.code == "currency_mismatch"  # no published rate, none given
    with pytest.raises(ValueError):
        parse_rate("1.0000001")
    with h.card_client(world["alice"]) as client, h.terminal("Shop") as (tf, store):
        t = Terminal(tf.config(frozenset()), store)
        wrong = Conversion(1000, "USD", 920_000)  # 9.20, not 9.99
        with pytest.raises(PaymentDeclined) as declined:
            t.pay(client, 999, lambda: PIN, world["clock"].now, conversion=wrong)
    assert declined.value.code == "bad_conversion"


# -- credit cards ------------------------------------------------------------------------
def test_credit_card_limit_settlement_interest_and_restore(world: dict[str, Any]) -> None:
    h: Home = world["home"]
    clock = world["clock"]
    with h.bank() as bank:
        bank.set_policy(
            credit_fee_bp=200,
            credit_clearing_delay=DAY,
            credit_interest_bp=100,
            late_interest_bp=500,
            credit_period=30 * DAY,
            credit_grace=10 * DAY,
        )
        bank.open_account("carol", 1_000)
        card = h.issue_card(
            bank, holder="carol", pin=PIN, load=0, mode="credit", limit=10_000, user_key="card"
        )
        assert card.balance == 10_000  # the limit, written by FIG. 10: no money moved
        assert bank.account("holder:carol").balance == 1_000
        assert bank.account(f"card:{card.card_number}").balance == 0
    n = card.card_number
    assert h.pay(n, "Shop", 6_000, PIN).amount == 6_000
    with pytest.raises(PaymentDeclined) as exc:  # 4,000 left and nothing to restore yet
        h.pay(n, "Shop", 5_000, PIN)
    assert exc.value.code == "insufficient_balance"
    with h.bank() as bank:
        shop = bank.merchant("Shop")
        assert reasons(h.deposit("Shop", bank)) == [None]
        assert bank.account(f"card:{n}").balance == -6_000  # what carol owes
        assert bank.account(f"merchant:{shop.sid}:clearing").balance == 5_880  # 2 % fee
        assert bank.account(shop.account_id).balance == 0
        assert bank.settle() == {"released": {}, "statements": []}  # not due, no period
        clock.now += DAY + 1
        assert bank.settle()["released"] == {shop.sid: "58.80"}
        assert bank.account(shop.account_id).balance == 5_880
        clock.now += 30 * DAY
        [st1] = bank.settle()["statements"]
        assert (st1["charges"], st1["interest"], st1["balance_due"]) == ("60.00", "0.60", "60.60")
        repaid = bank.repay("carol", 3_000, ref="cheque-0001")
        assert repaid["owed"] == {n: "30.60"}
        with pytest.raises(Refused) as dup:
            bank.repay("carol", 3_000, ref="cheque-0001")
        assert dup.value.code == "duplicate"
    assert h.pay(n, "Shop", 4_000, PIN).amount == 4_000  # the rest of the line
    # The card is at zero: the merchant's terminal carries the card's FIG. 10 request
    # on-line and the bank restores the line within the limit: 10,000 - 3,060 owed -
    # 4,000 the card may have spent (not deposited yet) = 2,940.
    assert h.pay(n, "Shop", 2_000, PIN).amount == 2_000
    assert h.card(n).load().balance == 940
    with h.bank() as bank:
        assert reasons(h.deposit("Shop", bank)) == [None, None]
        clock.now += 11 * DAY  # statement 1 fell due unpaid in part: 30.60 late
        clock.now += 30 * DAY
        [st2] = bank.settle()["statements"]
        assert (st2["charges"], st2["interest"], st2["late_interest"]) == (
            "60.00",
            "0.60",
            "1.53",
        )
        assert st2["balance_due"] == "92.73"  # 30.60 + 60.00 + 0.60 + 1.53
        assert bank.account(f"card:{n}").balance == -9_273
        report = bank.audit()
        assert report.ok, report.violations
        assert report.figures["credit_owed"] == "92.73"
        assert report.figures["interest"] == "2.73"
        with pytest.raises(Refused) as poor:  # carol's own account holds 10.00
            bank.repay("carol", 9_273, from_account=True)
        assert poor.value.code == "insufficient_funds"
        bank.repay("carol", 1_000, from_account=True)
        assert bank.account("holder:carol").balance == 0
        # Paid in full: the card's line comes back at its next contact.
        bank.repay("carol", 8_273)
        assert bank.clearance(n, 0)["topup"] == 10_000 - 940
        out = h.withdraw(n, bank, pin=PIN, amount="max", renew=False)
        assert out.balance == 10_000
        assert bank.account("holder:carol").balance == 0  # no money moved
        with pytest.raises(Refused) as over:
            h.withdraw(n, bank, pin=PIN, amount=1, renew=False)
        assert over.value.code == "credit_limit"
        assert bank.audit().ok


def _credit_card_owed_a_restore(h: Home) -> str:
    """A credit card (limit 100.00) that spent 60.00, deposited and repaid: its bank
    would restore its line by 60.00 at its next contact."""
    with h.bank() as bank:
        bank.open_account("carol", 1_000)
        n = h.issue_card(
            bank, holder="carol", pin=PIN, load=0, mode="credit", limit=10_000, user_key="card"
        ).card_number
    h.pay(n, "Shop", 6_000, PIN)
    with h.bank() as bank:
        assert reasons(h.deposit("Shop", bank)) == [None]
        bank.repay("carol", 6_000, ref="repay-1")
        assert bank.clearance(n, 0)["topup"] == 6_000
    return n


def test_a_credit_restore_whose_answer_was_lost_is_completed_by_the_next_payment(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bank applied a terminal's restore of a credit line, and its answer was lost:
    the card keeps its request and pays nothing until it is completed. The card's next
    payment on-line carries the same request again (the bank answers it with the same
    acknowledgement); the holder's tools say what is pending, and complete it."""
    from jointpay.cli.main import describe_card
    from jointpay.protocol.terminal import OnlineUnavailable

    h: Home = world["home"]
    n = _credit_card_owed_a_restore(h)
    real = home_module.online_restore

    def answer_lost(bank: Any) -> Any:
        restore = real(bank)

        def carry(request: bytes) -> bytes:
            restore(request)  # the bank applies it...
            raise OnlineUnavailable("timed out")  # ...and its answer never comes back

        return carry

    monkeypatch.setattr(home_module, "online_restore", answer_lost)
    with pytest.raises(PaymentDeclined) as lost:
        h.pay(n, "Shop", 5_000, PIN)
    assert lost.value.code == "bank_unreachable"
    assert h.card(n).load().balance == 4_000
    with h.card_client(n) as client:
        shown = describe_card(client)
    assert shown["pending_withdrawal"] == {
        "amount": "60.00 EUR",
        "up_to": False,
        "renew": False,
        "seq": 2,
    }
    with h.bank() as bank, pytest.raises(Refused) as other:
        h.withdraw(n, bank, pin=PIN, amount=100, renew=False)
    assert other.value.code == "withdrawal_pending"
    assert "60.00 EUR" in other.value.message
    monkeypatch.setattr(home_module, "online_restore", real)
    # the next payment completes the restore first, then pays
    assert h.pay(n, "Shop", 5_000, PIN).amount == 5_000
    assert h.card(n).load().balance == 5_000  # 4,000 + 6,000 restored - 5,000
    with h.card_client(n) as client:
        assert describe_card(client)["pending_withdrawal"] is None
    with h.bank() as bank:
        assert bank.clearance(n, 0)["topup"] == 0  # restored once, not twice
        assert bank.audit().ok


def test_withdraw_max_completes_a_restore_whose_answer_was_lost(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    h: Home = world["home"]
    n = _credit_card_owed_a_restore(h)
    with h.bank() as bank:
        real = bank.withdraw

        def answer_lost(request: bytes) -> bytes:
            real(request)
            raise Refused("bank_unreachable", "timed out")

        monkeypatch.setattr(bank, "withdraw", answer_lost)
        with pytest.raises(Refused):
            h.withdraw(n, bank, pin=PIN, amount="max", renew=False)
        monkeypatch.setattr(bank, "withdraw", real)
        assert bank.clearance(n, 0)["topup"] == 0  # the bank restored the line...
        with pytest.raises(Refused) as other:  # (another request waits for it)
            h.withdraw(n, bank, pin=PIN, amount=100, renew=False)
        assert other.value.code == "withdrawal_pending"
        assert "a restore of the credit line (--amount max)" in other.value.message
        out = h.withdraw(n, bank, pin=PIN, amount="max", renew=False)  # ...the card now
        assert out.balance == 10_000
        assert bank.audit().ok


def test_a_lost_refusal_of_a_pending_restore_does_not_decline_the_next_payment(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A credit card at its full line: the holder's ``--amount max`` is refused
    ``credit_limit``, and the refusal is lost on its way. The card's next payment
    carries the pending request; the bank answers with its recorded refusal, the card
    drops the request, and the payment goes on (it was declined, once, before)."""
    h: Home = world["home"]
    with h.bank() as bank:
        bank.open_account("carol", 1_000)
        n = h.issue_card(
            bank, holder="carol", pin=PIN, load=0, mode="credit", limit=10_000, user_key="card"
        ).card_number
        real = bank.withdraw

        def refusal_lost(request: bytes) -> bytes:
            try:
                return real(request)
            except Refused as exc:
                raise Refused("bank_unreachable", "connection reset") from exc

        monkeypatch.setattr(bank, "withdraw", refusal_lost)
        with pytest.raises(Refused) as lost:
            h.withdraw(n, bank, pin=PIN, amount="max", renew=False)
        assert lost.value.code == "bank_unreachable"
    assert h.card(n).load().pending_withdrawal != b""
    paid = h.pay(n, "Shop", 500, PIN)
    assert (paid.amount, h.card(n).load().balance) == (500, 9_500)
    assert h.card(n).load().pending_withdrawal == b""


def test_withdraw_max_is_one_exchange_the_card_signs(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--amount max`` asks the bank for a restore of up to any amount (the request's
    up-to flag, signed by the card after its PIN): the bank grants what the line allows
    and the card takes that. No unauthenticated question about the card is asked; with
    nothing to restore, the bank's signed refusal clears the card's request."""
    h: Home = world["home"]
    n = _credit_card_owed_a_restore(h)
    with h.bank() as bank:
        monkeypatch.setattr(bank, "clearance", None)  # never asked
        monkeypatch.setattr(bank, "online_check", None)
        out = h.withdraw(n, bank, pin=PIN, amount="max", renew=False)
        assert (out.balance, out.seq) == (10_000, 2)  # 4,000 + the 6,000 granted
        with pytest.raises(Refused) as none:
            h.withdraw(n, bank, pin=PIN, amount="max", renew=False)
        assert none.value.code == "credit_limit"
        monkeypatch.undo()
        assert bank.clearance(n, 0)["topup"] == 0
        assert bank.audit().ok
    status = h.card(n).load()
    assert (status.balance, status.seq, status.pending_withdrawal) == (10_000, 3, b"")
    assert h.pay(n, "Shop", 100, PIN).amount == 100  # nothing left pending on the card


# -- cheque cards -------------------------------------------------------------------------
def test_cheques_debit_the_account_and_bounce(world: dict[str, Any]) -> None:
    h: Home = world["home"]
    with h.bank() as bank:
        cheque = h.issue_card(
            bank, holder="bob", pin=PIN, load=0, mode="cheque", limit=0, user_key="card"
        ).card_number
    h.pay(cheque, "Shop", 6_000, PIN)
    h.pay(cheque, "Shop", 5_000, PIN)  # no count on the card: the account decides
    batch = h.export_batch("Shop")
    with h.bank() as bank:
        receipt = h.deposit("Shop", bank)
        assert reasons(receipt) == [None, "insufficient_funds"]
        assert bank.account("holder:bob").balance == 4_000
        assert bank.account(bank.merchant("Shop").account_id).balance == 6_000
        [bounce] = [a for a in bank.alerts() if a.kind == "bounced_cheque"]
        assert bounce.card_number == cheque
        assert "holder:bob" in bounce.detail
        report = bank.audit()
        assert report.ok
        assert report.figures["bounced_cheques"] == 1
        with pytest.raises(Refused) as exc:
            h.withdraw(cheque, bank, pin=PIN, amount=1, renew=False)
        assert exc.value.code == "not_supported"
        # Presented again, the paid cheque is a duplicate and the other bounces again.
        again = h.deposit("Shop", bank, batch)
        assert reasons(again) == ["duplicate", "insufficient_funds"]
        assert sum(a.kind == "bounced_cheque" for a in bank.alerts()) == 2
        assert bank.account("holder:bob").balance == 4_000


def test_a_cheque_book_limits_the_cheques_a_card_may_sign(world: dict[str, Any]) -> None:
    h: Home = world["home"]
    with h.bank() as bank:
        issued = h.issue_card(
            bank, holder="bob", pin=PIN, load=0, mode="cheque", limit=2, user_key="card"
        )
        assert issued.balance == 2  # two cheques, no money
        assert bank.account("holder:bob").balance == 10_000
    n = issued.card_number
    h.pay(n, "Shop", 100, PIN)
    h.pay(n, "Shop", 100, PIN)
    with pytest.raises(PaymentDeclined):
        h.pay(n, "Shop", 100, PIN)
    with h.bank() as bank:
        with pytest.raises(Refused) as exc:
            h.withdraw(n, bank, pin=PIN, amount=3, renew=False)
        assert exc.value.code == "cheque_limit"
        assert h.withdraw(n, bank, pin=PIN, amount=2, renew=False).balance == 2
        assert reasons(h.deposit("Shop", bank)) == [None, None]
        assert bank.account("holder:bob").balance == 9_800
        assert bank.audit().ok


# -- a merchant registered with several banks (the patent's first routing) --------------
def test_a_merchant_registered_with_two_banks_sorts_its_payments_by_issuer(
    world: dict[str, Any], tmp_path: Any
) -> None:
    h: Home = world["home"]
    alice, clock = world["alice"], world["clock"]
    url_b = f"sqlite:///{tmp_path / 'bank-b.db'}"
    hb = Home(tmp_path, url_b, clock)  # a second bank; cards and terminals share the folder
    hb.init_bank(suite="secp256k1", group=None, currency="EUR", bank_id="bank-b")
    with hb.bank() as bank_b:
        bank_b.open_account("carol", 30_000)
        carol = hb.issue_card(
            bank_b, holder="carol", pin=PIN, load=10_000, mode="cash", limit=0, user_key="card"
        ).card_number
    with pytest.raises(PaymentDeclined) as refused:
        h.pay(carol, "Shop", 2_500, PIN)
    assert refused.value.code == "unknown_bank"
    # FIG. 3 at bank B, for the terminal's existing key; the terminal checks the cert.
    key = bytes.fromhex(h.merchant_key("Shop")["public_key"])
    with hb.bank() as bank_b:
        _, cert = bank_b.open_merchant("Shop", key)
        _, cafe_cert = bank_b.open_merchant(
            "Cafe", bytes.fromhex(h.merchant_key("Cafe")["public_key"])
        )
        with pytest.raises(Refused) as wrong:
            h.add_bank("Shop", bank_b, cafe_cert, url_b)  # certifies another terminal's key
        assert wrong.value.code == "bad_cert"
        with pytest.raises(Refused) as forged:
            h.add_bank("Shop", bank_b, cert[:-1] + bytes([cert[-1] ^ 1]), url_b)
        assert forged.value.code == "bad_cert"
        reg = h.add_bank("Shop", bank_b, cert, url_b)
    assert reg.bank_id == "bank-b"
    own = h.pay(alice, "Shop", 1_000, PIN)
    theirs = h.pay(carol, "Shop", 2_500, PIN)
    assert PaymentSpec.decode(own.spec).bank_id == "test-bank"
    assert (PaymentSpec.decode(theirs.spec).bank_id, PaymentSpec.decode(theirs.spec).sid) == (
        "bank-b",
        reg.sid,
    )
    assert [len(g["payments"]) for g in h.export_batch("Shop")["cards"]] == [1]
    exported_b = h.export_batch("Shop", "bank-b")
    assert (exported_b["bank_id"], exported_b["sid"]) == ("bank-b", reg.sid)
    assert exported_b["cards"][0]["payments"][0]["ser"] == theirs.ser
    receipts = h.deposit_everywhere("Shop", None)
    assert [(r["bank_id"], r["accepted"], r["rejected"]) for r in receipts] == [
        ("test-bank", 1, 0),
        ("bank-b", 1, 0),
    ]
    with hb.bank() as bank_b:
        assert bank_b.account(bank_b.merchant("Shop").account_id).balance == 2_500
        assert bank_b.account(bank_b.card(carol).float_account).balance == 7_500
        assert bank_b.audit().ok
    with h.bank() as bank_a:
        assert bank_a.account(bank_a.merchant("Shop").account_id).balance == 1_000
        assert bank_a.audit().ok
    # nothing is left pending, and a second run deposits nothing twice
    again = h.deposit_everywhere("Shop", None)
    assert [(r["bank_id"], r["accepted"]) for r in again] == [("test-bank", 0)]
    # bank B's hot list reaches the terminal through the registration
    with hb.bank() as bank_b:
        bank_b.blacklist(carol, "stolen")
    with h.bank() as bank_a:
        assert h.sync_hotlist("Shop", bank_a) >= 1
    with pytest.raises(PaymentDeclined) as hot:
        h.pay(carol, "Shop", 100, PIN)
    assert hot.value.code == "blacklisted"
    # the registration pins bank B's key: a database holding another bank is refused
    tf = h.terminal_file("Shop")
    forged = replace(tf.registrations["bank-b"], bank_key=b"\x01" * 32)
    path = h.merchant_dir("Shop") / "terminal.json"
    path.write_text(replace(tf, registrations={"bank-b": forged}).to_json())
    with h.bank() as bank_a, pytest.raises(Refused) as pinned:
        h.sync_hotlist("Shop", bank_a)
    assert pinned.value.code == "wrong_bank_key"


@pytest.mark.parametrize(
    ("changes", "said"),
    [
        ({"credit_fee_bp": 20_000}, "credit_fee_bp is at most 10000"),
        ({"late_interest_bp": 10_001}, "late_interest_bp is at most 10000"),
        ({"deposit_window": 0}, "deposit_window must be above zero"),
        ({"online_window": 0}, "online_window must be above zero"),
        ({"cert_validity": 1}, "renew_before must be below cert_validity"),
        ({"rate_tolerance_ppm": 2_000_000}, "rate_tolerance_ppm is at most 1000000"),
    ],
)
def test_an_unworkable_policy_is_refused_and_the_old_one_kept(
    world: dict[str, Any], changes: dict[str, int], said: str
) -> None:
    """A fee above the whole amount, a window nothing fits in, certificates renewed at
    every withdrawal: refused, as a policy value of the wrong type is."""
    h: Home = world["home"]
    with h.bank() as bank:
        before = bank.policy
        with pytest.raises(BadInput) as bad:
            bank.set_policy(**changes)
        assert bad.value.code == "bad_policy"
        assert said in bad.value.message
        assert bank.policy == before
    with h.bank() as bank:
        assert bank.policy == before
        assert bank.set_policy(credit_fee_bp=10_000, credit_period=0).credit_fee_bp == 10_000
