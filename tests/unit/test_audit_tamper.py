"""The audit catches rows corrupted straight in the database, and passes an honest bank.

Each tampering test builds a bank on SQLite or PostgreSQL (a fresh schema), moves
money the ordinary way, then edits rows with SQL as an insider with database access
would, keeping the ledger balanced where the edit allows it, and asks for the
specific violation. The honest bank charges fees, changes them between deposits, and
has cash, cheque and credit cards, withdrawals (one refused) and a settlement run.
Migration 0006 (each payment's fee) is checked on both engines: from 0005, again, and
back, and a bank whose rows lost their fees (as before 0006) gets them back from its
ledger and audits clean.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from jointpay.home import Home
from jointpay.service.errors import Refused
from jointpay.storage.migrate import alembic_config
from jointpay.storage.sql import SqlStore, SqlUnitOfWork, make_engine
from jointpay.storage.tables import metadata
from pg import fresh_schema, schema_url
from worlds import PIN, Clock

DAY = 86_400


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | None]:
    """None: the home's own SQLite file; else a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield None
    else:
        with fresh_schema() as schema:
            yield schema_url(schema)


@pytest.fixture
def home(url: str | None, tmp_path: Path) -> Home:
    h = Home(tmp_path, url, Clock())
    h.init_bank(suite="secp256k1", group=None, currency="EUR", bank_id="test-bank")
    with h.bank() as bank:
        bank.open_account("alice", 50_000)
        bank.open_account("bob", 10_000)
        h.issue_card(
            bank, holder="alice", pin=PIN, load=20_000, mode="cash", limit=0, user_key="card"
        )
        h.open_merchant(bank, "Shop")
        h.open_merchant(bank, "Cafe")
    return h


def card_of(h: Home, holder: str, mode: str) -> str:
    with h.bank() as bank, bank.store.transaction() as tx:
        [card] = [c for c in tx.list_cards() if c.holder == holder and c.mode == mode]
        return card.card_number


def sql(h: Home, *statements: str, **params: Any) -> None:
    """Run ``statements`` on the bank's database, outside the bank's code."""
    with h.bank() as bank, bank.store.transaction() as tx:
        assert isinstance(tx, SqlUnitOfWork)
        for statement in statements:
            tx.c.execute(text(statement), params)


def violations(h: Home) -> list[str]:
    with h.bank() as bank:
        report = bank.audit()
    assert report.ok == (not report.violations)
    return report.violations


def deposit_with_fee(h: Home, fee: int = 5) -> dict[str, Any]:
    """Alice pays the shop 10.00 and 5.00, bob's cheque 3.00; all deposited at ``fee``."""
    with h.bank() as bank:
        bank.set_policy(payment_fee=fee)
        h.issue_card(bank, holder="bob", pin=PIN, load=0, mode="cheque", limit=0, user_key="card")
    cash, cheque = card_of(h, "alice", "cash"), card_of(h, "bob", "cheque")
    h.pay(cash, "Shop", 1_000, PIN)
    h.pay(cash, "Shop", 500, PIN)
    h.pay(cheque, "Shop", 300, PIN)
    with h.bank() as bank:
        receipt = h.deposit("Shop", bank)
        assert receipt["accepted"] == 3
        assert bank.audit().ok, bank.audit().violations
        return {
            "cash": cash,
            "cheque": cheque,
            "shop": bank.merchant("Shop"),
            "cafe": bank.merchant("Cafe"),
            "deposit": receipt["deposit_id"],
        }


# -- fees: merchants and income are checked whatever the policy says now ----------------
def test_a_merchant_leg_redirected_to_another_merchant_is_caught_with_fees(home: Home) -> None:
    s = deposit_with_fee(home)
    shop, cafe, posting = s["shop"].account_id, s["cafe"].account_id, f"deposit:{s['deposit']}"
    sql(
        home,
        "UPDATE accounts SET balance = balance - 1785 WHERE id = :shop",
        "UPDATE accounts SET balance = balance + 1785 WHERE id = :cafe",
        "UPDATE entries SET account_id = :cafe WHERE transfer_id = :t AND account_id = :shop",
        shop=shop,
        cafe=cafe,
        t=posting,
    )
    found = violations(home)
    assert (
        f"merchant {s['shop'].sid}: balance 0 (with clearing) but accepted payments less "
        "their fees total 1785"
    ) in found
    assert (
        f"merchant {s['cafe'].sid}: balance 1785 (with clearing) but accepted payments less "
        "their fees total 0"
    ) in found


