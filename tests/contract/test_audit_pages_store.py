"""The signature audit's pages of payments (``audit_payments_after``), over memory,
SQLite and PostgreSQL: every payment once, in (card, ser) order, whatever the page
size, and on the SQL stores a page reads its own rows only, not the rows of its card
that earlier pages returned (one range of the primary key from the last row seen).

A page used to be chosen by ``card_number >= c AND (card_number > c OR ser > s)``: the
index range began at the card's first payment and the rest was a filter, so each page
of a card read every earlier payment of that card again (PostgreSQL read the whole
table), and a card of n payments cost the audit n^2 / 1,024 rows read."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from jointpay.domain.records import PaymentRecord
from jointpay.storage import open_store
from jointpay.storage.base import Store
from jointpay.storage.sql import SqlStore, SqlUnitOfWork
from pg import fresh_schema, schema_url

TOP = (1 << 64) - 1


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with fresh_schema() if request.param == "postgres" else nullcontext("") as schema:
        if request.param == "memory":
            s = open_store("memory:")
        else:
            s = open_store(schema_url(schema) if schema else None, home=tmp_path)
        yield s
        s.close()


def payment(card: str, ser: int) -> PaymentRecord:
    return PaymentRecord(card, ser, b"\x01" * 16, "SP1", 1, "EUR", b"s", b"b", b"r", "d", 0, 0)


def walk(store: Store, size: int) -> list[tuple[str, int]]:
    """Every payment's key, a page of ``size`` at a time, as the audit walks them."""
    seen: list[tuple[str, int]] = []
    after: tuple[str, int] | None = None
    with store.transaction(snapshot=True) as tx:
        while True:
            page = tx.audit_payments_after(after, size)
            seen += [(p.card_number, p.ser) for p in page]
            if page:
                after = (page[-1].card_number, page[-1].ser)
            if len(page) < size:
                return seen


def test_every_payment_once_in_key_order_whatever_the_page(store: Store) -> None:
    """Cards of one payment, of many, numbers that are prefixes of others, and sers
    at the top of the u64 range (stored as text): pages ending mid-card, on a card's
    last payment, and on the table's last."""
    keys = [("12345678", 0), ("12345678", 9), ("123456789", 5), ("4000000000000002", TOP)]
    keys += [("4000000000000010", ser) for ser in (*range(20), 1 << 63, TOP - 1, TOP)]
    keys += [("9999999999999999999", 1)]
    with store.transaction() as tx:
        tx.add_payments([payment(card, ser) for card, ser in keys])
    for size in (1, 2, 3, 7, len(keys) - 1, len(keys), len(keys) + 1):
        assert walk(store, size) == sorted(keys), size


def test_an_empty_table_is_one_empty_page(store: Store) -> None:
    assert walk(store, 5) == []


# -- what a page costs: its own rows, not its card's earlier ones ------------------------------
CARD = "4000000000000002"
N = 20_000
PAGE = 512


def fill_one_card(store: SqlStore) -> None:
    """N payments of one card, written by the database (it is the reads that count)."""
    columns = (
        "card_number, ser, cert_id, sid, amount, currency, spec, b, r, deposit_id, accepted_at, fee"
    )
    with store.engine.begin() as c:
        if store.dialect == "postgresql":
            c.exec_driver_sql(
                f"INSERT INTO payments ({columns}) SELECT '{CARD}', lpad(g::text, 20, '0'),"
                " '\\x01'::bytea, 'SP1', 1, 'EUR', '\\x00'::bytea, '\\x00'::bytea,"
                f" '\\x00'::bytea, 'd', 0, 0 FROM generate_series(0, {N - 1}) g"
            )
            c.exec_driver_sql("ANALYZE payments")
        else:
            c.exec_driver_sql(
                f"WITH RECURSIVE g(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM g WHERE x < {N - 1})"
                f" INSERT INTO payments ({columns}) SELECT '{CARD}', printf('%020d', x), x'01',"
                " 'SP1', 1, 'EUR', x'00', x'00', x'00', 'd', 0, 0 FROM g"
            )


def rows_read_postgres(tx: SqlUnitOfWork, after: tuple[str, int]) -> int:
    """The rows PostgreSQL's plan read for the page after ``after``: those its scans
    returned and those their filters removed (EXPLAIN ANALYZE of the page's query)."""
    statements: list[tuple[str, Any]] = []

    def seen(_c: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        statements.append((statement, parameters))

    event.listen(tx.c, "before_cursor_execute", seen)
    try:
        assert len(tx.audit_payments_after(after, PAGE)) == PAGE
    finally:
        event.remove(tx.c, "before_cursor_execute", seen)
    [(statement, parameters)] = statements
    plan = tx.c.exec_driver_sql(
        "EXPLAIN (ANALYZE, FORMAT JSON) " + statement, parameters
    ).scalar_one()
    if isinstance(plan, str):
        plan = json.loads(plan)

    def scanned(node: dict[str, Any]) -> int:
        below = node.get("Plans", [])
        if not below:  # a scan
            return int(node["Actual Rows"]) + int(node.get("Rows Removed by Filter", 0))
        return sum(scanned(n) for n in below)

    return scanned(plan[0]["Plan"])


def steps_sqlite(tx: SqlUnitOfWork, after: tuple[str, int]) -> int:
    """SQLite's virtual machine steps (in hundreds) for the page after ``after``."""
    driver: Any = tx.c.connection.driver_connection
    steps = 0

    def step() -> int:
        nonlocal steps
        steps += 1
        return 0

    driver.set_progress_handler(step, 100)
    try:
        assert len(tx.audit_payments_after(after, PAGE)) == PAGE
    finally:
        driver.set_progress_handler(None, 0)
    return steps


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_a_page_deep_in_a_card_reads_no_more_than_its_first(engine: str, tmp_path: Path) -> None:
    """One card of 20,000 payments: the page after its 19,000th payment costs what the
    page after its 512th does. (It cost eight times as much on SQLite, and PostgreSQL
    read every earlier payment of the card and filtered it out.)"""
    with fresh_schema() if engine == "postgres" else nullcontext("") as schema:
        store = open_store(schema_url(schema) if schema else None, home=tmp_path)
        assert isinstance(store, SqlStore)
        try:
            fill_one_card(store)
            with store.transaction(snapshot=True) as tx:
                assert isinstance(tx, SqlUnitOfWork)
                if engine == "postgres":
                    assert rows_read_postgres(tx, (CARD, PAGE - 1)) <= PAGE + 1
                    assert rows_read_postgres(tx, (CARD, 19_000)) <= PAGE + 1
                else:
                    early = steps_sqlite(tx, (CARD, PAGE - 1))
                    late = steps_sqlite(tx, (CARD, 19_000))
                    assert late < 2 * early, (early, late)
        finally:
            store.close()
