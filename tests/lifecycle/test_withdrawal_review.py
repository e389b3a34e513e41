"""Withdrawals (FIG. 10) at their edges, on every backend: amounts no balance can hold,
and a CARD-CERT renewed by a restore carried during a payment."""

from __future__ import annotations

from typing import Any

import pytest

from jointpay.home import Home
from jointpay.protocol.spec import PaymentSpec
from jointpay.service.errors import Refused
from worlds import PIN

MAX = (1 << 63) - 1


@pytest.mark.parametrize("amount", [MAX, MAX - 19_999])  # the float: 2^63 - 1 + 1
def test_a_withdrawal_no_balance_could_hold_is_refused_signed_and_frees_the_card(
    world: dict[str, Any], amount: int
) -> None:
    """Alice's card holds 200.00 (its float too) and her account 300.00. A withdrawal
    the card accepts (below 2^63) that would take the float past 2^63 - 1 was an
    unsigned storage error on SQLite and PostgreSQL: the card kept the request pending
    for ever (each retry met the same error) and paid nothing again. It is refused
    ``insufficient_funds`` with the bank's signed refusal, as on the memory store."""
    h: Home = world["home"]
    n = world["alice"]
    with h.bank() as bank:
        bank.set_policy(withdrawal_fee=100)
        with pytest.raises(Refused) as refused:
            h.withdraw(n, bank, pin=PIN, amount=amount, renew=False)
        assert refused.value.code == "insufficient_funds"
        assert refused.value.proof
        assert bank.account("holder:alice").balance == 30_000
        assert bank.account(bank.card(n).float_account).balance == 20_000
        assert bank.audit().ok
    state = h.card(n).load()
    assert (state.pending_withdrawal, state.balance, state.seq) == (b"", 20_000, 2)
    with h.bank() as bank:
        assert h.withdraw(n, bank, pin=PIN, amount=1_000, renew=False).balance == 21_000
        assert bank.account("holder:alice").balance == 30_000 - 1_000 - 100
        assert bank.audit().ok
    assert h.pay(n, "Shop", 500, PIN).amount == 500


def _credit_card_near_its_expiry(h: Home, clock: Any) -> str:
    """A credit card (limit 100.00) that spent 60.00, deposited and repaid, whose
    CARD-CERT expires within the renewal window: its next restore also renews it."""
    with h.bank() as bank:
        bank.open_account("carol", 1_000)
        n = h.issue_card(
            bank, holder="carol", pin=PIN, load=0, mode="credit", limit=10_000, user_key="card"
        ).card_number
    h.pay(n, "Shop", 6_000, PIN)
    with h.bank() as bank:
        assert [r["reason"] for r in h.deposit("Shop", bank)["results"]] == [None]
        bank.repay("carol", 6_000, ref="repay-1")
        validity, window = bank.policy.cert_validity, bank.policy.renew_before
    clock.now += validity - window // 2
    return n


def test_a_restore_during_a_payment_that_renews_the_card_cert_still_pays(
    world: dict[str, Any],
) -> None:
    """The merchant's terminal carries the credit card's restore, and the bank's
    acknowledgement renews the CARD-CERT (it expires within ``renew_before``). The
    terminal built the spec with the CARD-CERT it had read before, which the card no
    longer holds: the card refused the PAY (6984) after its line was restored, and the
    purchase was declined ``card_error``. The payment names the renewed certificate."""
    h: Home = world["home"]
    n = _credit_card_near_its_expiry(h, world["clock"])
    old = h.card(n).load().cert
    paid = h.pay(n, "Shop", 5_000, PIN)
    state = h.card(n).load()
    assert state.cert != old  # renewed by the restore
    assert (paid.amount, state.balance, state.pending_withdrawal) == (5_000, 5_000, b"")
    with h.bank() as bank:
        assert PaymentSpec.decode(paid.spec).card_cert_id == bank.card(n).current_cert_id
        assert [r["reason"] for r in h.deposit("Shop", bank)["results"]] == [None]
        assert bank.audit().ok


def test_a_pending_renewal_completed_by_a_payment_still_pays(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The holder's restore with renewal was applied by the bank and its answer lost;
    the card's next payment carries it (protocol.md, Withdrawal) and takes the renewed
    CARD-CERT, and the payment is made under it."""
    h: Home = world["home"]
    n = _credit_card_near_its_expiry(h, world["clock"])
    old = h.card(n).load().cert
    with h.bank() as bank:
        real = bank.withdraw

        def answer_lost(request: bytes) -> bytes:
            real(request)
            raise Refused("bank_unreachable", "timed out")

        monkeypatch.setattr(bank, "withdraw", answer_lost)
        with pytest.raises(Refused):
            h.withdraw(n, bank, pin=PIN, amount=6_000, renew=True)
    assert h.card(n).load().pending_withdrawal != b""
    paid = h.pay(n, "Shop", 500, PIN)
    state = h.card(n).load()
    assert state.cert != old
    assert (paid.amount, state.balance, state.pending_withdrawal) == (500, 9_500, b"")
    with h.bank() as bank:
        assert PaymentSpec.decode(paid.spec).card_cert_id == bank.card(n).current_cert_id
        assert [r["reason"] for r in h.deposit("Shop", bank)["results"]] == [None]
        assert bank.audit().ok