def test_a_skimmed_fee_is_caught(home: Home) -> None:
    s = deposit_with_fee(home)
    shop, posting = s["shop"].account_id, f"deposit:{s['deposit']}"
    sql(
        home,
        "UPDATE entries SET amount = amount - 40 WHERE transfer_id = :t AND account_id = :shop",
        "UPDATE entries SET amount = amount + 40 WHERE transfer_id = :t"
        " AND account_id = 'bank:income:EUR'",
        "UPDATE accounts SET balance = balance - 40 WHERE id = :shop",
        "UPDATE accounts SET balance = balance + 40 WHERE id = 'bank:income:EUR'",
        shop=shop,
        t=posting,
    )
    found = violations(home)
    assert (
        f"merchant {s['shop'].sid}: balance 1745 (with clearing) but accepted payments less "
        "their fees total 1785"
    ) in found
    assert f"posting {posting}: fees 55 but its payments' recorded fees total 15" in found
    assert (
        "bank:income:EUR: payment fees booked 55 but the accepted payments' recorded fees total 15"
    ) in found


def test_a_deleted_cheque_payment_is_caught_and_so_is_its_second_payment(home: Home) -> None:
    """With the cheque's payment row gone, the same signed cheque is accepted again and
    the holder debited twice (the deposit finds no earlier record); the audit names the
    missing row at once, and the second debit after it."""
    s = deposit_with_fee(home)
    sql(home, "DELETE FROM payments WHERE card_number = :n", n=s["cheque"])
    found = violations(home)
    assert (
        "holder account holder:bob: cheques debited 300 but its cheque cards' accepted "
        "payments total 0"
    ) in found
    assert (
        f"merchant {s['shop'].sid}: balance 1785 (with clearing) but accepted payments less "
        "their fees total 1490"
    ) in found
    assert f"card {s['cheque']}: highest recorded ser 0 but no accepted payment" in found
    home.pay(s["cheque"], "Shop", 300, PIN)  # a new cheque (ser 1): honest
    with home.bank() as bank:
        assert home.deposit("Shop", bank)["accepted"] == 1
    found = violations(home)
    assert (
        "holder account holder:bob: cheques debited 600 but its cheque cards' accepted "
        "payments total 300"
    ) in found


def test_a_fee_set_back_to_zero_raises_no_false_alarm(home: Home) -> None:
    deposit_with_fee(home, fee=5)
    with home.bank() as bank:
        bank.set_policy(payment_fee=0)
    assert violations(home) == []


# -- cards, deposits and withdrawals ----------------------------------------------------
@pytest.mark.parametrize("seq", [0, 5])
def test_an_edited_card_seq_is_caught(home: Home, seq: int) -> None:
    card = card_of(home, "alice", "cash")
    sql(home, "UPDATE cards SET seq = :seq WHERE card_number = :n", seq=seq, n=card)
    assert violations(home) == [f"card {card}: seq {seq} but its last recorded withdrawal is seq 1"]


def test_a_deleted_refused_withdrawal_is_caught(home: Home) -> None:
    card = card_of(home, "alice", "cash")
    with home.bank() as bank, pytest.raises(Refused) as refused:
        home.withdraw(card, bank, pin=PIN, amount=1_000_000, renew=False)
    assert refused.value.code == "insufficient_funds"
    with home.bank() as bank:
        home.withdraw(card, bank, pin=PIN, amount=100, renew=False)  # seq 3
    assert violations(home) == []
    sql(home, "DELETE FROM withdrawals WHERE card_number = :n AND seq = 2", n=card)
    assert violations(home) == [f"card {card}: 2 withdrawals recorded for seq 1 to 3"]


