"""Credit cards' statements and repayments on every backend: what a statement asks is
as of its period's end, late interest is on what was not repaid by the due date, a
repayment pays what falls due first, and concurrent runs and repayments neither
misallocate nor deadlock (PostgreSQL; memory and SQLite run one transaction at a time).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from jointpay.domain.records import Transfer
from jointpay.home import Home
from jointpay.service.policy import DAY
from jointpay.storage import memory as memory_module
from jointpay.storage import sql as sql_module
from worlds import PIN


def _credit_cards(h: Home, holder: str, count: int, limit: int = 20_000) -> list[str]:
    """``count`` credit cards of a new holder (with an empty account), by card number."""
    with h.bank() as bank:
        bank.open_account(holder, 0)
        cards = [
            h.issue_card(
                bank, holder=holder, pin=PIN, load=0, mode="credit", limit=limit, user_key="card"
            ).card_number
            for _ in range(count)
        ]
    return sorted(cards)


def _first_paid_before(h: Home, holder: str) -> tuple[str, str]:
    """Two credit cards of a new holder, ``(early, late)``: ``early`` has the lower card
    number and was issued first, so that a repayment spread by card number (SQL) or in
    the order of issue (the memory store's order of cards) paid it first. (Card
    numbers are random: cards are issued until one is above an earlier one; those in
    between owe nothing.)"""
    [early] = _credit_cards(h, holder, 1)
    with h.bank() as bank:
        for _ in range(12):  # all of them below the one before: 1 in 12!
            late = h.issue_card(
                bank, holder=holder, pin=PIN, load=0, mode="credit", limit=20_000, user_key="card"
            ).card_number
            if late > early:
                return early, late
            early = late
    raise AssertionError("twelve card numbers in descending order")


def _spend(h: Home, card: str, amount: int) -> None:
    """The card pays the shop, and the shop deposits it at once."""
    assert h.pay(card, "Shop", amount, PIN).amount == amount
    with h.bank() as bank:
        receipt = h.deposit("Shop", bank)
    assert [r["status"] for r in receipt["results"]] == ["accepted"]


def _statement_figures(st: dict[str, Any], t0: int) -> tuple[Any, ...]:
    """(number, period end in days after t0, charges, interest, late interest, due)."""
    return (
        st["number"],
        (st["period_end"] - t0) / DAY,
        st["charges"],
        st["interest"],
        st["late_interest"],
        st["balance_due"],
    )


def _pause_posting(
    monkeypatch: pytest.MonkeyPatch, kind: str, *, after: bool = False
) -> tuple[threading.Event, threading.Event]:
    """The first transfer of ``kind`` posted on any backend waits, before its posting
    (or just after it, holding its locks), until the test lets it go: returns (reached,
    go)."""
    reached, go = threading.Event(), threading.Event()
    first = threading.Lock()

    def wrap(real: Callable[[Any, Transfer], None]) -> Callable[[Any, Transfer], None]:
        def post(self: Any, transfer: Transfer) -> None:
            pause = transfer.kind == kind and first.acquire(blocking=False)
            if after:
                real(self, transfer)
            if pause:
                reached.set()
                go.wait(30)
            if not after:
                real(self, transfer)

        return post

    for cls in (memory_module.MemoryUnitOfWork, sql_module.SqlUnitOfWork):
        monkeypatch.setattr(cls, "post", wrap(cls.post))
    return reached, go


def _race(
    first: Callable[[], Any],
    second: Callable[[], Any],
    reached: threading.Event,
    go: threading.Event,
) -> dict[str, Any]:
    """Run ``first`` until it reaches its pause, then ``second`` (which may wait for it),
    then let ``first`` go on; what each returned, or the exception it raised."""
    out: dict[str, Any] = {}

    def run(name: str, work: Callable[[], Any]) -> None:
        try:
            out[name] = work()
        except Exception as exc:  # the test compares it: a deadlock, a raw storage error
            out[name] = repr(exc)

    one = threading.Thread(target=run, args=("first", first))
    one.start()
    assert reached.wait(30)
    two = threading.Thread(target=run, args=("second", second))
    two.start()
    two.join(0.5)  # on PostgreSQL it waits for the first's locks (it did not, before)
    go.set()
    one.join(30)
    two.join(30)
    return out


# -- late interest ----------------------------------------------------------------------
@pytest.mark.parametrize("paid", ["on time", "late", "never"])
def test_late_interest_is_on_what_was_not_repaid_by_the_due_date(
    world: dict[str, Any], paid: str
) -> None:
    """Statement 1 asks 60.00, due 10 days later. Repaid 5 days after it: no late
    interest. Repaid 25 days after it (15 days late): 5 % late interest, as if never
    paid by then (there was none before: every repayment up to the next run counted)."""
    h, clock = world["home"], world["clock"]
    with h.bank() as bank:
        bank.set_policy(late_interest_bp=500, credit_period=30 * DAY, credit_grace=10 * DAY)
    [card] = _credit_cards(h, "carol", 1)
    t0 = clock.now
    _spend(h, card, 6_000)
    with h.bank() as bank:
        clock.now = t0 + 30 * DAY
        [st1] = bank.settle()["statements"]
        assert _statement_figures(st1, t0) == (1, 30, "60.00", "0.00", "0.00", "60.00")
        assert st1["due_at"] == t0 + 40 * DAY
        if paid != "never":
            clock.now = t0 + (35 if paid == "on time" else 55) * DAY
            bank.repay("carol", 6_000, ref="cheque-1")
        clock.now = t0 + 60 * DAY
        statements = bank.settle()["statements"]
        if paid == "on time":
            assert statements == []  # nothing late, nothing owed
        else:
            [st2] = statements
            due = "3.00" if paid == "late" else "63.00"
            assert _statement_figures(st2, t0) == (2, 60, "0.00", "0.00", "3.00", due)
        assert bank.audit().ok


def test_a_repayment_between_the_period_end_and_the_run_is_counted_once(
    world: dict[str, Any],
) -> None:
    """Owed 100.00 at the period's end (day 30); 60.00 repaid on day 31; the run on
    day 32 until day 30. Statement 1 asks the 100.00 owed on day 30 (it asked 40.00,
    the balance at the run), and statement 2 charges late interest on the 40.00 not
    repaid by the due date (none before: the 60.00 was taken off twice)."""
    h, clock = world["home"], world["clock"]
    with h.bank() as bank:
        bank.set_policy(late_interest_bp=500, credit_period=30 * DAY, credit_grace=10 * DAY)
    [card] = _credit_cards(h, "carol", 1)
    t0 = clock.now
    _spend(h, card, 10_000)
    with h.bank() as bank:
        clock.now = t0 + 31 * DAY
        bank.repay("carol", 6_000, ref="day-31")
        clock.now = t0 + 32 * DAY
        [st1] = bank.settle(until=t0 + 30 * DAY)["statements"]
        assert _statement_figures(st1, t0) == (1, 30, "100.00", "0.00", "0.00", "100.00")
        clock.now = t0 + 60 * DAY
        [st2] = bank.settle()["statements"]
        assert _statement_figures(st2, t0) == (2, 60, "0.00", "0.00", "2.00", "42.00")
        assert bank.account(f"card:{card}").balance == -4_200
        assert bank.audit().ok


def test_late_interest_is_charged_when_the_grace_is_longer_than_the_period(
    world: dict[str, Any],
) -> None:
    """credit_grace 40 days, credit_period 30, a run every day, nothing ever repaid.
    Each statement was drawn before the previous one fell due, and late interest was
    never charged. Now a statement waits for the previous one's due date: statement 2
    on day 71 (statement 1 fell due on day 70), statement 3 on day 112."""
    h, clock = world["home"], world["clock"]
    with h.bank() as bank:
        bank.set_policy(late_interest_bp=500, credit_period=30 * DAY, credit_grace=40 * DAY)
    [card] = _credit_cards(h, "carol", 1)
    t0 = clock.now
    _spend(h, card, 6_000)
    drawn = []
    with h.bank() as bank:
        for day in range(1, 121):
            clock.now = t0 + day * DAY
            drawn += bank.settle()["statements"]
        assert [_statement_figures(st, t0) for st in drawn] == [
            (1, 30, "60.00", "0.00", "0.00", "60.00"),
            (2, 71, "0.00", "0.00", "3.00", "63.00"),
            (3, 112, "0.00", "0.00", "3.15", "66.15"),
        ]
        assert bank.audit().ok


# -- what a statement asks ----------------------------------------------------------------
@pytest.mark.parametrize(
    "run", ["until the period's end, an hour later", "in the second of a deposit"]
)
def test_statements_reconcile_with_a_payment_after_the_period_end(
    world: dict[str, Any], run: str
) -> None:
    """A payment accepted after the period's end (a run with ``until`` after the end,
    or a deposit in the run's own second) is on the next statement only: each
    statement asks the previous one's balance due plus its charges and interest, less
    what was repaid. Before, statement 1 asked it too (80.60: the balance at the run)."""
    h, clock = world["home"], world["clock"]
    with h.bank() as bank:
        bank.set_policy(credit_interest_bp=100, credit_period=30 * DAY, credit_grace=10 * DAY)
    [card] = _credit_cards(h, "carol", 1)
    t0 = clock.now
    _spend(h, card, 6_000)
    clock.now = t0 + 30 * DAY + (3_600 if run.startswith("until") else 0)
    _spend(h, card, 2_000)
    with h.bank() as bank:
        clock.now += 60
        [st1] = bank.settle(until=t0 + 30 * DAY)["statements"]
        assert _statement_figures(st1, t0) == (1, 30, "60.00", "0.60", "0.00", "60.60")
        clock.now = t0 + 35 * DAY
        bank.repay("carol", 1_000, ref="part")
        clock.now = t0 + 60 * DAY
        [st2] = bank.settle()["statements"]
        # 60.60 + 20.00 + 0.20 - 10.00 repaid
        assert _statement_figures(st2, t0) == (2, 60, "20.00", "0.20", "0.00", "70.80")
        assert bank.account(f"card:{card}").balance == -7_080
        assert bank.audit().ok


# -- repayments ---------------------------------------------------------------------------
def test_a_repayment_pays_a_statement_before_another_cards_unbilled_debt(
    world: dict[str, Any],
) -> None:
    """Card X's statement asks 60.00 by day 40; card Y bought for 20.00 on day 31 (no
    statement yet). The holder pays 60.00 on day 32: it pays X's statement, and X owes
    no late interest. By card number (Y's is lower), 20.00 of it went to Y, and X was
    charged 1.00 late interest on the 20.00 left."""
    h, clock = world["home"], world["clock"]
    with h.bank() as bank:
        bank.set_policy(late_interest_bp=500, credit_period=30 * DAY, credit_grace=10 * DAY)
    y, x = _first_paid_before(h, "carol")
    t0 = clock.now
    _spend(h, x, 6_000)
    with h.bank() as bank:
        clock.now = t0 + 30 * DAY
        [st] = bank.settle()["statements"]
        assert (st["card"], st["balance_due"]) == (x, "60.00")
    clock.now = t0 + 31 * DAY
    _spend(h, y, 2_000)
    with h.bank() as bank:
        clock.now = t0 + 32 * DAY
        owed = bank.repay("carol", 6_000, ref="x-statement")["owed"]
        assert (owed[x], owed[y]) == ("0.00", "20.00")
        clock.now = t0 + 60 * DAY
        [st_y] = bank.settle()["statements"]  # X: nothing late, nothing owed
        assert (st_y["card"], st_y["late_interest"], st_y["balance_due"]) == (y, "0.00", "20.00")
        assert bank.audit().ok


def test_a_repayment_pays_the_statement_due_first_first(world: dict[str, Any]) -> None:
    """Card E has a statement asking 60.00 by day 40, card L (a lower number) one
    asking 30.00 by day 45 (L bought on day 31, its first statement was drawn on day
    35). 70.00 paid on day 36 pays E's statement and 10.00 of L's. By card number it
    paid L's 30.00 first and left 20.00 of E's, which fell due first."""
    h, clock = world["home"], world["clock"]
    with h.bank() as bank:
        bank.set_policy(credit_period=30 * DAY, credit_grace=10 * DAY)
    t0 = clock.now
    low, high = _first_paid_before(h, "carol")
    _spend(h, high, 6_000)
    with h.bank() as bank:
        clock.now = t0 + 30 * DAY
        [st_e] = bank.settle()["statements"]  # L owes nothing yet: no statement
        assert (st_e["card"], st_e["balance_due"], st_e["due_at"]) == (
            high,
            "60.00",
            t0 + 40 * DAY,
        )
    clock.now = t0 + 31 * DAY
    _spend(h, low, 3_000)
    with h.bank() as bank:
        clock.now = t0 + 35 * DAY
        [st_l] = bank.settle()["statements"]
        assert (st_l["card"], st_l["balance_due"], st_l["due_at"]) == (
            low,
            "30.00",
            t0 + 45 * DAY,
        )
        clock.now = t0 + 36 * DAY
        owed = bank.repay("carol", 7_000, ref="r")["owed"]
        assert (owed[high], owed[low]) == ("0.00", "20.00")
        assert bank.audit().ok


# -- at the same time (PostgreSQL) ---------------------------------------------------------
def test_two_repayments_at_once_pay_both_cards(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two cheques of 30.00 booked at once for a holder whose two cards owe 30.00 each.
    Both read the debts before either posted, and both paid card A (A +30.00, B still
    -30.00). The debts are now read under the lock of the accounts: the second waits
    for the first and pays B."""
    h = world["home"]
    a, b = _credit_cards(h, "carol", 2)
    _spend(h, a, 3_000)
    _spend(h, b, 3_000)
    reached, go = _pause_posting(monkeypatch, "repay")
    with h.bank() as bank:
        out = _race(
            lambda: bank.repay("carol", 3_000, ref="cheque-1")["owed"],
            lambda: bank.repay("carol", 3_000, ref="cheque-2")["owed"],
            reached,
            go,
        )
        assert sorted(out["first"].values()) == ["0.00", "30.00"]  # one of them paid
        assert out["second"] == {a: "0.00", b: "0.00"}  # then the other
        assert (bank.account(f"card:{a}").balance, bank.account(f"card:{b}").balance) == (0, 0)
        assert bank.audit().ok


def test_two_settlement_runs_at_once_release_a_merchants_credits_once(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """30.00 in the shop's clearing account is due, 50.00 deposited since is not. Two
    runs at once both read 30.00 as due and both paid it out, the second out of the
    50.00 not due yet (and with nothing else waiting, its posting failed on a raw
    InsufficientFunds). The runs now queue on the bank's income account."""
    h, clock = world["home"], world["clock"]
    with h.bank() as bank:
        bank.set_policy(credit_clearing_delay=DAY)
        shop = bank.merchant("Shop")
    [card] = _credit_cards(h, "carol", 1)
    t0 = clock.now
    _spend(h, card, 3_000)
    clock.now = t0 + DAY
    _spend(h, card, 5_000)
    clock.now = t0 + DAY + 1
    reached, go = _pause_posting(monkeypatch, "release")
    with h.bank() as bank:
        out = _race(
            lambda: bank.settle()["released"], lambda: bank.settle()["released"], reached, go
        )
        assert out == {"first": {shop.sid: "30.00"}, "second": {}}
        assert bank.account(shop.account_id).balance == 3_000
        assert bank.account(f"merchant:{shop.sid}:clearing").balance == 5_000
        assert bank.audit().ok


def test_a_settlement_run_and_a_deposit_with_a_fee_do_not_deadlock(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run released the shop's credits (holding the shop's accounts), then posted a
    statement's interest to the bank's income, which a deposit with a fee to the shop
    held while it waited for the shop's accounts: PostgreSQL killed the deposit as a
    deadlock. The run now locks the income first, and the shop's accounts last."""
    h, clock, alice = world["home"], world["clock"], world["alice"]
    with h.bank() as bank:
        bank.set_policy(credit_clearing_delay=DAY, credit_interest_bp=100, payment_fee=5)
        shop = bank.merchant("Shop")
    [card] = _credit_cards(h, "carol", 1)
    t0 = clock.now
    _spend(h, card, 3_000)
    clock.now = t0 + 30 * DAY
    assert h.pay(alice, "Shop", 1_000, PIN).amount == 1_000
    reached, go = _pause_posting(monkeypatch, "interest")
    with h.bank() as bank:

        def deposit() -> list[str]:
            return [r["status"] for r in h.deposit("Shop", bank)["results"]]

        def settle() -> tuple[dict[str, str], list[str]]:
            run = bank.settle()
            return run["released"], [st["interest"] for st in run["statements"]]

        out = _race(settle, deposit, reached, go)
        assert out == {"first": ({shop.sid: "29.95"}, ["0.30"]), "second": ["accepted"]}
        assert bank.account(shop.account_id).balance == 2_995 + 995
        assert bank.audit().ok


def test_a_repayment_waits_for_a_deposit_of_the_holders_card_and_pays_its_debt(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deposit holds the card's credit account from its posting to its commit; a
    repayment at that moment waits for it (no deadlock), then sees the debt the deposit
    booked: card B's 30.00 (no statement yet), where it read B's debt as nothing."""
    h = world["home"]
    a, b = _credit_cards(h, "carol", 2)
    _spend(h, a, 1_000)
    assert h.pay(b, "Shop", 3_000, PIN).amount == 3_000
    reached, go = _pause_posting(monkeypatch, "deposit", after=True)
    with h.bank() as bank:
        out = _race(
            lambda: [r["status"] for r in h.deposit("Shop", bank)["results"]],
            lambda: bank.repay("carol", 4_000, ref="r")["owed"],
            reached,
            go,
        )
        assert out == {"first": ["accepted"], "second": {a: "0.00", b: "0.00"}}
        # before, B's debt was read as nothing and the 30.00 left over went to A
        assert (bank.account(f"card:{a}").balance, bank.account(f"card:{b}").balance) == (0, 0)
        assert bank.audit().ok


def test_a_repayment_with_the_longest_holder_and_reference_is_booked_once(
    world: dict[str, Any],
) -> None:
    """64 characters each made a transfer id of 135, past the column's 128: PostgreSQL
    refused it with a raw DataError (SQLite does not check widths). Named by digest."""
    from jointpay.service.errors import Refused

    h: Home = world["home"]
    holder, ref = "C" * 64, "R" * 64
    [card] = _credit_cards(h, holder, 1)
    _spend(h, card, 2_000)
    with h.bank() as bank:
        assert bank.repay(holder, 2_000, ref=ref)["owed"] == {card: "0.00"}
        with pytest.raises(Refused) as again:
            bank.repay(holder, 2_000, ref=ref)
        assert again.value.code == "duplicate"
        assert bank.account(f"card:{card}").balance == 0
