"""The bank's schema as SQLAlchemy Core tables, one definition for SQLite and PostgreSQL.

Money, times and sequence numbers are BIGINT. ``ser`` ranges over the full u64
(CONTRACT section 2), which fits neither a signed BIGINT nor SQLite's NUMERIC
(stored as a lossy REAL above 2^63); it is stored as 20-digit zero-padded text, which
keeps it exact, unique and ordered on both engines.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


def u64_text(value: int) -> str:
    """How :class:`U64` stores ``value`` (also written straight to the driver)."""
    return f"{value:020d}"


class U64(TypeDecorator[int]):
    """An unsigned 64-bit integer as zero-padded text (exact on every engine)."""

    impl = String(20)
    cache_ok = True

    def process_bind_param(self, value: int | None, dialect: Dialect) -> str | None:  # noqa: ARG002
        return None if value is None else u64_text(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:  # noqa: ARG002
        return None if value is None else int(value)


def signed_text(value: int) -> str:
    """How :class:`SignedText` stores ``value`` (also written straight to the driver)."""
    return str(value)


class SignedText(TypeDecorator[int]):
    """A small signed integer beyond BIGINT's range (highest ser seen, or -1)."""

    impl = String(21)
    cache_ok = True

    def process_bind_param(self, value: int | None, dialect: Dialect) -> str | None:  # noqa: ARG002
        return None if value is None else signed_text(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:  # noqa: ARG002
        return None if value is None else int(value)


metadata = MetaData()

config = Table(
    "config",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

counters = Table(
    "counters",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", String(96), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("owner", String(96), nullable=False),
    Column("balance", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("allow_negative", Boolean, nullable=False),
    Index("accounts_owner", "owner"),
    Index("accounts_kind", "kind"),
)

transfers = Table(
    "transfers",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("ref", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

entries = Table(
    "entries",
    metadata,
    Column("transfer_id", String(128), ForeignKey("transfers.id"), primary_key=True),
    Column("leg", Integer, primary_key=True),
    Column("account_id", String(96), ForeignKey("accounts.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Index("entries_account", "account_id"),
)

cards = Table(
    "cards",
    metadata,
    Column("card_number", String(19), primary_key=True),
    Column("holder", String(96), nullable=False),
    Column("holder_account", String(96), nullable=False),
    Column("float_account", String(96), nullable=False),
    Column("mode", String(16), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("suite", String(32), nullable=False),
    Column("group_name", String(64), nullable=True),
    Column("joint_key", LargeBinary, nullable=False),
    Column("master_key", LargeBinary, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("highest_ser", SignedText, nullable=False),
    Column("status", String(16), nullable=False),
    Column("credit_limit", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("blacklisted_at", BigInteger, nullable=True),
    Column("current_cert_id", LargeBinary, nullable=False),
    Index("cards_holder", "holder"),
)

certs = Table(
    "certs",
    metadata,
    Column("cert_id", LargeBinary(16), primary_key=True),
    Column("card_number", String(19), ForeignKey("cards.card_number"), nullable=False),
    Column("encoded", LargeBinary, nullable=False),
    Column("not_before", BigInteger, nullable=False),
    Column("not_after", BigInteger, nullable=False),
    Column("issued_at", BigInteger, nullable=False),
    Column("key_powers", LargeBinary, nullable=True),
    Index("certs_card", "card_number"),
)

merchants = Table(
    "merchants",
    metadata,
    Column("sid", String(64), primary_key=True),
    Column("name", String(96), nullable=False, unique=True),
    Column("account_id", String(96), ForeignKey("accounts.id"), nullable=False),
    Column("public_key", LargeBinary, nullable=False),
    Column("cert", LargeBinary, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

payments = Table(
    "payments",
    metadata,
    Column("card_number", String(19), primary_key=True),
    Column("ser", U64, primary_key=True),  # the key that makes a credit happen once
    Column("cert_id", LargeBinary(16), nullable=False),
    Column("sid", String(64), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("spec", LargeBinary, nullable=False),
    Column("b", LargeBinary, nullable=False),
    Column("r", LargeBinary, nullable=False),
    Column("deposit_id", String(96), nullable=False),
    Column("accepted_at", BigInteger, nullable=False),
    # what the bank kept of the amount (migration 0006; rows before it: their deposit's
    # fee income as the ledger booked it, spread over them)
    Column("fee", BigInteger, nullable=False, server_default="0"),
    sqlite_with_rowid=False,  # stored by its key alone (migration 0004)
)

deposits = Table(
    "deposits",
    metadata,
    Column("deposit_id", String(96), primary_key=True),
    Column("sid", String(64), nullable=False),
    Column("merchant_seq", BigInteger, nullable=False),
    Column("batch_digest", LargeBinary(32), nullable=False),
    Column("received_at", BigInteger, nullable=False),
    Column("receipt", Text, nullable=False),
    UniqueConstraint("sid", "merchant_seq", name="deposits_sid_seq"),
)

withdrawals = Table(
    "withdrawals",
    metadata,
    Column("card_number", String(19), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("request_digest", LargeBinary(32), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("fee", BigInteger, nullable=False),
    Column("ack", LargeBinary, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

statements = Table(
    "statements",
    metadata,
    Column("card_number", String(19), ForeignKey("cards.card_number"), primary_key=True),
    Column("number", BigInteger, primary_key=True, autoincrement=False),
    Column("period_start", BigInteger, nullable=False),
    Column("period_end", BigInteger, nullable=False),
    Column("charges", BigInteger, nullable=False),
    Column("interest", BigInteger, nullable=False),
    Column("late_interest", BigInteger, nullable=False),
    Column("balance_due", BigInteger, nullable=False),
    Column("due_at", BigInteger, nullable=False),
)

interbank = Table(
    "interbank",
    metadata,
    Column("issuer", String(64), primary_key=True),
    Column("card_number", String(19), primary_key=True),
    Column("ser", U64, primary_key=True),  # a cross-bank payment counts once
    Column("acquirer", String(64), nullable=False),
    Column("clearing_house", String(64), nullable=False),
    Column("sid", String(64), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("spec", LargeBinary, nullable=False),
    Column("ref", String(160), nullable=False),
    Column("accepted_at", BigInteger, nullable=False),
    Column("fee", BigInteger, nullable=False, server_default="0"),  # the acquirer's (0006)
)

hotlist = Table(
    "hotlist",
    metadata,
    Column("version", BigInteger, primary_key=True, autoincrement=False),
    Column("card_number", String(19), nullable=False),
    Column("reason", String(64), nullable=False),
    Column("added_at", BigInteger, nullable=False),
)

alerts = Table(
    "alerts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("card_number", String(19), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("detail", Text, nullable=False),
    Column("evidence", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index("alerts_card", "card_number"),
)

idempotency = Table(
    "idempotency",
    metadata,
    Column("key", String(160), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("response", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

online_checks = Table(
    "online_checks",
    metadata,
    # the on-line checks one merchant (its bank and S_id) asked about one card, one row
    # a second with how many it asked in it; rows older than the policy's window go
    Column("card_number", String(19), primary_key=True),
    Column("bank_id", String(64), primary_key=True),
    Column("sid", String(64), primary_key=True),
    Column("at", BigInteger, primary_key=True, autoincrement=False),
    Column("asks", BigInteger, nullable=False),
    Index("online_checks_at", "at"),
)