def test_a_raised_highest_ser_is_caught(home: Home) -> None:
    s = deposit_with_fee(home)
    sql(home, "UPDATE cards SET highest_ser = '99' WHERE card_number = :n", n=s["cash"])
    assert violations(home) == [
        f"card {s['cash']}: highest recorded ser 99 but its highest accepted is 1"
    ]


def test_a_deleted_deposit_record_is_caught(home: Home) -> None:
    s = deposit_with_fee(home)
    sql(home, "DELETE FROM deposits WHERE deposit_id = :d", d=s["deposit"])
    found = violations(home)
    assert f"deposit {s['deposit']}: 3 accepted payments but no deposit record" in found
    assert (
        f"merchant {s['shop'].sid}: last deposit sequence 1 but its recorded deposits reach 0"
    ) in found


def test_an_edited_withdrawal_fee_is_caught(home: Home) -> None:
    card = card_of(home, "alice", "cash")
    sql(home, "UPDATE withdrawals SET fee = 999 WHERE card_number = :n", n=card)
    found = violations(home)
    assert (
        "bank:income:EUR: withdrawal fees booked 0 but the recorded withdrawals' fees total 999"
    ) in found
    assert (
        "holder account holder:alice: withdrawals debited 20000 but its cash cards' "
        "withdrawals and their fees total 20999"
    ) in found


def test_a_payment_amount_edited_with_the_ledger_moved_to_match_is_caught(home: Home) -> None:
    s = deposit_with_fee(home)
    cash, shop, posting = s["cash"], s["shop"], f"deposit:{s['deposit']}"
    sql(
        home,
        "UPDATE payments SET amount = 400 WHERE card_number = :n AND amount = 500",
        "UPDATE entries SET amount = amount + 100 WHERE transfer_id = :t AND account_id = :f",
        "UPDATE entries SET amount = amount - 100 WHERE transfer_id = :t AND account_id = :m",
        "UPDATE accounts SET balance = balance + 100 WHERE id = :f",
        "UPDATE accounts SET balance = balance - 100 WHERE id = :m",
        n=cash,
        t=posting,
        f=f"card:{cash}",
        m=shop.account_id,
    )
    assert violations(home) == [
        f"payment {cash}/1: its row says 400 EUR to {shop.sid}, its signed spec 500 EUR to "
        f"{shop.sid}"
    ]


def test_a_payment_moved_to_another_merchant_is_caught(home: Home) -> None:
    s = deposit_with_fee(home)
    sql(
        home,
        "UPDATE payments SET sid = :cafe WHERE card_number = :n",
        cafe=s["cafe"].sid,
        n=s["cash"],
    )
    found = violations(home)
    assert any(
        f.startswith(f"payment {s['cash']}/0: its row says 1000 EUR to {s['cafe'].sid}")
        for f in found
    )
    both = ", ".join(sorted([s["cafe"].sid, s["shop"].sid]))
    assert (
        f"deposit {s['deposit']} is recorded for {s['shop'].sid} but its payments are to {both}"
    ) in found


def test_a_payment_moved_to_another_card_is_caught(home: Home) -> None:
    """Alice's payment booked to bob's card, its float legs moved to match: the spec is
    untouched, but the CARD-CERT it names is alice's, not bob's."""
    s = deposit_with_fee(home)
    sql(
        home,
        "UPDATE payments SET card_number = :bob"
        " WHERE card_number = :alice AND ser = '00000000000000000001'",
        bob=s["cheque"],
        alice=s["cash"],
    )
    found = violations(home)
    assert f"payment {s['cheque']}/1: its CARD-CERT is card {s['cash']}'s" in found


