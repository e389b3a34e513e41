"""``jointpay demo``: the whole lifecycle, cash, credit, cheque and a second bank, told
step by step.

A fresh embedded bank in a temporary home; every step states what should happen,
does it through the same code the commands use, and checks that it did. The demo
exits 0 only if every step behaved.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from jointpay.cli.output import Output, readable, styled
from jointpay.domain.money import format_amount, parse_amount
from jointpay.home import Home
from jointpay.protocol.terminal import PaymentDeclined
from jointpay.service.bank import Bank
from jointpay.service.errors import BadInput, Refused


class _Story:
    def __init__(self, out: Output) -> None:
        self.out = out
        self.console: Console = out.console
        self.steps: list[dict[str, Any]] = []

    def say(self, text: str | Text) -> None:
        if not self.out.as_json:
            self.console.print(text)

    def step(self, title: str, action: Callable[[], str]) -> bool:
        n = len(self.steps) + 1
        self.say(styled("\n", (f"{n:2d}. {title}", "bold cyan")))
        try:
            detail = action()
            ok = True
        except _Unexpected as exc:
            detail, ok = str(exc), False
        except (Refused, PaymentDeclined) as exc:
            detail, ok = f"unexpected refusal: {exc}", False
        self.say(styled("    ", ("✓", "green") if ok else ("✗", "red"), f" {detail}"))
        self.steps.append({"step": title, "ok": ok, "detail": detail})
        return ok


class _Unexpected(Exception):
    pass


def _expect(cond: bool, message: str) -> None:
    if not cond:
        raise _Unexpected(message)


def run_demo(out: Output, *, suite: str, home: Path | None) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="jointpay-demo-")) if home is None else home
    if home is not None and root.exists() and any(root.iterdir()):
        raise BadInput(
            "exists",
            f"{root} is not empty: the demo needs an empty folder (--home or JOINTPAY_HOME), "
            "or neither for a temporary one",
        )
    h = Home(root, None)
    story = _Story(out)
    try:
        return _run(story, h, suite)
    finally:
        if home is None:
            shutil.rmtree(root, ignore_errors=True)


def _run(story: _Story, h: Home, suite: str) -> dict[str, Any]:
    cur = "EUR"
    eur: Callable[[str], int] = lambda s: parse_amount(s, cur)  # noqa: E731
    fmt: Callable[[int], str] = lambda m: f"{format_amount(m, cur)} {cur}"  # noqa: E731
    st: dict[str, Any] = {}
    story.say(
        styled(
            ("jointpay demo", "bold"),
            f" — a bank, cards and merchants in {h.root}\n"
            "Payments are signed by the card under the sum of two secrets: S_U, made "
            "on the card, and S_C, chosen by the bank. Nobody but the card knows both.",
        )
    )

    def init() -> str:
        params = h.init_bank(suite=suite, group=None, currency=cur, bank_id="demo-bank")
        return f"bank {params['bank_id']} on {params['suite']}, key {params['public_key'][:16]}…"

    if not story.step("The bank publishes its parameters and key", init):
        return _finish(story, h, st)
    with h.bank() as bank:
        _lifecycle(story, h, bank, eur, fmt, st)
        _variants(story, h, bank, eur, fmt, st)
        _second_bank(story, h, bank, suite, eur, fmt)
        _audit(story, bank)
    return _finish(story, h, st)


def _lifecycle(
    story: _Story,
    h: Home,
    bank: Bank,
    eur: Callable[[str], int],
    fmt: Callable[[int], str],
    st: dict[str, Any],
) -> None:
    pin = "2468"

    def accounts() -> str:
        bank.open_account("alice", eur("500.00"))
        bank.open_account("bob", eur("80.00"))
        return "alice has 500.00 EUR and bob 80.00 EUR in ordinary accounts"

    story.step("Two holders open bank accounts", accounts)

    def issue() -> str:
        a = h.issue_card(
            bank, holder="alice", pin=pin, load=eur("200.00"), mode="cash", limit=0, user_key="card"
        )
        b = h.issue_card(
            bank,
            holder="bob",
            pin="1357",
            load=eur("50.00"),
            mode="cash",
            limit=0,
            user_key="split",
            choice=3,
        )
        st["alice"], st["bob"] = a.card_number, b.card_number
        _expect(a.balance == eur("200.00"), f"alice's card holds {fmt(a.balance)}")
        _expect(bank.account("holder:alice").balance == eur("300.00"), "alice's account")
        return (
            f"alice's card {a.card_number} holds {fmt(a.balance)} (S_U made by the card); "
            f"bob's card {b.card_number} holds {fmt(b.balance)} (S_U from the card's "
            f"generator plus the key bob picked at the trusted terminal)"
        )

    if not story.step("The bank issues two cards (FIG. 4), loading them from the accounts", issue):
        return

    def merchants() -> str:
        shop = h.open_merchant(bank, "Corner Shop")
        books = h.open_merchant(bank, "Book Store")
        return (
            f"Corner Shop is {shop.sid}, Book Store is {books.sid}; each terminal holds a "
            f"MERCHANT-CERT the cards check before they sign"
        )

    story.step("Two service providers open deposit accounts (FIG. 3)", merchants)

    def payments() -> str:
        p1 = h.pay(st["alice"], "Corner Shop", eur("12.50"), pin)
        p2 = h.pay(st["alice"], "Book Store", eur("30.00"), pin)
        p3 = h.pay(st["alice"], "Corner Shop", eur("4.20"), pin)
        p4 = h.pay(st["bob"], "Corner Shop", eur("7.00"), "1357")
        _expect([p1.ser, p2.ser, p3.ser, p4.ser] == [0, 1, 2, 0], "ser must count per card")
        return (
            f"four PAYMENT-CERTs, verified offline by the terminals; alice's ser# 0-2, "
            f"b = {p1.b.hex()[:12]}…, r = {p1.r.hex()[:12]}…"
        )

    story.step("Alice and Bob pay offline; no bank is contacted (FIG. 7, 8)", payments)

    def wrong_pin() -> str:
        try:
            h.pay(st["alice"], "Corner Shop", eur("1.00"), "0000")
        except PaymentDeclined as exc:
            _expect(exc.code == "wrong_pin", f"declined with {exc.code}")
            return f"declined: {exc}"
        raise _Unexpected("a wrong PIN was accepted")

    story.step("A wrong PIN is declined by the card, which counts the try", wrong_pin)

    def hot_list() -> str:
        bank.blacklist(st["bob"], "lost")
        h.sync_hotlist("Book Store", bank)
        try:
            h.pay(st["bob"], "Book Store", eur("3.00"), "1357")
        except PaymentDeclined as exc:
            _expect(exc.code == "blacklisted", f"declined with {exc.code}")
            return f"bob reports his card lost; after a hot-list sync the terminal declines: {exc}"
        raise _Unexpected("a hot-listed card was accepted")

    story.step("A hot-listed card is refused", hot_list)

    def deposit() -> str:
        st["batch"] = h.export_batch("Corner Shop")
        r = h.deposit("Corner Shop", bank, st["batch"])
        _expect(
            r["accepted"] == 3 and r["rejected"] == 0, f"receipt {r['accepted']}/{r['rejected']}"
        )
        bal = bank.merchant("Corner Shop")
        acc = bank.account(bal.account_id)
        return (
            f"Corner Shop deposits 3 payments in one signed batch; the bank verifies each "
            f"again and credits {fmt(acc.balance)} (bob's was made before he reported the "
            f"card lost)"
        )

    story.step("Corner Shop deposits its batch (FIG. 9)", deposit)

    def double_deposit() -> str:
        r = h.deposit("Corner Shop", bank, st["batch"])
        reasons = {x["reason"] for x in r["results"]}
        _expect(r["accepted"] == 0 and reasons == {"duplicate"}, f"reasons {reasons}")
        return "the same batch file again: every payment is reported duplicate, nothing moves"

    story.step("Depositing the same batch twice credits it once", double_deposit)

    def withdraw() -> str:
        res = h.withdraw(st["alice"], bank, pin=pin, amount=eur("100.00"), renew=True)
        _expect(res.balance == eur("253.30"), f"card balance {fmt(res.balance)}")
        _expect(res.renewed, "the CARD-CERT should have been renewed")
        return (
            f"alice tops up 100.00 EUR: the card signs a request with seq# {res.seq}, the "
            f"bank checks it, compares balances and acknowledges; card balance "
            f"{fmt(res.balance)}, CARD-CERT renewed"
        )

    story.step("Alice withdraws onto her card and renews its certificate (FIG. 10)", withdraw)

    def clone() -> str:
        card = h.card(st["alice"])
        snapshot = card.path.read_bytes()
        first = h.pay(st["alice"], "Book Store", eur("20.00"), pin)
        card.path.write_bytes(snapshot)  # the attacker restores the old card state...
        second = h.pay(st["alice"], "Corner Shop", eur("20.00"), pin)  # ...and spends again
        _expect(first.ser == second.ser, "the clone should reuse the ser")
        h.deposit("Book Store", bank)
        r = h.deposit("Corner Shop", bank)
        _expect(r["results"][0]["reason"] == "duplicate", "the second spend must be refused")
        alerts = bank.alerts()
        _expect(any(a.kind == "double_spend" for a in alerts), "no breach alert")
        _expect(bank.card(st["alice"]).status.value == "blacklisted", "card not hot-listed")
        return (
            f"a restored card signs ser# {first.ser} twice with different specs; the first "
            f"deposit is credited, the second is refused as duplicate, kept as evidence, "
            f"and the card goes on the hot list at once"
        )

    story.step("A cloned card's second spend is caught and the card hot-listed", clone)


def _variants(
    story: _Story,
    h: Home,
    bank: Bank,
    eur: Callable[[str], int],
    fmt: Callable[[int], str],
    st: dict[str, Any],
) -> None:
    """Credit, cheque and a price in another currency, on the same ledger."""
    pin = "8642"
    # A billing period of zero, so that the demo can bill at once; 1.5 % per purchase.
    bank.set_policy(credit_period=0, credit_interest_bp=150)

    def credit_card() -> str:
        bank.open_account("carol", 0)
        c = h.issue_card(
            bank,
            holder="carol",
            pin=pin,
            load=0,
            mode="credit",
            limit=eur("300.00"),
            user_key="card",
        )
        st["carol"] = c.card_number
        _expect(c.balance == eur("300.00"), f"the card's limit is {fmt(c.balance)}")
        _expect(bank.account(f"card:{c.card_number}").balance == 0, "no money may move")
        return (
            f"carol's card {c.card_number} carries a C_balance of {fmt(c.balance)}: a credit "
            f"limit written by the FIG. 10 exchange; no money moved"
        )

    story.step("Carol gets a credit card: a limit, not stored value", credit_card)

    def credit_pay() -> str:
        p = h.pay(st["carol"], "Book Store", eur("120.00"), pin)
        r = h.deposit("Book Store", bank)
        _expect(r["accepted"] == 1, f"receipt {r['accepted']}/{r['rejected']}")
        owed = -bank.account(f"card:{st['carol']}").balance
        return (
            f"the terminal clears the credit payment on-line (the default for credit cards); "
            f"at deposit the bank pays Book Store and books {fmt(owed)} against carol "
            f"(ser# {p.ser})"
        )

    story.step("Carol pays on credit; the bank pays the merchant", credit_pay)

    def settle() -> str:
        time.sleep(1.05)  # billing periods are whole seconds: let this one end
        [statement] = bank.settle()["statements"]
        paid = bank.repay("carol", eur(statement["balance_due"]), ref="transfer-42")
        _expect(paid["owed"] == {st["carol"]: "0.00"}, f"still owed {paid['owed']}")
        p = h.pay(st["carol"], "Corner Shop", eur("250.00"), pin)  # the line is restored
        left = h.card(st["carol"]).load().balance
        _expect(left == eur("50.00"), f"card left with {fmt(left)}")
        return (
            f"statement 1: {statement['charges']} + {statement['interest']} interest = "
            f"{statement['balance_due']} EUR; carol pays by transfer; at her next purchase "
            f"({fmt(p.amount)}, more than the 180.00 left) the merchant's terminal carries "
            f"the card's request on-line and the bank restores the line"
        )

    story.step("Monthly settlement, a repayment, and the limit restored on-line", settle)

    def cheques() -> str:
        bank.open_account("dave", eur("50.00"))
        d = h.issue_card(
            bank, holder="dave", pin=pin, load=0, mode="cheque", limit=0, user_key="card"
        )
        h.pay(d.card_number, "Book Store", eur("40.00"), pin)
        h.pay(d.card_number, "Book Store", eur("30.00"), pin)
        r = h.deposit("Book Store", bank)
        reasons = [x["reason"] for x in r["results"]]
        _expect(reasons == [None, "insufficient_funds"], f"reasons {reasons}")
        return (
            "dave's cheque card signs two cheques offline; at deposit the first is paid "
            "from his account, the second bounces (insufficient_funds) and is recorded"
        )

    story.step("Dave pays by cheque; one bounces", cheques)

    def foreign() -> str:
        from jointpay.domain.money import parse_rate

        bank.set_rate("USD", parse_rate("0.92"), bank.clock() - 60)
        p = h.pay(st["carol"], "Corner Shop", "25.00", pin, price_currency="USD")
        r = h.deposit("Corner Shop", bank)
        _expect(r["accepted"] == 2, f"receipt {r['accepted']}/{r['rejected']}")
        return (
            f"a price of 25.00 USD: the card signs {fmt(p.amount)} with the rate in the spec; "
            f"the bank checks the rate against its published table at deposit"
        )

    story.step("A price in another currency, converted at the bank's rate", foreign)


def _second_bank(
    story: _Story,
    h: Home,
    bank: Bank,
    suite: str,
    eur: Callable[[str], int],
    fmt: Callable[[int], str],
) -> None:
    """A card of another bank, at a merchant registered with both (the patent's first
    routing between banks; the other goes through a clearing house, docs/variants.md)."""

    def cross_bank() -> str:
        url = f"sqlite:///{h.root / 'second-bank.db'}"
        hb = Home(h.root, url, h.clock)
        hb.init_bank(suite=suite, group=None, currency="EUR", bank_id="second-bank")
        with hb.bank() as other:
            other.open_account("erin", eur("100.00"))
            erin = hb.issue_card(
                other,
                holder="erin",
                pin="1122",
                load=eur("60.00"),
                mode="cash",
                limit=0,
                user_key="card",
            ).card_number
            key = bytes.fromhex(h.merchant_key("Corner Shop")["public_key"])
            _, cert = other.open_merchant("Corner Shop", key)
            reg = h.add_bank("Corner Shop", other, cert, url)
        p = h.pay(erin, "Corner Shop", eur("15.00"), "1122")
        receipts = h.deposit_everywhere("Corner Shop", bank)
        parts = {r["bank_id"]: r["accepted"] for r in receipts}
        _expect(parts == {"demo-bank": 0, "second-bank": 1}, f"deposits {parts}")
        with hb.bank() as other:
            got = other.account(other.merchant("Corner Shop").account_id).balance
            _expect(got == p.amount, f"second-bank credited {fmt(got)}")
            report = other.audit()
            _expect(report.ok, "; ".join(report.violations))
        return (
            f"Corner Shop also opens an account at second-bank (S_id {reg.sid}, a "
            f"MERCHANT-CERT for the same terminal key); erin's card of second-bank pays "
            f"{fmt(p.amount)} under that S_id, and the terminal sorts its payments by bank: "
            f"the deposit sends this one to second-bank, which credits {fmt(got)}"
        )

    story.step("A card of another bank, at a merchant registered with both banks", cross_bank)


def _audit(story: _Story, bank: Bank) -> None:
    def audit() -> str:
        report = bank.audit()
        _expect(report.ok, "; ".join(report.violations))
        return f"every invariant holds: {readable(report.figures)}"

    story.step("The auditor checks the books", audit)


def _finish(story: _Story, h: Home, st: dict[str, Any]) -> dict[str, Any]:
    ok = bool(story.steps) and all(s["ok"] for s in story.steps)
    ledger: list[dict[str, str]] = []
    try:
        with h.bank() as bank, bank.store.transaction() as tx:
            for acc in tx.list_accounts():
                ledger.append(
                    {
                        "account": acc.id,
                        "owner": acc.owner,
                        "balance": format_amount(acc.balance, acc.currency),
                        "currency": acc.currency,
                    }
                )
    except Exception as exc:
        story.say(styled((f"cannot read the ledger: {exc}", "red")))
        ok = False
    if not story.out.as_json:
        t = Table("account", "owner", "balance", title="The ledger")
        for row in ledger:
            t.add_row(row["account"], row["owner"], f"{row['balance']} {row['currency']}")
        story.console.print()
        story.console.print(t)
    return {
        "ok": ok,
        "steps": story.steps,
        "ledger": ledger,
        "cards": {k: v for k, v in st.items() if k in ("alice", "bob", "carol")},
    }
