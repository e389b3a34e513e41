"""SQLite (embedded default) and PostgreSQL stores, one implementation in SQLAlchemy Core.

Concurrency and exactly-once:

* PostgreSQL runs READ COMMITTED. Every row a use case changes on the strength of
  what it read is locked with ``SELECT ... FOR UPDATE``: the card (``lock_card``), the
  merchant (``lock_merchant``) and, in :meth:`SqlUnitOfWork.post`, every account a
  transfer touches, locked in id order so that two transfers can never deadlock.
  Uniqueness (payments ``(card_number, ser)``, transfer ids, withdrawals
  ``(card_number, seq)``, deposits ``(sid, merchant_seq)``, idempotency keys) is
  enforced by primary keys and unique constraints. A racing duplicate therefore
  fails in the database with :class:`Conflict` and rolls its whole transaction back.
* SQLite starts every transaction with ``BEGIN IMMEDIATE`` (WAL journal,
  ``synchronous=FULL``), so writers are serialised by the database lock instead of
  failing mid-transaction, and a committed transaction survives power loss. Its
  write-ahead log is folded into the database file on a thread of its own
  (:class:`_Checkpointer`), not by the transaction that commits.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final, TypeVar

import psycopg
from sqlalchemy import (
    ColumnElement,
    Engine,
    LargeBinary,
    create_engine,
    delete,
    event,
    func,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.engine import Connection, Row, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import NullPool, QueuePool

from jointpay.domain.records import (
    Account,
    AccountKind,
    AlertRecord,
    CardRecord,
    CardStatus,
    CertRecord,
    DepositRecord,
    HotlistEntry,
    InterbankRecord,
    Leg,
    MerchantRecord,
    PaymentRecord,
    StatementRecord,
    Transfer,
    WithdrawalRecord,
)
from jointpay.storage import tables as t
from jointpay.storage.base import (
    MAX_BALANCE,
    ONLINE_SWEEP,
    BalanceOutOfRange,
    CardPayments,
    CardWithdrawals,
    Conflict,
    FaultPlan,
    InsufficientFunds,
    NotFound,
    Totals,
    online_free_at,
)
from jointpay.storage.files import create_private
from jointpay.storage.migrate import upgrade
from jointpay.storage.sqlite_blobs import register_identity_adapters

_IN_CHUNK = 500
SQLITE_POOL_SIZE: Final = 4
"""SQLite connections kept open between transactions by one store."""
CHECKPOINT_ROWS: Final = 1000
"""Rows a SQLite store's transactions change between two checkpoints of its log. SQLite's
own rule, turned off here, counts 1,000 pages of log; the store counts the rows its
connections report changed, which it can read for nothing."""

log = logging.getLogger(__name__)
_ONLINE_LOCKS: Final = 0x6A70_6F63  # "jpoc": the advisory locks of on-line check keys


T = TypeVar("T")


def _chunks(items: list[T]) -> Iterator[list[T]]:
    for i in range(0, len(items), _IN_CHUNK):
        yield items[i : i + _IN_CHUNK]


def _pg_array(column: Any) -> str:
    """The PostgreSQL array type of a key column's values as the driver sends them
    (binary columns as ``bytea``; every other key column is text, :class:`U64` too)."""
    return "bytea[]" if isinstance(column.type, LargeBinary) else "text[]"


def normalise_url(url: str) -> str:
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_engine(url: str, *, schema: str | None = None) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:" and not database.startswith("file:"):
            create_private(Path(database))  # the bank's keys live in it
        register_identity_adapters()  # payment rows bind four byte strings each
        # Connections are kept open between transactions (up to SQLITE_POOL_SIZE; past
        # that, each extra one is closed when its transaction ends). Closing the last
        # connection to a WAL database checkpoints the log into the database file and
        # deletes it: with a connection per transaction, every transaction's end did
        # that (8 ms after a 10,000-payment deposit, on its answer's path) and the next
        # one re-created the log and ran its pragmas again. Open, the log is
        # checkpointed by SQLite's own rule (each 1,000 pages) and when the bank closes.
        engine = create_engine(
            url,
            poolclass=QueuePool,
            pool_size=SQLITE_POOL_SIZE,
            max_overflow=-1,  # never a wait for a connection: BEGIN IMMEDIATE orders writers
            connect_args={"timeout": 30, "check_same_thread": False},
        )

        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (SQLAlchemy recipe)
            cur = dbapi_conn.cursor()
            for pragma in (
                "journal_mode=WAL",
                "synchronous=FULL",
                "foreign_keys=ON",
                "busy_timeout=30000",
                "wal_autocheckpoint=0",  # the store's _Checkpointer folds the log in
            ):
                cur.execute(f"PRAGMA {pragma}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    connect_args: dict[str, Any] = {}
    if schema is not None:
        connect_args["options"] = f"-csearch_path={schema}"
    return create_engine(
        url, pool_pre_ping=True, pool_size=10, max_overflow=20, connect_args=connect_args
    )


class SqlStore:
    """A :class:`~jointpay.storage.base.Store` on SQLite or PostgreSQL."""

    def __init__(self, url: str, *, schema: str | None = None) -> None:
        if schema is not None:
            if not schema.replace("_", "").isalnum():
                raise ValueError("schema names are letters, digits and _")
            boot = create_engine(normalise_url(url), poolclass=NullPool)
            with boot.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            boot.dispose()
        self.engine = make_engine(url, schema=schema)
        self.dialect = self.engine.dialect.name
        upgrade(self.engine)
        self._checkpoints = _Checkpointer(self.engine) if self.dialect == "sqlite" else None
        self.faults: FaultPlan | None = None
        """A fault plan for drills and tests (see :class:`FaultPlan`); None in service."""

        @event.listens_for(self.engine, "before_cursor_execute")
        def _statement(*_: Any) -> None:
            if self.faults is not None:
                self.faults.on_statement()

    @contextmanager
    def transaction(self, *, snapshot: bool = False) -> Iterator[SqlUnitOfWork]:
        checkpoints = self._checkpoints
        connection = self.engine.connect()
        if snapshot and self.dialect == "postgresql":
            connection.execution_options(isolation_level="REPEATABLE READ")
        with connection as conn, conn.begin():
            driver: Any = conn.connection.driver_connection if checkpoints else None
            before = driver.total_changes if driver is not None else 0
            yield SqlUnitOfWork(conn)
            if self.faults is not None:
                self.faults.on_commit()  # raising here rolls the transaction back
            changed = driver.total_changes - before if driver is not None else 0
        if checkpoints is not None:
            checkpoints.committed(changed)

    def close(self) -> None:
        if self._checkpoints is not None:
            self._checkpoints.close()  # before the last connection folds in the rest
        self.engine.dispose()


class _Checkpointer:
    """Folds a SQLite store's write-ahead log into the database file on a thread of its
    own, once its transactions have changed :data:`CHECKPOINT_ROWS` rows.

    SQLite's own rule (``wal_autocheckpoint``, turned off on the store's connections)
    runs the checkpoint inside the commit that brings the log past 1,000 pages: the
    transaction's caller waits while every page of the log is copied into the file. A
    deposit of 10,000 payments from as many cards logs some 15,000 pages, and its commit
    took 185 to 220 ms for them (of 3.4 s; 28 ms since). The checkpoint here is SQLite's
    ``PASSIVE`` one, as the automatic one is: it copies what no reader still needs and
    never blocks a reader or a writer. Committed transactions are durable in the log
    already (``synchronous=FULL``); the last connection's close folds in the rest.

    The thread lives only while there is log to fold in: the verification pool starts
    its workers by ``fork`` only when the process runs no other thread."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._changed = 0
        self._thread: threading.Thread | None = None
        self._again = False
        self._closed = False

    def committed(self, changed: int) -> None:
        """A transaction committed, having changed ``changed`` rows."""
        with self._lock:
            self._changed += changed
            if self._changed < CHECKPOINT_ROWS or self._closed:
                return
            self._changed = 0
            if self._thread is not None:
                self._again = True  # the running one checkpoints once more
                return
            self._thread = threading.Thread(
                target=self._run, name="jointpay-sqlite-checkpoint", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn = self._engine.raw_connection()
                try:
                    cursor = conn.cursor()
                    cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    cursor.fetchall()
                    cursor.close()
                finally:
                    conn.close()
            except Exception:  # the next one, or the close, folds the log in
                log.exception("checkpoint of the SQLite log failed")
            with self._lock:
                if not self._again or self._closed:
                    self._thread = None
                    return
                self._again = False

    def wait(self) -> None:
        """Until no checkpoint runs."""
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self.wait()


def _columns(table: Any, names: str) -> None:
    """Check that ``names`` (space-separated) are ``table``'s columns in order: the row
    mappers below unpack rows by position (reading a column by name cost 0.8 µs, and a
    deposit reads a card row per customer), and every query they serve selects the
    whole table."""
    have = tuple(c.name for c in table.columns)
    if have != tuple(names.split()):  # pragma: no cover - a schema change needs its mapper
        raise RuntimeError(f"{table.name} has columns {have}, its mapper reads {names}")


_columns(t.accounts, "id kind currency owner balance created_at allow_negative")
_columns(
    t.cards,
    "card_number holder holder_account float_account mode currency suite group_name"
    " joint_key master_key seq highest_ser status credit_limit created_at blacklisted_at"
    " current_cert_id",
)
_columns(t.certs, "cert_id card_number encoded not_before not_after issued_at key_powers")
_POSTING_COLUMNS: Final = ("id", "currency", "balance", "allow_negative")
_KINDS = {k.value: k for k in AccountKind}
_STATUSES = {s.value: s for s in CardStatus}


def _account(row: Sequence[Any]) -> Account:
    account_id, kind, currency, owner, balance, created_at, allow_negative = row
    return Account(
        account_id,
        _KINDS.get(kind) or AccountKind(kind),
        currency,
        owner,
        int(balance),
        int(created_at),
        bool(allow_negative),
    )


def _card(row: Sequence[Any]) -> CardRecord:
    number, holder, holder_acc, float_acc, mode, currency, suite, group = row[:8]
    joint, master, seq, top, status, limit, created, listed, cert_id = row[8:]
    return CardRecord(
        number,
        holder,
        holder_acc,
        float_acc,
        mode,
        currency,
        suite,
        group,
        bytes(joint),
        bytes(master),
        int(seq),
        int(top),
        _STATUSES.get(status) or CardStatus(status),
        int(limit),
        int(created),
        None if listed is None else int(listed),
        bytes(cert_id),
    )


def _card_values(c: CardRecord) -> dict[str, Any]:
    return {
        "card_number": c.card_number,
        "holder": c.holder,
        "holder_account": c.holder_account,
        "float_account": c.float_account,
        "mode": c.mode,
        "currency": c.currency,
        "suite": c.suite,
        "group_name": c.group,
        "joint_key": c.joint_key,
        "master_key": c.master_key,
        "seq": c.seq,
        "highest_ser": c.highest_ser,
        "status": c.status.value,
        "credit_limit": c.limit,
        "created_at": c.created_at,
        "blacklisted_at": c.blacklisted_at,
        "current_cert_id": c.current_cert_id,
    }


def _cert(r: Sequence[Any]) -> CertRecord:
    cert_id, card_number, encoded, not_before, not_after, issued_at, key_powers = r
    return CertRecord(
        bytes(cert_id),
        card_number,
        bytes(encoded),
        int(not_before),
        int(not_after),
        int(issued_at),
        None if key_powers is None else bytes(key_powers),
    )


def _withdrawal(r: Row[Any]) -> WithdrawalRecord:
    return WithdrawalRecord(
        r.card_number,
        int(r.seq),
        bytes(r.request_digest),
        int(r.amount),
        int(r.fee),
        bytes(r.ack),
        int(r.created_at),
    )


def _merchant(row: Row[Any]) -> MerchantRecord:
    return MerchantRecord(
        row.sid,
        row.name,
        row.account_id,
        bytes(row.public_key),
        bytes(row.cert),
        int(row.last_seq),
        int(row.created_at),
    )


def _payment(row: Row[Any]) -> PaymentRecord:
    return PaymentRecord(
        row.card_number,
        int(row.ser),
        bytes(row.cert_id),
        row.sid,
        int(row.amount),
        row.currency,
        bytes(row.spec),
        bytes(row.b),
        bytes(row.r),
        row.deposit_id,
        int(row.accepted_at),
        int(row.fee),
    )


def _interbank(row: Row[Any]) -> InterbankRecord:
    """An interbank row as the driver gives it (``ser`` as text, ``spec`` as a buffer)."""
    return InterbankRecord(
        row.issuer,
        row.card_number,
        int(row.ser),
        row.acquirer,
        row.clearing_house,
        row.sid,
        int(row.amount),
        row.currency,
        bytes(row.spec),
        row.ref,
        int(row.accepted_at),
        int(row.fee),
    )


_SPEC_MISMATCHES_PG: Final = r"""
SELECT card_number, ser FROM (
  SELECT card_number, ser, spec, cert_id, currency, deposit_id,
         CASE WHEN octet_length(spec) >= 8 THEN get_byte(spec, 7) ELSE 0 END AS lb,
         int4send(octet_length(sid)) || convert_to(sid, 'UTF8') || int8send(amount)
           || int4send(octet_length(currency)) || convert_to(currency, 'UTF8') AS body
  FROM payments) p
WHERE NOT (
  substring(spec from 1 for 7) = '\x4a505331000000'::bytea
  AND substring(spec from 9 + lb for octet_length(body)) = body
  AND substring(spec from 9 + lb + octet_length(body) + 16 for 16) = cert_id
  AND currency = :cur
  AND (substring(deposit_id from 1 for 3) = 'ib:'
       OR substring(spec from 5 for 4 + lb)
          = int4send(octet_length(convert_to(:bank, 'UTF8'))) || convert_to(:bank, 'UTF8')))
"""
"""PostgreSQL: the payments whose row disagrees with their spec (``audit_spec_mismatches``)."""

_SPEC_MISMATCHES_SQLITE: Final = """
SELECT card_number, ser FROM (
  SELECT card_number, ser, spec, sid, amount, currency, cert_id,
         length(CAST(sid AS BLOB)) + length(CAST(currency AS BLOB)) AS ltexts,
         CASE WHEN substr(deposit_id, 1, 3) = 'ib:'
              THEN substr(spec, 9,
                     (instr('0123456789ABCDEF', substr(hex(substr(spec, 8, 1)), 1, 1)) - 1) * 16
                     + instr('0123456789ABCDEF', substr(hex(substr(spec, 8, 1)), 2, 1)) - 1)
              ELSE CAST(:bank AS BLOB) END AS bank
  FROM payments)
WHERE NOT (
  hex(substr(spec, 1, 24 + length(bank) + ltexts))
    = printf('4A505331%08X%s%08X%s%016X%08X%s', length(bank), hex(bank),
             length(CAST(sid AS BLOB)), hex(sid), amount,
             length(CAST(currency AS BLOB)), hex(currency))
  AND substr(spec, 41 + length(bank) + ltexts, 16) = cert_id
  AND currency = :cur)
"""
"""SQLite, which has no functions of bytes: the spec's first fields in hex, against the
row's values (and our bank's id, or for a payment a clearing house brought, the bank id
the spec names) written as the spec writes them."""

_PAYMENT_COLUMNS = (
    "card_number", "ser", "cert_id", "sid", "amount", "currency", "spec", "b", "r",
    "deposit_id", "accepted_at", "fee",
)  # fmt: skip
"""The payments table's columns, in the order the driver-level statements use."""


class SqlUnitOfWork:
    """One database transaction on an open connection."""

    def __init__(self, conn: Connection) -> None:
        self.c = conn
        self._pg = conn.dialect.name == "postgresql"

    def _insert(self, table: Any, values: dict[str, Any] | list[dict[str, Any]], what: str) -> None:
        """Insert; a uniqueness violation becomes :class:`Conflict` (inside a savepoint,
        so that the caller's transaction stays usable)."""
        try:
            with self._savepoint():
                self.c.execute(table.insert(), values)
        except IntegrityError as exc:
            raise Conflict(f"{what} exists already") from exc

    @contextmanager
    def _savepoint(self) -> Iterator[None]:
        """A savepoint around one statement, through the driver: its rows go in whole or
        not at all, and the transaction goes on either way. (SQLAlchemy's
        ``begin_nested`` compiled its two clauses on every call: about 8 ms of a
        10,000-payment deposit's 360, sampled by py-spy.)"""
        self.c.exec_driver_sql("SAVEPOINT jp_rows")
        try:
            yield
        except BaseException:
            self.c.exec_driver_sql("ROLLBACK TO SAVEPOINT jp_rows")
            self.c.exec_driver_sql("RELEASE SAVEPOINT jp_rows")
            raise
        self.c.exec_driver_sql("RELEASE SAVEPOINT jp_rows")

    def _rows_in(
        self,
        table: Any,
        column: str,
        keys: Sequence[Any],
        *,
        lock: bool = False,
        columns: Sequence[str] = (),
    ) -> Iterator[Sequence[Any]]:
        """Every row of ``table`` whose ``column`` is one of ``keys``, in key order: one
        driver-level query (on SQLite one per 500 keys; a deposit reads thousands of
        cards, and SQLAlchemy's expanding IN and result processing cost more than the
        query).
        The row mappers convert the raw column values. ``lock``: ``FOR UPDATE`` on
        PostgreSQL (SQLite's transaction holds the whole database already).
        ``columns``: only these, in this order (default: the whole row)."""
        if not keys:
            return
        quote = self.c.dialect.identifier_preparer.quote
        names = ", ".join(quote(table.c[c].name) for c in columns) or ", ".join(
            quote(c.name) for c in table.columns
        )
        key = quote(column)
        if self._pg:
            # every key in one array parameter: a statement with 500 placeholders cost
            # psycopg a pure-Python parse of its text on every call (it caches the
            # parse for statements of at most 50 parameters only), 0.4 of the 0.8 ms
            # of locking a deposit's 100 cards; this text is the same for every call
            # (psycopg prepares it on a connection from its fifth use)
            sql = (
                f"SELECT {names} FROM {quote(table.name)}"  # noqa: S608 - constant names
                f" WHERE {key} = ANY(%s::{_pg_array(table.c[column])})"
                f" ORDER BY {key}" + (" FOR UPDATE" if lock else "")
            )
            result = self.c.exec_driver_sql(sql, (sorted(set(keys)),))
            yield from result.cursor.fetchall()
            result.close()
            return
        for chunk in _chunks(sorted(set(keys))):
            marks = ", ".join(["?"] * len(chunk))
            # quoted constant names and placeholders only: the keys travel as parameters
            sql = f"SELECT {names} FROM {quote(table.name)} WHERE {key} IN ({marks})"  # noqa: S608
            sql += f" ORDER BY {key}"
            result = self.c.exec_driver_sql(sql, tuple(chunk))
            # the driver's own tuples (a Row each cost about 1 µs more a card here)
            yield from result.cursor.fetchall()
            result.close()

    def _one(self, stmt: Any, what: str) -> Row[Any]:
        row = self.c.execute(stmt).first()
        if row is None:
            raise NotFound(f"no {what}")
        return row

    # -- configuration ----------------------------------------------------------------
    def config_get(self, key: str) -> str | None:
        row = self.c.execute(select(t.config.c.value).where(t.config.c.key == key)).first()
        return None if row is None else str(row[0])

    def config_set(self, key: str, value: str) -> None:
        done = self.c.execute(update(t.config).where(t.config.c.key == key).values(value=value))
        if done.rowcount == 0:
            self._insert(t.config, {"key": key, "value": value}, f"config {key}")

    # -- ledger -------------------------------------------------------------------------
    def create_account(self, account: Account) -> None:
        if account.balance != 0:
            raise ValueError("a new account starts at zero")
        self._insert(
            t.accounts,
            {
                "id": account.id,
                "kind": account.kind.value,
                "currency": account.currency,
                "owner": account.owner,
                "balance": 0,
                "created_at": account.created_at,
                "allow_negative": account.allow_negative,
            },
            f"account {account.id}",
        )

    def get_account(self, account_id: str) -> Account:
        return _account(
            self._one(
                select(t.accounts).where(t.accounts.c.id == account_id), f"account {account_id}"
            )
        )

    def get_accounts(self, account_ids: Sequence[str]) -> dict[str, Account]:
        found = (_account(r) for r in self._rows_in(t.accounts, "id", account_ids))
        return {a.id: a for a in found}

    def get_balances(self, account_ids: Sequence[str], *, lock: bool = False) -> dict[str, int]:
        rows = self._rows_in(t.accounts, "id", account_ids, lock=lock, columns=("id", "balance"))
        return {acc_id: int(balance) for acc_id, balance in rows}

    def find_accounts(self, *, kind: str | None = None, owner: str | None = None) -> list[Account]:
        q = select(t.accounts).order_by(t.accounts.c.id)
        if kind is not None:
            q = q.where(t.accounts.c.kind == kind)
        if owner is not None:
            q = q.where(t.accounts.c.owner == owner)
        return [_account(r) for r in self.c.execute(q)]

    def post(self, transfer: Transfer) -> None:
        ids = sorted({leg.account_id for leg in transfer.legs})
        # locked in id order (so two transfers cannot deadlock); a deposit's compound
        # posting has one leg per card, so its rows go straight through the driver, and
        # only the columns the posting needs (the whole row, mapped to an Account, cost
        # 68 ms for 10,000 legs on SQLite; these four, 27)
        rows = {
            acc_id: (currency, int(balance), bool(negative))
            for acc_id, currency, balance, negative in self._rows_in(
                t.accounts, "id", ids, lock=True, columns=_POSTING_COLUMNS
            )
        }
        for acc_id in ids:
            if acc_id not in rows:
                raise NotFound(f"no account {acc_id}")
            if rows[acc_id][0] != transfer.currency:
                raise ValueError(f"account {acc_id} is in {rows[acc_id][0]}")
        new = {i: rows[i][1] for i in ids}
        for leg in transfer.legs:
            new[leg.account_id] += leg.amount
        for acc_id, balance in new.items():
            if balance < 0 and not rows[acc_id][2]:
                old = rows[acc_id][1]
                raise InsufficientFunds(acc_id, old, old - balance)
            if not -MAX_BALANCE <= balance <= MAX_BALANCE:
                raise BalanceOutOfRange(acc_id, balance)
        self._insert(
            t.transfers,
            {
                "id": transfer.id,
                "kind": transfer.kind,
                "currency": transfer.currency,
                "ref": transfer.ref,
                "created_at": transfer.created_at,
            },
            f"transfer {transfer.id}",
        )
        if self._pg:
            # one statement each, the values as arrays: a deposit's compound posting has
            # a leg per card, and as many statements pipelined (executemany) cost the
            # bank 1.4 ms more CPU and the database more work per hundred rows, while
            # the deposit holds its cards' locks
            self.c.exec_driver_sql(
                "INSERT INTO entries (transfer_id, leg, account_id, amount, currency)"
                " SELECT %s, e.leg, e.account_id, e.amount, %s"
                " FROM unnest(%s::integer[], %s::text[], %s::bigint[])"
                " AS e(leg, account_id, amount)",
                (
                    transfer.id,
                    transfer.currency,
                    list(range(len(transfer.legs))),
                    [leg.account_id for leg in transfer.legs],
                    [leg.amount for leg in transfer.legs],
                ),
            )
            self.c.exec_driver_sql(
                "UPDATE accounts SET balance = v.balance"
                " FROM unnest(%s::text[], %s::bigint[]) AS v(id, balance)"
                " WHERE accounts.id = v.id",
                (list(new), list(new.values())),
            )
            return
        self.c.exec_driver_sql(
            "INSERT INTO entries (transfer_id, leg, account_id, amount, currency)"
            " VALUES (?, ?, ?, ?, ?)",
            [
                (transfer.id, i, leg.account_id, leg.amount, transfer.currency)
                for i, leg in enumerate(transfer.legs)
            ],
        )
        self.c.exec_driver_sql(
            "UPDATE accounts SET balance = ? WHERE id = ?", [(b, i) for i, b in new.items()]
        )

    def get_transfer(self, transfer_id: str) -> Transfer:
        row = self._one(
            select(t.transfers).where(t.transfers.c.id == transfer_id), f"transfer {transfer_id}"
        )
        legs = tuple(
            Leg(e.account_id, int(e.amount))
            for e in self.c.execute(
                select(t.entries)
                .where(t.entries.c.transfer_id == transfer_id)
                .order_by(t.entries.c.leg)
            )
        )
        return Transfer(row.id, row.kind, row.currency, legs, row.ref, int(row.created_at))

    def transfers_for(self, account_id: str, *, limit: int = 100) -> list[Transfer]:
        ids = [
            r[0]
            for r in self.c.execute(
                select(t.entries.c.transfer_id)
                .where(t.entries.c.account_id == account_id)
                .distinct()
                .limit(limit)
            )
        ]
        return [self.get_transfer(i) for i in ids]

    # -- cards ----------------------------------------------------------------------------
    def add_card(self, card: CardRecord) -> None:
        self._insert(t.cards, _card_values(card), f"card {card.card_number}")

    def get_card(self, card_number: str) -> CardRecord:
        return _card(
            self._one(
                select(t.cards).where(t.cards.c.card_number == card_number), f"card {card_number}"
            )
        )

    def lock_card(self, card_number: str) -> CardRecord:
        return _card(
            self._one(
                select(t.cards).where(t.cards.c.card_number == card_number).with_for_update(),
                f"card {card_number}",
            )
        )

    def lock_cards(self, card_numbers: Sequence[str]) -> dict[str, CardRecord]:
        rows = self._rows_in(t.cards, "card_number", card_numbers, lock=True)
        return {c.card_number: c for c in map(_card, rows)}

    def update_card(self, card: CardRecord) -> None:
        values = _card_values(card)
        del values["card_number"]
        done = self.c.execute(
            update(t.cards).where(t.cards.c.card_number == card.card_number).values(**values)
        )
        if done.rowcount == 0:
            raise NotFound(f"no card {card.card_number}")

    def raise_highest_sers(self, highest: dict[str, int]) -> None:
        if not highest:
            return
        # one per card of a deposit: straight to the driver (PostgreSQL: one statement,
        # the values as arrays, as in :meth:`post`)
        numbers = sorted(highest)
        tops = [t.signed_text(highest[n]) for n in numbers]
        if self._pg:
            self.c.exec_driver_sql(
                "UPDATE cards SET highest_ser = v.top"
                " FROM unnest(%s::text[], %s::text[]) AS v(card_number, top)"
                " WHERE cards.card_number = v.card_number",
                (numbers, tops),
            )
        else:
            self.c.exec_driver_sql(
                "UPDATE cards SET highest_ser = ? WHERE card_number = ?",
                list(zip(tops, numbers, strict=True)),
            )

    def list_cards(self, *, holder: str | None = None, mode: str | None = None) -> list[CardRecord]:
        q = select(t.cards).order_by(t.cards.c.card_number)
        if holder is not None:
            q = q.where(t.cards.c.holder == holder)
        if mode is not None:
            q = q.where(t.cards.c.mode == mode)
        return [_card(r) for r in self.c.execute(q)]

    def add_cert(self, cert: CertRecord) -> None:
        self._insert(
            t.certs,
            {
                "cert_id": cert.cert_id,
                "card_number": cert.card_number,
                "encoded": cert.encoded,
                "not_before": cert.not_before,
                "not_after": cert.not_after,
                "issued_at": cert.issued_at,
                "key_powers": cert.key_powers,
            },
            "certificate",
        )

    def get_cert(self, cert_id: bytes) -> CertRecord:
        r = self._one(select(t.certs).where(t.certs.c.cert_id == cert_id), "certificate")
        return _cert(r)

    def get_certs(self, cert_ids: Sequence[bytes]) -> dict[bytes, CertRecord]:
        found = (_cert(r) for r in self._rows_in(t.certs, "cert_id", cert_ids))
        return {c.cert_id: c for c in found}

    def certs_without_powers(self, after: bytes, limit: int) -> list[CertRecord]:
        return [
            _cert(r)
            for r in self.c.execute(
                select(t.certs)
                .where(t.certs.c.key_powers.is_(None), t.certs.c.cert_id > after)
                .order_by(t.certs.c.cert_id)
                .limit(limit)
            )
        ]

    def set_cert_powers(self, cert_id: bytes, powers: bytes) -> None:
        done = self.c.execute(
            update(t.certs).where(t.certs.c.cert_id == cert_id).values(key_powers=powers)
        )
        if done.rowcount != 1:
            raise NotFound(f"no certificate {cert_id.hex()}")

    def certs_for(self, card_number: str) -> list[CertRecord]:
        return [
            _cert(r)
            for r in self.c.execute(
                select(t.certs)
                .where(t.certs.c.card_number == card_number)
                .order_by(t.certs.c.issued_at)
            )
        ]

    # -- merchants --------------------------------------------------------------------
    def add_merchant(self, merchant: MerchantRecord) -> None:
        self._insert(
            t.merchants,
            {
                "sid": merchant.sid,
                "name": merchant.name,
                "account_id": merchant.account_id,
                "public_key": merchant.public_key,
                "cert": merchant.cert,
                "last_seq": merchant.last_seq,
                "created_at": merchant.created_at,
            },
            f"merchant {merchant.name!r}",
        )

    def get_merchant(self, sid: str) -> MerchantRecord:
        return _merchant(
            self._one(select(t.merchants).where(t.merchants.c.sid == sid), f"merchant {sid}")
        )

    def get_merchant_by_name(self, name: str) -> MerchantRecord:
        return _merchant(
            self._one(
                select(t.merchants).where(t.merchants.c.name == name), f"merchant named {name!r}"
            )
        )

    def lock_merchant(self, sid: str) -> MerchantRecord:
        return _merchant(
            self._one(
                select(t.merchants).where(t.merchants.c.sid == sid).with_for_update(),
                f"merchant {sid}",
            )
        )

    def set_merchant_seq(self, sid: str, seq: int) -> None:
        self.c.execute(update(t.merchants).where(t.merchants.c.sid == sid).values(last_seq=seq))

    def list_merchants(self) -> list[MerchantRecord]:
        return [
            _merchant(r) for r in self.c.execute(select(t.merchants).order_by(t.merchants.c.sid))
        ]

    # -- deposits ---------------------------------------------------------------------
    def add_payments(self, payments: Sequence[PaymentRecord]) -> None:
        """All rows in one statement straight to the driver (``COPY`` on PostgreSQL,
        ``executemany`` on SQLite), inside a savepoint: a deposit writes thousands of
        rows, and SQLAlchemy's per-value bind processing cost as much as the rest of
        the row's path. The values are the columns' own (``ser`` as ``u64_text``); a
        row already there fails the whole call with :class:`Conflict`."""
        if not payments:
            return
        rows = [
            (
                p.card_number,
                t.u64_text(p.ser),
                p.cert_id,
                p.sid,
                p.amount,
                p.currency,
                p.spec,
                p.b,
                p.r,
                p.deposit_id,
                p.accepted_at,
                p.fee,
            )
            for p in payments
        ]
        try:
            with self._savepoint():
                if self._pg:
                    self._copy_payments(rows)
                else:
                    self.c.exec_driver_sql(self._insert_payments_sql(), rows)
        except (IntegrityError, psycopg.errors.UniqueViolation) as exc:
            raise Conflict("payment exists already") from exc

    def _copy_payments(self, rows: list[tuple[Any, ...]]) -> None:
        """PostgreSQL's ``COPY``: the rows stream in one command, a fraction of the
        server's work for as many ``INSERT`` statements."""
        driver = self.c.connection.driver_connection
        if not isinstance(driver, psycopg.Connection):  # pragma: no cover - our engine's
            raise TypeError("PostgreSQL is reached through psycopg 3")
        command = f"COPY payments ({', '.join(_PAYMENT_COLUMNS)}) FROM STDIN"
        with driver.cursor().copy(command) as copy:
            for row in rows:
                copy.write_row(row)

    def _insert_payments_sql(self) -> str:
        """SQLite's statement for :meth:`add_payments` (PostgreSQL's rows go by ``COPY``)."""
        marks = ", ".join(["?"] * len(_PAYMENT_COLUMNS))
        # constant names and placeholders only: the values travel as parameters
        return f"INSERT INTO payments ({', '.join(_PAYMENT_COLUMNS)}) VALUES ({marks})"  # noqa: S608

    def get_payment(self, card_number: str, ser: int) -> PaymentRecord | None:
        row = self.c.execute(
            select(t.payments).where(
                t.payments.c.card_number == card_number, t.payments.c.ser == ser
            )
        ).first()
        return None if row is None else _payment(row)

    def existing_sers(self, card_number: str, sers: Sequence[int]) -> dict[int, PaymentRecord]:
        out: dict[int, PaymentRecord] = {}
        unique = sorted(set(sers))
        for i in range(0, len(unique), _IN_CHUNK):
            for row in self.c.execute(
                select(t.payments).where(
                    t.payments.c.card_number == card_number,
                    t.payments.c.ser.in_(unique[i : i + _IN_CHUNK]),
                )
            ):
                p = _payment(row)
                out[p.ser] = p
        return out

    def existing_payments(
        self, keys: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], PaymentRecord]:
        """The payments recorded under ``keys`` (:meth:`_rows_by_keys`)."""
        wanted = [(card, t.u64_text(ser)) for card, ser in keys]
        out: dict[tuple[str, int], PaymentRecord] = {}
        for row in self._rows_by_keys(t.payments, ("card_number", "ser"), wanted):
            p = _payment(row)
            out[(p.card_number, p.ser)] = p
        return out

    def _rows_by_keys(
        self, table: Any, columns: Sequence[str], keys: Sequence[tuple[Any, ...]]
    ) -> Iterator[Row[Any]]:
        """Every row of ``table`` whose ``columns`` equal one of ``keys`` (the driver's
        values): a query written for the driver that joins the keys to the table on its
        primary key (on PostgreSQL the keys as arrays, one query; on SQLite a ``VALUES``
        list, one query per 500 keys). A row-value ``IN
        (VALUES ...)`` reads the same on PostgreSQL, but SQLite plans it as a scan of
        the whole table for every query (a deposit of 10,000 payments spent 0.15 s on
        them into an empty bank; a bank with millions of payments would scan them all
        for every 500); the join is a primary-key lookup per key on both."""
        quote = self.c.dialect.identifier_preparer.quote
        names = ", ".join(f"t.{quote(c.name)}" for c in table.columns)
        aliases = ", ".join(f"k{i}" for i in range(len(columns)))
        on = " AND ".join(f"t.{quote(col)} = k.k{i}" for i, col in enumerate(columns))
        if self._pg:
            # the keys as one array a column (see _rows_in), joined by unnest
            arrays = ", ".join(f"%s::{_pg_array(table.c[col])}" for col in columns)
            sql = (
                f"SELECT {names} FROM unnest({arrays}) AS k({aliases})"  # noqa: S608
                f" JOIN {quote(table.name)} t ON {on}"
            )
            unique = sorted(set(keys))
            yield from self.c.exec_driver_sql(
                sql, tuple([k[i] for k in unique] for i in range(len(columns)))
            )
            return
        row = "(" + ", ".join(["?"] * len(columns)) + ")"
        for chunk in _chunks(sorted(set(keys))):
            # quoted constant names and placeholders only: the keys travel as parameters
            sql = (
                f"WITH k({aliases}) AS (VALUES {', '.join([row] * len(chunk))})"  # noqa: S608
                f" SELECT {names} FROM k JOIN {quote(table.name)} t ON {on}"
            )
            yield from self.c.exec_driver_sql(sql, tuple(v for k in chunk for v in k))

    def iter_payments(self) -> Iterator[PaymentRecord]:
        for row in self.c.execute(
            select(t.payments).order_by(t.payments.c.card_number, t.payments.c.ser)
        ):
            yield _payment(row)

    def add_deposit(self, deposit: DepositRecord) -> None:
        self._insert(
            t.deposits,
            {
                "deposit_id": deposit.deposit_id,
                "sid": deposit.sid,
                "merchant_seq": deposit.merchant_seq,
                "batch_digest": deposit.batch_digest,
                "received_at": deposit.received_at,
                "receipt": deposit.receipt,
            },
            f"deposit {deposit.deposit_id}",
        )

    def get_deposit(self, deposit_id: str) -> DepositRecord | None:
        r = self.c.execute(select(t.deposits).where(t.deposits.c.deposit_id == deposit_id)).first()
        if r is None:
            return None
        return DepositRecord(
            r.deposit_id,
            r.sid,
            int(r.merchant_seq),
            bytes(r.batch_digest),
            int(r.received_at),
            r.receipt,
        )

    # -- withdrawals ------------------------------------------------------------------
    def add_withdrawal(self, withdrawal: WithdrawalRecord) -> None:
        w = withdrawal
        self._insert(
            t.withdrawals,
            {
                "card_number": w.card_number,
                "seq": w.seq,
                "request_digest": w.request_digest,
                "amount": w.amount,
                "fee": w.fee,
                "ack": w.ack,
                "created_at": w.created_at,
            },
            f"withdrawal {w.card_number}/{w.seq}",
        )

    def get_withdrawal(self, card_number: str, seq: int) -> WithdrawalRecord | None:
        r = self.c.execute(
            select(t.withdrawals).where(
                t.withdrawals.c.card_number == card_number, t.withdrawals.c.seq == seq
            )
        ).first()
        return None if r is None else _withdrawal(r)

    def iter_withdrawals(self) -> Iterator[WithdrawalRecord]:
        for r in self.c.execute(select(t.withdrawals)):
            yield _withdrawal(r)

    # -- per-card sums and credit statements -----------------------------------------
    def card_totals(self, card_number: str) -> tuple[int, int]:
        granted = self.c.execute(
            select(func.coalesce(func.sum(t.withdrawals.c.amount), 0)).where(
                t.withdrawals.c.card_number == card_number
            )
        ).scalar_one()
        spent = self.c.execute(
            select(func.coalesce(func.sum(t.payments.c.amount), 0)).where(
                t.payments.c.card_number == card_number
            )
        ).scalar_one()
        return int(granted), int(spent)

    def card_payments_between(self, card_number: str, after: int, upto: int) -> list[PaymentRecord]:
        rows = self.c.execute(
            select(t.payments)
            .where(
                t.payments.c.card_number == card_number,
                t.payments.c.accepted_at > after,
                t.payments.c.accepted_at <= upto,
            )
            .order_by(t.payments.c.ser)
        )
        return [_payment(r) for r in rows]

    def account_flow_since(self, account_id: str, since: int, kind: str | None = None) -> int:
        q = (
            select(func.coalesce(func.sum(t.entries.c.amount), 0))
            .join(t.transfers, t.transfers.c.id == t.entries.c.transfer_id)
            .where(t.entries.c.account_id == account_id, t.transfers.c.created_at > since)
        )
        if kind is not None:
            q = q.where(t.transfers.c.kind == kind)
        return int(self.c.execute(q).scalar_one())

    def add_statement(self, statement: StatementRecord) -> None:
        self._insert(
            t.statements,
            asdict(statement),
            f"statement {statement.card_number}/{statement.number}",
        )

    def last_statement(self, card_number: str) -> StatementRecord | None:
        row = self.c.execute(
            select(t.statements)
            .where(t.statements.c.card_number == card_number)
            .order_by(t.statements.c.number.desc())
            .limit(1)
        ).first()
        return None if row is None else StatementRecord(**row._asdict())

    def list_statements(self) -> list[StatementRecord]:
        rows = self.c.execute(
            select(t.statements).order_by(t.statements.c.card_number, t.statements.c.number)
        )
        return [StatementRecord(**r._asdict()) for r in rows]

    # -- payments across banks ------------------------------------------------------------
    def add_interbank(self, records: Sequence[InterbankRecord]) -> None:
        if records:
            self._insert(t.interbank, [asdict(r) for r in records], "interbank payment")

    def existing_interbank(
        self, keys: Sequence[tuple[str, str, int]]
    ) -> dict[tuple[str, str, int], InterbankRecord]:
        wanted = [(issuer, card, t.u64_text(ser)) for issuer, card, ser in keys]
        out: dict[tuple[str, str, int], InterbankRecord] = {}
        for row in self._rows_by_keys(t.interbank, ("issuer", "card_number", "ser"), wanted):
            r = _interbank(row)
            out[(r.issuer, r.card_number, r.ser)] = r
        return out

    def list_interbank(self) -> list[InterbankRecord]:
        c = t.interbank.c
        rows = self.c.execute(select(t.interbank).order_by(c.issuer, c.card_number, c.ser))
        return [InterbankRecord(**r._asdict()) for r in rows]

    # -- hot list and alerts -----------------------------------------------------------
    def add_hotlist(self, card_number: str, reason: str, at: int) -> HotlistEntry:
        # The counter row is updated first: that row lock serialises concurrent writers.
        version = int(
            self.c.execute(
                update(t.counters)
                .where(t.counters.c.name == "hotlist")
                .values(value=t.counters.c.value + 1)
                .returning(t.counters.c.value)
            ).scalar_one()
        )
        self.c.execute(
            t.hotlist.insert(),
            {"version": version, "card_number": card_number, "reason": reason[:64], "added_at": at},
        )
        return HotlistEntry(version, card_number, reason[:64], at)

    def hotlist_since(self, version: int) -> list[HotlistEntry]:
        return [
            HotlistEntry(int(r.version), r.card_number, r.reason, int(r.added_at))
            for r in self.c.execute(
                select(t.hotlist).where(t.hotlist.c.version > version).order_by(t.hotlist.c.version)
            )
        ]

    def add_alert(
        self, card_number: str, kind: str, detail: str, evidence: str, at: int
    ) -> AlertRecord:
        res = self.c.execute(
            t.alerts.insert().returning(t.alerts.c.id),
            {
                "card_number": card_number,
                "kind": kind,
                "detail": detail,
                "evidence": evidence,
                "created_at": at,
            },
        )
        return AlertRecord(int(res.scalar_one()), card_number, kind, detail, at, evidence)

    def list_alerts(self) -> list[AlertRecord]:
        return [
            AlertRecord(int(r.id), r.card_number, r.kind, r.detail, int(r.created_at), r.evidence)
            for r in self.c.execute(select(t.alerts).order_by(t.alerts.c.id))
        ]

    # -- idempotency ------------------------------------------------------------------
    def get_idempotent(self, key: str) -> tuple[str, str] | None:
        r = self.c.execute(select(t.idempotency).where(t.idempotency.c.key == key)).first()
        return None if r is None else (r.request_hash, r.response)

    def put_idempotent(self, key: str, request_hash: str, response: str, at: int) -> None:
        self._insert(
            t.idempotency,
            {"key": key, "request_hash": request_hash, "response": response, "created_at": at},
            f"idempotency key {key!r}",
        )

    # -- on-line checks -----------------------------------------------------------------
    def count_online_check(
        self, card_number: str, bank_id: str, sid: str, at: int, *, window: int, limit: int
    ) -> bool:
        oc = t.online_checks
        c = oc.c
        key = _online_key(card_number, bank_id, sid)
        if self._pg:
            # READ COMMITTED: two checks counting at once would both see limit - 1 and
            # both be recorded; the key's lock (held to the end of the transaction)
            # makes the second count after the first committed. 32 bits of a hash of the
            # key: two keys that share them only wait for each other.
            digest = hashlib.blake2b(
                "\0".join((card_number, bank_id, sid)).encode(), digest_size=4
            ).digest()
            self.c.execute(
                text("SELECT pg_advisory_xact_lock(:space, :key)"),
                {"space": _ONLINE_LOCKS, "key": int.from_bytes(digest, "big", signed=True)},
            )
        cutoff = at - window
        asked = self.c.execute(
            select(func.coalesce(func.sum(c.asks), 0)).where(key & (c.at > cutoff))
        ).scalar_one()
        if int(asked) >= limit:
            return False
        self.c.execute(delete(oc).where(key & (c.at <= cutoff)))
        done = self.c.execute(update(oc).where(key & (c.at == at)).values(asks=c.asks + 1))
        if done.rowcount == 0:
            self.c.execute(
                oc.insert(),
                {"card_number": card_number, "bank_id": bank_id, "sid": sid, "at": at, "asks": 1},
            )
        # other keys' expired rows, a few at a time; rows another check is deleting
        # are left to it (SKIP LOCKED, so that two sweeps never wait for each other)
        old = (
            select(c.card_number, c.bank_id, c.sid, c.at)
            .where(c.at <= cutoff)
            .order_by(c.at)
            .limit(ONLINE_SWEEP)
            .with_for_update(skip_locked=True)
        )
        self.c.execute(delete(oc).where(tuple_(c.card_number, c.bank_id, c.sid, c.at).in_(old)))
        return True

    def online_check_free_at(
        self, card_number: str, bank_id: str, sid: str, at: int, *, window: int, limit: int
    ) -> int:
        c = t.online_checks.c
        key = _online_key(card_number, bank_id, sid)
        asked = self.c.execute(select(c.at, c.asks).where(key & (c.at > at - window))).all()
        return online_free_at([(int(a), int(n)) for a, n in asked], at, window=window, limit=limit)

    # -- audit ------------------------------------------------------------------------
    def audit_entry_sums(self) -> dict[str, int]:
        q = select(t.entries.c.account_id, func.sum(t.entries.c.amount)).group_by(
            t.entries.c.account_id
        )
        return {r[0]: int(r[1]) for r in self.c.execute(q)}

    def audit_currency_sums(self) -> dict[str, int]:
        q = select(t.entries.c.currency, func.sum(t.entries.c.amount)).group_by(
            t.entries.c.currency
        )
        return {r[0]: int(r[1]) for r in self.c.execute(q)}

    def audit_unbalanced_transfers(self) -> list[str]:
        q = (
            select(t.transfers.c.id)
            .outerjoin(t.entries, t.entries.c.transfer_id == t.transfers.c.id)
            .group_by(t.transfers.c.id)
            .having(func.coalesce(func.sum(t.entries.c.amount), 0) != 0)
        )
        missing = select(t.transfers.c.id).where(
            ~select(t.entries.c.transfer_id)
            .where(t.entries.c.transfer_id == t.transfers.c.id)
            .exists()
        )
        return sorted({r[0] for r in self.c.execute(q)} | {r[0] for r in self.c.execute(missing)})

    def list_accounts(self) -> list[Account]:
        return [_account(r) for r in self.c.execute(select(t.accounts).order_by(t.accounts.c.id))]

    def audit_flows(self) -> dict[tuple[str, str | None], int]:
        e, tr = t.entries.c, t.transfers.c
        q = (
            select(e.account_id, tr.kind, func.sum(e.amount))
            .select_from(t.entries.outerjoin(t.transfers, tr.id == e.transfer_id))
            .group_by(e.account_id, tr.kind)
        )
        return {(r[0], r[1]): int(r[2]) for r in self.c.execute(q)}

    def audit_legs(self, transfer_kind: str, id_prefix: str) -> dict[str, dict[str, int]]:
        e, tr, a = t.entries.c, t.transfers.c, t.accounts.c
        q = (
            select(e.transfer_id, a.kind, func.sum(e.amount))
            .select_from(
                t.entries.join(t.transfers, tr.id == e.transfer_id).outerjoin(
                    t.accounts, a.id == e.account_id
                )
            )
            .where(
                tr.kind == transfer_kind,
                func.substr(tr.id, 1, len(id_prefix)) == id_prefix,
            )
            .group_by(e.transfer_id, a.kind)
        )
        out: dict[str, dict[str, int]] = {}
        for tid, kind, total in self.c.execute(q):
            out.setdefault(tid, {})[kind or ""] = int(total)
        return out

    def audit_currency_mismatches(self) -> list[tuple[str, str]]:
        e, tr, a = t.entries.c, t.transfers.c, t.accounts.c
        q = (
            select(e.transfer_id, e.account_id)
            .select_from(
                t.entries.join(t.transfers, tr.id == e.transfer_id).join(
                    t.accounts, a.id == e.account_id
                )
            )
            .where(or_(e.currency != tr.currency, e.currency != a.currency))
            .order_by(e.transfer_id, e.leg)
        )
        return [(r[0], r[1]) for r in self.c.execute(q)]

    def audit_payments_by_card(self) -> dict[str, CardPayments]:
        p = t.payments.c
        q = select(p.card_number, func.count(), func.sum(p.amount), func.max(p.ser)).group_by(
            p.card_number
        )
        return {r[0]: CardPayments(int(r[1]), int(r[2]), int(r[3])) for r in self.c.execute(q)}

    def audit_payments_by_deposit(self) -> dict[tuple[str, str], Totals]:
        p = t.payments.c
        q = select(p.deposit_id, p.sid, func.count(), func.sum(p.amount), func.sum(p.fee)).group_by(
            p.deposit_id, p.sid
        )
        return {(r[0], r[1]): Totals(int(r[2]), int(r[3]), int(r[4])) for r in self.c.execute(q)}

    def audit_interbank_acquired(self, acquirer: str) -> dict[tuple[str, str, str], Totals]:
        i = t.interbank.c
        q = (
            select(
                i.ref, i.sid, i.clearing_house, func.count(), func.sum(i.amount), func.sum(i.fee)
            )
            .where(i.acquirer == acquirer)
            .group_by(i.ref, i.sid, i.clearing_house)
        )
        return {
            (r[0], r[1], r[2]): Totals(int(r[3]), int(r[4]), int(r[5])) for r in self.c.execute(q)
        }

    def audit_withdrawals_by_card(self) -> dict[str, CardWithdrawals]:
        w = t.withdrawals.c
        q = select(
            w.card_number, func.count(), func.max(w.seq), func.sum(w.amount), func.sum(w.fee)
        ).group_by(w.card_number)
        return {
            r[0]: CardWithdrawals(int(r[1]), int(r[2]), int(r[3]), int(r[4]))
            for r in self.c.execute(q)
        }

    def audit_deposit_rows(self) -> dict[str, tuple[str, int]]:
        d = t.deposits.c
        q = select(d.deposit_id, d.sid, d.merchant_seq)
        return {r[0]: (r[1], int(r[2])) for r in self.c.execute(q)}

    def audit_row_misfits(self) -> list[str]:
        out = [
            f"payment {n}/{int(ser)}: "
            + ("its CARD-CERT is none the bank issued" if owner is None else
               f"its CARD-CERT is card {owner}'s")
            for n, ser, owner in self.c.execute(
                text(
                    "SELECT p.card_number, p.ser, c.card_number FROM payments p"
                    " LEFT JOIN certs c ON c.cert_id = p.cert_id"
                    " WHERE c.cert_id IS NULL OR c.card_number <> p.card_number"
                    " ORDER BY p.card_number, p.ser"
                )
            )
        ]  # fmt: skip
        for table, key in (("payments", "card_number"), ("interbank", "card_number")):
            out += [
                f"{table} row {n}/{int(ser)}: fee {fee} outside [0, {amount}]"
                for n, ser, fee, amount in self.c.execute(
                    text(
                        f"SELECT {key}, ser, fee, amount FROM {table}"  # noqa: S608 - constants
                        " WHERE fee < 0 OR fee > amount ORDER BY 1, 2"
                    )
                )
            ]
        out += [
            f"withdrawal {n}/{int(seq)}: fee {fee} below zero"
            for n, seq, fee in self.c.execute(
                text(
                    "SELECT card_number, seq, fee FROM withdrawals WHERE fee < 0"
                    " ORDER BY card_number, seq"
                )
            )
        ]
        return out

    def audit_spec_mismatches(self, bank_id: str, currency: str) -> list[tuple[str, int]]:
        """In the database, on the spec's bytes (``protocol/spec.py``'s layout): the bank
        id after the magic (its length in the last byte of its prefix, as ids are at most
        64 bytes), then the S_id, amount and currency exactly as the row's own values
        encode, then time and txn (16 bytes), then the CARD-CERT id."""
        sql = _SPEC_MISMATCHES_PG if self._pg else _SPEC_MISMATCHES_SQLITE
        rows = self.c.execute(text(sql), {"bank": bank_id, "cur": currency})
        return sorted((r[0], int(r[1])) for r in rows)

    def audit_payments_after(
        self, after: tuple[str, int] | None, limit: int
    ) -> list[PaymentRecord]:
        """A query written for the driver, its rows the driver's tuples (SQLAlchemy's
        result processing cost 45 µs a row, more than half the row's verification on
        secp256k1); one range of the primary key's index, from the row after ``after``.
        The key is compared as a row value, which both engines seek to in the index:
        ``card_number >= c AND (card_number > c OR ser > s)`` began the range at the
        card's first payment and filtered the rest, so each page of a card read all its
        earlier payments again (PostgreSQL the whole table)."""
        mark = "%s" if self._pg else "?"
        where, params = "", list[str | int]([limit])
        if after is not None:
            card, ser = after
            where = f" WHERE (card_number, ser) > ({mark}, {mark})"
            params = [card, t.u64_text(ser), limit]
        rows = self.c.exec_driver_sql(
            f"SELECT {', '.join(_PAYMENT_COLUMNS)} FROM payments{where}"  # noqa: S608 - constants
            f" ORDER BY card_number, ser LIMIT {mark}",
            tuple(params),
        )
        return [
            PaymentRecord(n, int(ser), bytes(cert), sid, amount, cur, bytes(spec),
                          bytes(b), bytes(r), dep, at, fee)
            for n, ser, cert, sid, amount, cur, spec, b, r, dep, at, fee in rows.cursor.fetchall()
        ]  # fmt: skip

    def audit_certs_after(self, after: bytes, limit: int) -> list[CertRecord]:
        c = t.certs.c
        q = select(t.certs).where(c.cert_id > after).order_by(c.cert_id).limit(limit)
        return [_cert(r) for r in self.c.execute(q)]


def _online_key(card_number: str, bank_id: str, sid: str) -> ColumnElement[bool]:
    """The rows of one (card, merchant's bank, S_id) in the on-line checks table."""
    c = t.online_checks.c
    return (c.card_number == card_number) & (c.bank_id == bank_id) & (c.sid == sid)