@pytest.mark.parametrize("fee", [-10, 1_001])
def test_a_recorded_fee_below_zero_or_above_its_payment_is_caught(home: Home, fee: int) -> None:
    """With the ledger moved to match, a negative fee pays the merchant the bank's
    money, and one above the payment takes more than the payment was."""
    s = deposit_with_fee(home)
    shift = fee - 5
    sql(
        home,
        "UPDATE payments SET fee = :fee WHERE card_number = :n AND ser = '00000000000000000000'",
        "UPDATE entries SET amount = amount - :shift WHERE transfer_id = :t AND account_id = :shop",
        "UPDATE entries SET amount = amount + :shift WHERE transfer_id = :t"
        " AND account_id = 'bank:income:EUR'",
        "UPDATE accounts SET balance = balance - :shift WHERE id = :shop",
        "UPDATE accounts SET balance = balance + :shift WHERE id = 'bank:income:EUR'",
        fee=fee,
        shift=shift,
        n=s["cash"],
        shop=s["shop"].account_id,
        t=f"deposit:{s['deposit']}",
    )
    assert f"payments row {s['cash']}/0: fee {fee} outside [0, 1000]" in violations(home)


# -- currencies ---------------------------------------------------------------------------
def test_an_account_whose_currency_was_edited_is_caught(home: Home) -> None:
    s = deposit_with_fee(home)
    shop = s["shop"].account_id
    sql(home, "UPDATE accounts SET currency = 'USD' WHERE id = :a", a=shop)
    found = violations(home)
    assert f"account {shop} is in USD, not the bank's EUR" in found
    assert (
        f"transfer deposit:{s['deposit']}: its leg on {shop} is not in its transfer's and "
        "its account's currency"
    ) in found


def test_a_transfer_relabelled_in_another_currency_is_caught(home: Home) -> None:
    sql(
        home,
        "UPDATE entries SET currency = 'USD' WHERE transfer_id = 'open:holder:bob'",
        "UPDATE transfers SET currency = 'USD' WHERE id = 'open:holder:bob'",
    )
    assert violations(home) == [
        "transfer open:holder:bob: its leg on bank:equity:EUR is not in its transfer's and "
        "its account's currency",
        "transfer open:holder:bob: its leg on holder:bob is not in its transfer's and its "
        "account's currency",
    ]


def test_a_posting_of_a_kind_that_never_moves_income_is_caught(home: Home) -> None:
    sql(
        home,
        "INSERT INTO transfers (id, kind, currency, ref, created_at)"
        " VALUES ('gift', 'gift', 'EUR', '', 1)",
        "INSERT INTO entries (transfer_id, leg, account_id, amount, currency) VALUES"
        " ('gift', 0, 'bank:equity:EUR', -700, 'EUR'), ('gift', 1, 'bank:income:EUR', 700, 'EUR')",
        "UPDATE accounts SET balance = balance - 700 WHERE id = 'bank:equity:EUR'",
        "UPDATE accounts SET balance = balance + 700 WHERE id = 'bank:income:EUR'",
    )
    found = violations(home)
    assert (
        "account bank:equity:EUR: -700 posted by 'gift' transfers, which never move a "
        "equity account"
    ) in found
    assert (
        "account bank:income:EUR: 700 posted by 'gift' transfers, which never move a income account"
    ) in found


