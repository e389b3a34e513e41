"""Withdrawals (FIG. 10) at their edges, on every backend."""

from __future__ import annotations

from typing import Any

import pytest

from jointpay.home import Home
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

