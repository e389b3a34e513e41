"""The merchant terminal's own store: taken payments, counters, the hot list.

This is the service provider's database, not the bank's: payments wait here between
the offline payment (FIG. 8) and the deposit (FIG. 9). SQLite with ``synchronous=FULL``
so a payment the terminal confirmed survives a crash; ``(card, ser)`` is the primary
key, so the terminal refuses a payment it already took even across restarts.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from jointpay.crypto.certs import SigningKey, VerifyKey
from jointpay.crypto.group import ModpParams, resolver
from jointpay.protocol.deposit import RETRYABLE_REASONS
from jointpay.protocol.terminal import InFlight, TakenPayment, TerminalConfig
from jointpay.storage.files import create_private
from jointpay.storage.sqlite_blobs import register_identity_adapters

SCHEMA_VERSION: Final = 4
_IN_FLIGHT: Final = """
CREATE TABLE IF NOT EXISTS in_flight (
    card_number TEXT PRIMARY KEY,
    txn INTEGER NOT NULL,
    ser TEXT NOT NULL,
    card_cert BLOB NOT NULL
)"""
_SCHEMA: Final = (
    """
CREATE TABLE IF NOT EXISTS payments (
    card_number TEXT NOT NULL,
    ser TEXT NOT NULL,
    cert_id BLOB NOT NULL,
    card_cert BLOB NOT NULL,
    suite TEXT NOT NULL,
    joint_key BLOB NOT NULL,
    spec BLOB NOT NULL,
    b BLOB NOT NULL,
    r BLOB NOT NULL,
    hint BLOB NOT NULL,
    amount INTEGER NOT NULL,
    currency TEXT NOT NULL,
    time INTEGER NOT NULL,
    txn INTEGER NOT NULL,
    deposit_id TEXT,
    status TEXT,
    reason TEXT,
    PRIMARY KEY (card_number, ser)
);
CREATE INDEX IF NOT EXISTS payments_pending ON payments (deposit_id);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS hotlist (card_number TEXT PRIMARY KEY, version INTEGER NOT NULL);
"""
    + _IN_FLIGHT
)
_UPGRADES: Final = {
    1: _IN_FLIGHT,
    2: "ALTER TABLE in_flight ADD COLUMN spec BLOB NOT NULL DEFAULT X''",
    3: "ALTER TABLE payments ADD COLUMN deposited_at INTEGER",
}
"""What takes a store from version ``n`` to ``n + 1``: version 2 keeps the PAY in flight
(:meth:`SqliteTerminalStore.begin_pay`), version 3 its spec too (a PAY noted before
has none, and is recovered without comparing it), version 4 when the bank settled each
payment (its receipt's time; NULL for one settled before)."""


class TerminalStoreError(Exception):
    """The terminal's store is unusable (unknown schema version, corrupt)."""


def _ser_key(ser: int) -> str:
    return f"{ser:020d}"  # full u64 range, ordered as text


_PENDING: Final = (
    "SELECT card_number, card_cert, cert_id, suite, joint_key, ser, spec, b, r, hint,"
    " amount, currency, time, txn FROM payments WHERE deposit_id IS NULL"
)


class SqliteTerminalStore:
    """:class:`jointpay.protocol.terminal.TerminalStore` on a local SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        register_identity_adapters()  # a taken payment binds seven byte strings, a result NULLs
        create_private(path)  # the terminal's payments and its deposit sequence
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=30000")
        with self._tx():  # one writer at a time: two terminals opening the file at once
            found = version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:  # a new store: version 2's tables, then the upgrades
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        self._db.execute(stmt)
                version = 2
            if version in _UPGRADES:
                for step in range(version, SCHEMA_VERSION):
                    self._db.execute(_UPGRADES[step])
            elif version != SCHEMA_VERSION:
                raise TerminalStoreError(
                    f"{path}: schema version {version}, expected {SCHEMA_VERSION}"
                )
            if found != SCHEMA_VERSION:
                self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        self._db.close()

    def _tx(self) -> _Tx:
        return _Tx(self._db)

    # -- TerminalStore ----------------------------------------------------------------
    def has_payment(self, card_number: str, ser: int) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM payments WHERE card_number=? AND ser=?", (card_number, _ser_key(ser))
        ).fetchone()
        return row is not None

    def add_payment(self, payment: TakenPayment) -> None:
        """Keep a taken payment; the PAY in flight that it answers ends with it."""
        p = payment
        with self._tx():
            self._db.execute(
                "DELETE FROM in_flight WHERE card_number=? AND txn=?", (p.card_number, p.txn)
            )
            self._db.execute(
                "INSERT INTO payments (card_number, ser, cert_id, card_cert, suite, joint_key,"
                " spec, b, r, hint, amount, currency, time, txn)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    p.card_number,
                    _ser_key(p.ser),
                    p.cert_id,
                    p.card_cert,
                    p.suite,
                    p.joint_key,
                    p.spec,
                    p.b,
                    p.r,
                    p.hint,
                    p.amount,
                    p.currency,
                    p.time,
                    p.txn,
                ),
            )

    def begin_pay(self, flight: InFlight) -> None:
        """Note a PAY about to be sent, before it is: should its answer be lost (the
        card pulled, the terminal's power cut), the card's next reading here recovers
        it (:meth:`Terminal.pay`). Durable like a taken payment."""
        with self._tx():
            self._db.execute(
                "INSERT INTO in_flight (card_number, txn, ser, card_cert, spec)"
                " VALUES (?,?,?,?,?) ON CONFLICT(card_number) DO UPDATE SET"
                " txn=excluded.txn, ser=excluded.ser, card_cert=excluded.card_cert,"
                " spec=excluded.spec",
                (
                    flight.card_number,
                    flight.txn,
                    _ser_key(flight.ser),
                    flight.card_cert,
                    flight.spec,
                ),
            )

    def in_flight(self, card_number: str) -> InFlight | None:
        row = self._db.execute(
            "SELECT txn, ser, card_cert, spec FROM in_flight WHERE card_number=?",
            (card_number,),
        ).fetchone()
        if row is None:
            return None
        return InFlight(card_number, int(row[0]), int(row[1]), row[2], bytes(row[3]))

    def end_pay(self, card_number: str) -> None:
        """The PAY in flight for this card is settled: the card refused it, or never ran it."""
        with self._tx():
            self._db.execute("DELETE FROM in_flight WHERE card_number=?", (card_number,))

    def next_txn(self) -> int:
        return self._next("txn")

    def next_deposit_seq(self) -> int:
        return self._next("deposit_seq")

    def _next(self, name: str) -> int:
        with self._tx():
            self._db.execute(
                "INSERT INTO counters (name, value) VALUES (?, 1) "
                "ON CONFLICT(name) DO UPDATE SET value = value + 1",
                (name,),
            )
            row = self._db.execute("SELECT value FROM counters WHERE name=?", (name,)).fetchone()
        return int(row[0])

    # -- deposit bookkeeping -----------------------------------------------------------
    def pending(self, *, deposited_since: int | None = None) -> Iterator[TakenPayment]:
        """The payments not yet deposited; with ``deposited_since`` (Unix seconds, the
        bank's clock), also those the bank settled at or after it, whenever they were
        taken: a bank restored from a backup has lost the deposits made after the
        backup, and takes each payment sent again once (the others come back
        ``duplicate``). A payment settled before this store kept the time (NULL) is
        given too: when it was deposited is not known."""
        cur = (
            self._db.execute(_PENDING + " ORDER BY card_number, ser")
            if deposited_since is None
            else self._db.execute(
                _PENDING + " OR deposited_at IS NULL OR deposited_at >= ?"
                " ORDER BY card_number, ser",
                (deposited_since,),
            )
        )
        for row in cur:
            yield TakenPayment(
                row[0],
                row[1],
                row[2],
                row[3],
                row[4],
                int(row[5]),
                row[6],
                row[7],
                row[8],
                row[9],
                row[10],
                row[11],
                row[12],
                row[13],
            )

    def count_pending(self) -> int:
        return int(
            self._db.execute("SELECT count(*) FROM payments WHERE deposit_id IS NULL").fetchone()[0]
        )

    def record_results(
        self, deposit_id: str, results: Iterable[dict[str, Any]], at: int | None = None
    ) -> int:
        """Mark the payments a receipt settled (accepted or rejected) at ``at`` (the
        receipt's time: :meth:`pending`'s ``deposited_since``); return how many.

        Only payments still pending here change. When fewer are pending than the
        receipt answers (a batch file this terminal did not take, or took in part), the
        pending ones are read first and only they are updated: an update that finds no
        row still costs its key lookup, 37 ms for a receipt of 10,000 payments that
        this terminal does not hold."""
        settled: list[tuple[str, int, object, object]] = []
        add = settled.append
        for r in results:  # a receipt's, checked by its signature: one per payment sent
            ser, card, reason = r.get("ser"), r.get("card"), r.get("reason")
            if type(ser) is int and type(card) is str and reason not in RETRYABLE_REASONS:
                add((card, ser, r.get("status"), reason))
            # a retryable rejection stays pending: sent again next time
        with self._tx():
            (pending,) = self._db.execute(
                "SELECT count(*) FROM payments WHERE deposit_id IS NULL"
            ).fetchone()
            if pending < len(settled):
                held = {
                    (card, int(ser))
                    for card, ser in self._db.execute(
                        "SELECT card_number, ser FROM payments WHERE deposit_id IS NULL"
                    )
                }
                settled = [row for row in settled if (row[0], row[1]) in held]
            if not settled:
                return 0
            cur = self._db.executemany(
                "UPDATE payments SET deposit_id=?, status=?, reason=?, deposited_at=?"
                " WHERE card_number=? AND ser=? AND deposit_id IS NULL",
                [(deposit_id, st, why, at, card, _ser_key(ser)) for card, ser, st, why in settled],
            )
        return max(cur.rowcount, 0)

    # -- hot list as last synchronised -------------------------------------------------
    def hotlist(self) -> frozenset[str]:
        return frozenset(r[0] for r in self._db.execute("SELECT card_number FROM hotlist"))

    def hotlist_version(self) -> int:
        row = self._db.execute("SELECT max(version) FROM hotlist").fetchone()
        return int(row[0] or 0)

    def add_scheme_hotlist(self, cards: Iterable[str]) -> int:
        """Other banks' hot-listed cards (version 0: they do not move our bank's cursor)."""
        n = 0
        with self._tx():
            for card in cards:
                cur = self._db.execute(
                    "INSERT INTO hotlist (card_number, version) VALUES (?, 0)"
                    " ON CONFLICT(card_number) DO NOTHING",
                    (card,),
                )
                n += cur.rowcount
        return n

    def add_hotlist(self, entries: Iterable[tuple[str, int]]) -> None:
        with self._tx():
            for card, version in entries:
                self._db.execute(
                    "INSERT INTO hotlist (card_number, version) VALUES (?, ?)"
                    " ON CONFLICT(card_number) DO UPDATE SET version=excluded.version",
                    (card, version),
                )


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.db.execute("ROLLBACK" if exc_type is not None else "COMMIT")


@dataclass(frozen=True)
class Registration:
    """The merchant's account at another bank: its S_id and MERCHANT-CERT there.

    A merchant registered with several banks shows each bank's cards the MERCHANT-CERT
    of their own bank, and deposits each bank's payments there (the patent's first
    routing between banks: "the service provider can sort the payments it receives
    accordingly and contacts different banks appropriately").
    """

    bank_id: str
    sid: str
    merchant_cert: bytes
    bank_key: bytes
    bank_url: str
    """Where that bank is reached: ``http(s)://`` or the database URL of an embedded bank."""
    group: dict[str, str] | None = None
    """That bank's own modp group ((p, q, g) as hex), if it has one."""
    group_name: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "bank_id": self.bank_id,
            "sid": self.sid,
            "merchant_cert": self.merchant_cert.hex(),
            "bank_key": self.bank_key.hex(),
            "bank_url": self.bank_url,
            "group": self.group,
            "group_name": self.group_name,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Registration:
        return cls(
            str(d["bank_id"]),
            str(d["sid"]),
            bytes.fromhex(d["merchant_cert"]),
            bytes.fromhex(d["bank_key"]),
            str(d["bank_url"]),
            d.get("group") or None,
            d.get("group_name") or None,
        )


@dataclass(frozen=True)
class TerminalFile:
    """The terminal's configuration: its S_id, MERCHANT-CERT, key and trusted bank keys."""

    name: str
    bank_id: str
    sid: str
    merchant_cert: bytes
    signing_key: bytes
    bank_keys: dict[str, bytes]
    bank_url: str | None = None
    bank_groups: dict[str, dict[str, str]] | None = None
    """The banks' own modp groups by name ((p, q, g) as hex), from their parameters."""
    bank_cert: bytes = b""
    """Our bank's BANK-CERT, when it belongs to a scheme: shown to other banks' cards."""
    registrations: dict[str, Registration] = field(default_factory=dict)
    """Our accounts at other banks, by bank id (``merchant add-bank``)."""

    def __repr__(self) -> str:
        return f"TerminalFile({self.name!r}, {self.sid})"

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": 1,
                "name": self.name,
                "bank_id": self.bank_id,
                "sid": self.sid,
                "merchant_cert": self.merchant_cert.hex(),
                "signing_key": self.signing_key.hex(),
                "bank_keys": {k: v.hex() for k, v in self.bank_keys.items()},
                "bank_url": self.bank_url,
                "bank_groups": self.bank_groups or {},
                "bank_cert": self.bank_cert.hex(),
                "registrations": {k: r.to_json() for k, r in self.registrations.items()},
            },
            sort_keys=True,
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> TerminalFile:
        d = json.loads(text)
        if d.get("version") != 1:
            raise TerminalStoreError("terminal configuration has an unknown version")
        return cls(
            d["name"],
            d["bank_id"],
            d["sid"],
            bytes.fromhex(d["merchant_cert"]),
            bytes.fromhex(d["signing_key"]),
            {k: bytes.fromhex(v) for k, v in d["bank_keys"].items()},
            d.get("bank_url"),
            d.get("bank_groups") or None,
            bytes.fromhex(d.get("bank_cert", "")),
            {k: Registration.from_json(r) for k, r in (d.get("registrations") or {}).items()},
        )

    def payee(self, bank_id: str) -> tuple[str, bytes]:
        """(S_id, MERCHANT-CERT) under which we are paid by ``bank_id``'s cards."""
        reg = self.registrations.get(bank_id)
        return (reg.sid, reg.merchant_cert) if reg else (self.sid, self.merchant_cert)

    def banks(self) -> list[str]:
        """The banks we hold an account with: ours first, then the registrations."""
        return [self.bank_id, *sorted(self.registrations)]

    def config(self, hotlist: frozenset[str]) -> TerminalConfig:
        keys = {k: VerifyKey(k, v) for k, v in self.bank_keys.items()}
        groups = {n: ModpParams.from_json(n, g) for n, g in (self.bank_groups or {}).items()}
        for reg in self.registrations.values():  # a bank we are registered with is trusted
            keys[reg.bank_id] = VerifyKey(reg.bank_id, reg.bank_key)
            if reg.group and reg.group_name:
                groups[reg.group_name] = ModpParams.from_json(reg.group_name, reg.group)
        return TerminalConfig(
            self.bank_id,
            self.sid,
            self.merchant_cert,
            SigningKey.from_private_bytes(self.sid, self.signing_key),
            keys,
            hotlist,
            resolver(groups),
            self.bank_cert,
            {k: (r.sid, r.merchant_cert) for k, r in self.registrations.items()},
        )