# -- an honest bank -------------------------------------------------------------------------
def test_an_honest_bank_with_fees_cheques_credit_and_withdrawals_audits_clean(
    home: Home,
) -> None:
    h = home
    clock: Clock = h.clock  # type: ignore[assignment]
    cash = card_of(h, "alice", "cash")
    with h.bank() as bank:
        bank.set_policy(
            payment_fee=5,
            withdrawal_fee=25,
            credit_fee_bp=200,
            credit_clearing_delay=DAY,
            credit_interest_bp=100,
            late_interest_bp=500,
            credit_period=30 * DAY,
            credit_grace=10 * DAY,
        )
        bank.open_account("carol", 5_000)
        h.issue_card(bank, holder="bob", pin=PIN, load=0, mode="cheque", limit=0, user_key="card")
        h.issue_card(
            bank, holder="carol", pin=PIN, load=0, mode="credit", limit=10_000, user_key="card"
        )
    cheque, credit = card_of(h, "bob", "cheque"), card_of(h, "carol", "credit")
    h.pay(cash, "Shop", 1_000, PIN)
    h.pay(cheque, "Shop", 300, PIN)
    h.pay(credit, "Shop", 6_000, PIN)
    h.pay(cash, "Cafe", 3, PIN)  # the fee is capped at the amount
    with h.bank() as bank:
        assert h.deposit("Shop", bank)["accepted"] == 3
        assert h.deposit("Cafe", bank)["accepted"] == 1
        assert bank.audit().ok, bank.audit().violations
        bank.set_policy(payment_fee=12, credit_fee_bp=0)  # the fees change
        h.withdraw(cash, bank, pin=PIN, amount=2_000, renew=False)  # a 0.25 fee
        with pytest.raises(Refused):
            h.withdraw(cash, bank, pin=PIN, amount=10**7, renew=False)  # recorded, refused
    h.pay(cash, "Shop", 700, PIN)
    h.pay(cheque, "Cafe", 200, PIN)
    with h.bank() as bank:
        assert h.deposit("Shop", bank)["accepted"] == 1
        assert h.deposit("Cafe", bank)["accepted"] == 1
        clock.now += DAY + 1
        bank.settle()  # the credit payment's clearing delay ran: released to the shop
        clock.now += 30 * DAY
        [statement] = bank.settle()["statements"]
        assert statement["interest"] == "0.60"
        bank.repay("carol", 3_000, ref="r-1")
        bank.repay("carol", 1_000, from_account=True)
        bank.set_policy(payment_fee=0)
        report = bank.audit()
    assert report.ok, report.violations
    assert report.figures["payments"] == 6
    # 5 + 5 + 5 + 120 (2 % of 60.00) + 3, then 12 + 12; 25 for the withdrawal; 60 interest
    assert report.figures["income"] == "2.47"


# -- migration 0006 -------------------------------------------------------------------------
def sql_url(url: str | None, tmp_path: Path) -> str:
    return url if url is not None else f"sqlite:///{tmp_path / 'bank.db'}"


def test_0006_adds_the_fees_from_the_ledger_again_and_back(url: str | None, tmp_path: Path) -> None:
    """From 0005: a deposit whose posting booked 7.00 of fees over payments of 0.02, 1.00
    and 1.00 gets fees 2, 3 and 2 (an even share, capped at the amount); another bank's
    payment of a deposit that booked 4 gets 4; a deposit without fee income keeps 0.
    Upgrading again changes nothing; downgrading removes the columns."""
    engine = make_engine(sql_url(url, tmp_path))
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0005")
        conn.execute(
            text(
                "INSERT INTO accounts (id, kind, currency, owner, balance, created_at,"
                " allow_negative) VALUES ('bank:income:EUR', 'income', 'EUR', 'b', 11, 1,"
                " false), ('x', 'merchant', 'EUR', 'b', -11, 1, true)"
            )
        )
        for tid, fee in (("deposit:SP1:1", 7), ("deposit:SP1:2", 4), ("deposit:SP1:3", 0)):
            conn.execute(
                text(
                    "INSERT INTO transfers (id, kind, currency, ref, created_at)"
                    " VALUES (:t, 'deposit', 'EUR', '', 1)"
                ),
                {"t": tid},
            )
            conn.execute(
                text(
                    "INSERT INTO entries (transfer_id, leg, account_id, amount, currency)"
                    " VALUES (:t, 0, 'bank:income:EUR', :f, 'EUR'), (:t, 1, 'x', :m, 'EUR')"
                ),
                {"t": tid, "f": fee, "m": -fee},
            )
        for ser, amount, dep in (
            (0, 2, "SP1:1"),
            (1, 100, "SP1:1"),
            (2, 100, "SP1:1"),
            (3, 50, "SP1:3"),
        ):
            conn.execute(
                text(
                    "INSERT INTO payments (card_number, ser, cert_id, sid, amount, currency,"
                    " spec, b, r, deposit_id, accepted_at) VALUES ('4000000000000002', :s,"
                    " :c, 'SP1', :a, 'EUR', :x, :x, :x, :d, 1)"
                ),
                {"s": f"{ser:020d}", "c": b"c" * 16, "a": amount, "x": b"x", "d": dep},
            )
        conn.execute(
            text(
                "INSERT INTO interbank (issuer, card_number, ser, acquirer, clearing_house,"
                " sid, amount, currency, spec, ref, accepted_at) VALUES ('other',"
                " '4000000000000010', :s, 'test-bank', 'ch', 'SP1', 250, 'EUR', :x,"
                " 'SP1:2', 1)"
            ),
            {"s": f"{0:020d}", "x": b"x"},
        )
    for _ in range(2):  # the second run finds the fees in place
        store = SqlStore(sql_url(url, tmp_path))
        try:
            with store.transaction() as tx:
                assert isinstance(tx, SqlUnitOfWork)
                fees = tx.c.execute(text("SELECT ser, fee FROM payments ORDER BY ser")).all()
                assert [(int(s), f) for s, f in fees] == [(0, 2), (1, 3), (2, 2), (3, 0)]
                assert tx.c.execute(text("SELECT fee FROM interbank")).scalar() == 4
                context = MigrationContext.configure(tx.c, opts={"compare_type": True})
                assert compare_metadata(context, metadata) == []
        finally:
            store.close()
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0005")
        for table in ("payments", "interbank"):
            assert "fee" not in {c["name"] for c in inspect(conn).get_columns(table)}
        assert conn.execute(text("SELECT COUNT(*) FROM payments")).scalar() == 4
    engine.dispose()


