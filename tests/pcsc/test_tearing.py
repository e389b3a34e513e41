"""Tearing: the card pulled out at every step of a payment and of a withdrawal.

The card runs in its own process (tests/pcsc/torn_card.py) and dies abruptly at the
K-th command APDU: before the command runs, while its new state is being written (the
new file complete but not renamed), or after the state is committed with the response
lost. Then the card is inserted again and the holder and the merchant do what their
tools tell them to. Afterwards:

* the card file loads (never torn) and its balance is the old one or the new one;
* no ser is ever used twice, and every ser the card spent was taken by the terminal
  (recovered from the card if the answer was lost);
* the bank, after the deposit, credited exactly what the card lost, and the holder's
  account was debited exactly once per withdrawal the card received;
* the books balance.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from pcsc_env import PIN, READER, card_in_thread, card_process, settle, torn_card_argv

from jointpay.adapters.pcsc import PcscChannel, PcscError
from jointpay.home import Home
from jointpay.protocol.terminal import CardClient, PaymentDeclined, Terminal
from jointpay.service.errors import Refused

LOAD = 20_000
PAY_APDUS = ["SELECT", "GET DATA cert", "GET DATA status", "VERIFY", "PAY"]
WITHDRAW_APDUS = [
    "SELECT",
    "GET DATA cert",
    "VERIFY",
    "WITHDRAW REQ",
    "WITHDRAW DONE",
    "GET DATA cert",
]
WRITES = {"VERIFY", "PAY", "WITHDRAW REQ", "WITHDRAW DONE"}


def cases(apdus: list[str]) -> list[Any]:
    out = []
    for k, name in enumerate(apdus, start=1):
        for where in ("before", "during", "after"):
            if where == "during" and name not in WRITES:
                continue
            out.append(pytest.param(k, where, id=f"{k}-{name.replace(' ', '_')}-{where}"))
    return out


@contextmanager
def torn(h: Home, card: str, k: int, where: str) -> Iterator[Any]:
    argv = torn_card_argv(h.card(card).path, k, where)
    with card_process(argv, ready=lambda s: s == "connected\n") as proc:
        yield proc
    settle()


def check_books(h: Home) -> None:
    with h.bank() as bank:
        report = bank.audit()
    assert report.ok, report.violations


@pytest.mark.parametrize(("k", "where"), cases(PAY_APDUS))
def test_payment_torn(world: dict[str, Any], k: int, where: str) -> None:
    h: Home = world["home"]
    card = world["card"]
    now = world["clock"]

    with torn(h, card, k, where) as proc:
        try:
            h.pay(None, "Shop", 1250, PIN, reader=READER)
            interrupted = False
        except (PcscError, PaymentDeclined):
            interrupted = True
        proc.wait(10)
    # The card died exactly where it was told to (only "during" of a
    # command that writes nothing lets the payment through).
    assert interrupted
    state = h.card(card).load()  # loads: never a torn file
    paid = PAY_APDUS[k - 1] == "PAY" and where == "after"  # committed, answer lost
    assert state.balance == (LOAD - 1250 if paid else LOAD)
    assert state.next_ser == (1 if state.balance != LOAD else 0)

    with card_in_thread(h.card(card)):
        with PcscChannel(READER) as channel, h.terminal("Shop") as (tf, store):
            recovered = Terminal(tf.config(store.hotlist()), store).recover(
                CardClient(channel), now()
            )
        assert (recovered is not None) == (state.balance != LOAD)
        again = h.pay(None, "Shop", 300, PIN, reader=READER)
    assert again.ser == state.next_ser  # the next ser: none reused, none skipped

    with h.terminal("Shop") as (_, store):
        taken = list(store.pending())
    with h.bank() as bank:
        receipt = h.deposit("Shop", bank)
    assert [r["status"] for r in receipt["results"]] == ["accepted"] * len(taken)
    final = h.card(card).load()
    assert sorted(p.ser for p in taken) == list(range(final.next_ser))
    assert LOAD - final.balance == sum(p.amount for p in taken)
    with h.bank() as bank, bank.store.transaction() as tx:
        merchant = [a for a in tx.list_accounts() if a.id.startswith("merchant:")]
    assert sum(a.balance for a in merchant) == LOAD - final.balance
    check_books(h)


@pytest.mark.parametrize(("k", "where"), cases(WITHDRAW_APDUS))
def test_withdrawal_torn(world: dict[str, Any], k: int, where: str) -> None:
    h: Home = world["home"]
    card = world["card"]

    def holder_balance() -> int:
        with h.bank() as bank, bank.store.transaction() as tx:
            return tx.get_account("holder:alice").balance

    before = holder_balance()
    with torn(h, card, k, where) as proc, h.bank() as bank:
        with pytest.raises((PcscError, Refused)):
            h.withdraw(None, bank, pin=PIN, amount=1000, renew=False, reader=READER)
        proc.wait(10)
    state = h.card(card).load()
    done = k == len(WITHDRAW_APDUS) or (
        WITHDRAW_APDUS[k - 1] == "WITHDRAW DONE" and where == "after"
    )
    assert state.balance == (LOAD + 1000 if done else LOAD)
    assert bool(state.pending_withdrawal) == (
        not done
        and k >= WITHDRAW_APDUS.index("WITHDRAW REQ") + 1
        and (where == "after" or WITHDRAW_APDUS[k - 1] != "WITHDRAW REQ")
    )

    # The holder looks at the card: a withdrawal is pending, or it did not start, or
    # it is complete. Only in the first two cases is it sent (again).
    with card_in_thread(h.card(card)), h.bank() as bank:
        if state.balance == LOAD:
            out = h.withdraw(None, bank, pin=PIN, amount=1000, renew=False, reader=READER)
            assert out.balance == LOAD + 1000
    final = h.card(card).load()
    assert final.balance == LOAD + 1000
    assert not final.pending_withdrawal
    assert holder_balance() == before - 1000  # debited exactly once
    check_books(h)
