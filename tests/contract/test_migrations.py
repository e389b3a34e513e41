"""Migrations that move data keep it: a bank at the previous schema, with payments in
it, opens at the newest one with every payment where it was."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import text

from jointpay.storage import open_store
from jointpay.storage.migrate import alembic_config, head
from jointpay.storage.sql import SqlStore, make_engine
from jointpay.storage.tables import signed_text
from pg import fresh_schema, schema_url

ROWS = [
    ("4000000000000002", f"{ser:020d}", b"c" * 16, "SP1", 100 + ser, "EUR", b"s", b"b", b"r")
    for ser in range(3)
]


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bank.db'}"
    else:
        with fresh_schema() as schema:
            yield schema_url(schema)


def test_0004_keeps_every_payment_and_its_key(url: str) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0003")
        for row in ROWS:
            conn.execute(
                text(
                    "INSERT INTO payments (card_number, ser, cert_id, sid, amount, currency,"
                    " spec, b, r, deposit_id, accepted_at)"
                    " VALUES (:n, :s, :c, :sid, :a, :cur, :spec, :b, :r, 'SP1:1', 1)"
                ),
                dict(zip(["n", "s", "c", "sid", "a", "cur", "spec", "b", "r"], row, strict=True)),
            )
    engine.dispose()
    store = open_store(url)  # upgrades to the newest schema
    assert isinstance(store, SqlStore)
    try:
        with store.transaction() as tx:
            version = tx.c.execute(text("SELECT version_num FROM alembic_version")).scalar()
            assert version == head()
            got = tx.existing_payments([("4000000000000002", ser) for ser in range(4)])
            assert sorted(ser for _, ser in got) == [0, 1, 2]
            assert [got[("4000000000000002", ser)].amount for ser in range(3)] == [100, 101, 102]
            if store.dialect == "sqlite":
                sql = tx.c.execute(
                    text("SELECT sql FROM sqlite_master WHERE name = 'payments'")
                ).scalar()
                assert "WITHOUT ROWID" in str(sql)
            indexes = {
                row[0]
                for row in tx.c.execute(
                    text(
                        "SELECT name FROM sqlite_master WHERE tbl_name = 'payments'"
                        if store.dialect == "sqlite"
                        else "SELECT indexname FROM pg_indexes WHERE tablename = 'payments'"
                        " AND schemaname = current_schema()"
                    )
                )
            }
            assert "payments_deposit" not in indexes
    finally:
        store.close()


def test_0005_keeps_every_certificate_without_powers(url: str) -> None:
    """A certificate stored before the comb powers keeps its fields and has none: the
    deposit verifies its payments by exponentiation, as before."""
    engine = make_engine(url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0004")
        conn.execute(
            text(
                "INSERT INTO accounts (id, kind, currency, owner, balance, created_at,"
                " allow_negative) VALUES ('holder:a', 'holder', 'EUR', 'a', 0, 1, false)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO cards (card_number, holder, holder_account, float_account, mode,"
                " currency, suite, group_name, joint_key, master_key, seq, highest_ser,"
                " status, credit_limit, created_at, current_cert_id) VALUES"
                " ('4000000000000002', 'a', 'holder:a', '', 'cheque', 'EUR', 'secp256k1',"
                " NULL, :k, :m, 0, :h, 'active', 0, 1, :c)"
            ),
            {"k": b"k" * 33, "m": b"m" * 32, "h": signed_text(-1), "c": b"c" * 16},
        )
        conn.execute(
            text(
                "INSERT INTO certs (cert_id, card_number, encoded, not_before, not_after,"
                " issued_at) VALUES (:c, '4000000000000002', :e, 1, 2, 3)"
            ),
            {"c": b"c" * 16, "e": b"cert bytes"},
        )
    engine.dispose()
    store = open_store(url)
    assert isinstance(store, SqlStore)
    try:
        with store.transaction() as tx:
            [cert] = tx.certs_for("4000000000000002")
    finally:
        store.close()
    assert (cert.cert_id, cert.encoded, cert.not_before, cert.not_after) == (
        b"c" * 16,
        b"cert bytes",
        1,
        2,
    )
    assert cert.key_powers is None


@pytest.mark.parametrize("start", ["0001", "0003", None])
def test_every_upgrade_ends_at_the_schema_of_tables_py(url: str, start: str | None) -> None:
    """From the first schema, from a middle one and from nothing, twice: the database
    then has exactly the tables, columns, types and indexes of storage/tables.py."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from jointpay.storage.migrate import upgrade
    from jointpay.storage.tables import metadata

    engine = make_engine(url)
    if start is not None:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), start)
    upgrade(engine)
    upgrade(engine)  # idempotent
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == head()
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []
    engine.dispose()