def test_a_bank_upgraded_from_0005_gets_its_fees_back_and_audits_clean(
    home: Home, url: str | None, tmp_path: Path
) -> None:
    """A bank that charged fees (changed between two deposits) as 0005 would have kept
    it: no fee on its rows. Opened at 0006 it has them again, from its ledger."""
    deposit_with_fee(home, fee=5)
    with home.bank() as bank:
        bank.set_policy(payment_fee=9)
    cash = card_of(home, "alice", "cash")
    home.pay(cash, "Cafe", 400, PIN)
    with home.bank() as bank:
        home.deposit("Cafe", bank)
        bank.set_policy(payment_fee=0)
    engine = make_engine(sql_url(url, tmp_path))
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0005")
    engine.dispose()
    assert violations(home) == []  # opening the bank upgrades it
    with home.bank() as bank, bank.store.transaction() as tx:
        assert isinstance(tx, SqlUnitOfWork)
        assert tx.c.execute(text("SELECT SUM(fee) FROM payments")).scalar() == 5 * 3 + 9


# -- across banks (the scheme's world: two banks and a house, on SQLite) ------------------
def test_fees_on_another_banks_cards_are_recorded_and_checked(tmp_path: Path) -> None:
    """bank-a charges its fee on bank-b's card at its merchant and keeps it with the
    interbank record; bank-b books the payment its card made through the house (no
    fee there). Both audit clean, also once bank-a stops charging; bank-a's record
    whose fee was zeroed is named."""
    from scheme_world import scheme

    w = scheme(tmp_path)
    w.a.set_policy(payment_fee=7)
    w.b.set_policy(payment_fee=3)
    w.ha.pay(w.card, "Shop", 1_000, PIN)
    assert w.ha.deposit("Shop", w.a)["accepted"] == 1
    w.a.set_policy(payment_fee=0)
    assert w.audits_ok()
    assert w.a.account(w.a.merchant("Shop").account_id).balance == 993
    with w.a.store.transaction() as tx:
        assert isinstance(tx, SqlUnitOfWork)
        [(fee, ref)] = tx.c.execute(text("SELECT fee, ref FROM interbank")).all()
        assert fee == 7
        tx.c.execute(text("UPDATE interbank SET fee = 0"))
    found = w.a.audit().violations
    assert f"posting deposit:{ref}: fees 7 but its payments' recorded fees total 0" in found
    assert (
        f"merchant {w.a.merchant('Shop').sid}: balance 993 (with clearing) but accepted "
        "payments less their fees total 1000"
    ) in found
