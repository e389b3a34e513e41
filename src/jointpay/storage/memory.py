"""An in-memory :class:`Store` with the same semantics as the SQL ones, for fast tests.

Transactions are serialised by a lock; each one works on the live data after taking a
deep copy, which it restores if the block raises, so a failed use case leaves
nothing behind, exactly like a database rollback.
"""

from __future__ import annotations

import copy
import heapq
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TypeVar

from jointpay.domain.records import (
    Account,
    AlertRecord,
    CardRecord,
    CertRecord,
    DepositRecord,
    HotlistEntry,
    InterbankRecord,
    MerchantRecord,
    PaymentRecord,
    StatementRecord,
    Transfer,
    WithdrawalRecord,
)
from jointpay.storage.base import (
    MAX_BALANCE,
    ONLINE_SWEEP,
    BalanceOutOfRange,
    CardPayments,
    CardWithdrawals,
    Conflict,
    InsufficientFunds,
    NotFound,
    Totals,
    online_free_at,
)


@dataclass
class _Data:
    config: dict[str, str] = field(default_factory=dict)
    accounts: dict[str, Account] = field(default_factory=dict)
    transfers: dict[str, Transfer] = field(default_factory=dict)
    cards: dict[str, CardRecord] = field(default_factory=dict)
    certs: dict[bytes, CertRecord] = field(default_factory=dict)
    merchants: dict[str, MerchantRecord] = field(default_factory=dict)
    payments: dict[tuple[str, int], PaymentRecord] = field(default_factory=dict)
    deposits: dict[str, DepositRecord] = field(default_factory=dict)
    withdrawals: dict[tuple[str, int], WithdrawalRecord] = field(default_factory=dict)
    hotlist: list[HotlistEntry] = field(default_factory=list)
    alerts: list[AlertRecord] = field(default_factory=list)
    idempotency: dict[str, tuple[str, str]] = field(default_factory=dict)
    statements: dict[tuple[str, int], StatementRecord] = field(default_factory=dict)
    interbank: dict[tuple[str, str, int], InterbankRecord] = field(default_factory=dict)
    online_checks: dict[tuple[str, str, str], dict[int, int]] = field(default_factory=dict)
    """(card, bank, S_id) -> {second: checks asked in it}."""


K = TypeVar("K")
V = TypeVar("V")


def _get(table: dict[K, V], key: K, what: str) -> V:
    try:
        return table[key]
    except KeyError:
        raise NotFound(f"no {what} {key!r}") from None


class MemoryUnitOfWork:
    def __init__(self, data: _Data) -> None:
        self._d = data

    def config_get(self, key: str) -> str | None:
        return self._d.config.get(key)

    def config_set(self, key: str, value: str) -> None:
        self._d.config[key] = value

    def create_account(self, account: Account) -> None:
        if account.id in self._d.accounts:
            raise Conflict(f"account {account.id} exists")
        if account.balance != 0:
            raise ValueError("a new account starts at zero")
        self._d.accounts[account.id] = account

    def get_account(self, account_id: str) -> Account:
        return _get(self._d.accounts, account_id, "account")

    def get_accounts(self, account_ids: Sequence[str]) -> dict[str, Account]:
        return {i: self._d.accounts[i] for i in account_ids if i in self._d.accounts}

    def get_balances(self, account_ids: Sequence[str], *, lock: bool = False) -> dict[str, int]:
        del lock  # a transaction here holds the whole store
        return {a.id: a.balance for a in self.get_accounts(account_ids).values()}

    def find_accounts(self, *, kind: str | None = None, owner: str | None = None) -> list[Account]:
        return [
            a
            for a in self._d.accounts.values()
            if (kind is None or a.kind == kind) and (owner is None or a.owner == owner)
        ]

    def post(self, transfer: Transfer) -> None:
        if transfer.id in self._d.transfers:
            raise Conflict(f"transfer {transfer.id} was posted before")
        balances: dict[str, int] = {}
        for leg in transfer.legs:
            acc = self.get_account(leg.account_id)
            if acc.currency != transfer.currency:
                raise ValueError(f"account {acc.id} is in {acc.currency}")
            balances[acc.id] = balances.get(acc.id, acc.balance) + leg.amount
        for acc_id, new in balances.items():
            acc = self._d.accounts[acc_id]
            if new < 0 and not acc.allow_negative:
                raise InsufficientFunds(acc_id, acc.balance, acc.balance - new)
            if not -MAX_BALANCE <= new <= MAX_BALANCE:
                raise BalanceOutOfRange(acc_id, new)
        for acc_id, new in balances.items():
            self._d.accounts[acc_id] = replace(self._d.accounts[acc_id], balance=new)
        self._d.transfers[transfer.id] = transfer

    def get_transfer(self, transfer_id: str) -> Transfer:
        return _get(self._d.transfers, transfer_id, "transfer")

    def transfers_for(self, account_id: str, *, limit: int = 100) -> list[Transfer]:
        out = [
            t
            for t in self._d.transfers.values()
            if any(leg.account_id == account_id for leg in t.legs)
        ]
        return out[-limit:]

    def add_card(self, card: CardRecord) -> None:
        if card.card_number in self._d.cards:
            raise Conflict(f"card {card.card_number} exists")
        self._d.cards[card.card_number] = card

    def get_card(self, card_number: str) -> CardRecord:
        return _get(self._d.cards, card_number, "card")

    def lock_card(self, card_number: str) -> CardRecord:
        return self.get_card(card_number)

    def lock_cards(self, card_numbers: Sequence[str]) -> dict[str, CardRecord]:
        return {n: self._d.cards[n] for n in card_numbers if n in self._d.cards}

    def update_card(self, card: CardRecord) -> None:
        self.get_card(card.card_number)
        self._d.cards[card.card_number] = card

    def raise_highest_sers(self, highest: dict[str, int]) -> None:
        for number, top in highest.items():
            card = self.get_card(number)
            self._d.cards[number] = replace(card, highest_ser=max(top, card.highest_ser))

    def list_cards(self, *, holder: str | None = None, mode: str | None = None) -> list[CardRecord]:
        return sorted(
            (
                c
                for c in self._d.cards.values()
                if (holder is None or c.holder == holder) and (mode is None or c.mode == mode)
            ),
            key=lambda c: c.card_number,
        )

    def add_cert(self, cert: CertRecord) -> None:
        if cert.cert_id in self._d.certs:
            raise Conflict("cert exists")
        self._d.certs[cert.cert_id] = cert

    def get_cert(self, cert_id: bytes) -> CertRecord:
        return _get(self._d.certs, cert_id, "certificate")

    def get_certs(self, cert_ids: Sequence[bytes]) -> dict[bytes, CertRecord]:
        return {i: self._d.certs[i] for i in cert_ids if i in self._d.certs}

    def certs_for(self, card_number: str) -> list[CertRecord]:
        return sorted(
            (c for c in self._d.certs.values() if c.card_number == card_number),
            key=lambda c: c.issued_at,
        )

    def certs_without_powers(self, after: bytes, limit: int) -> list[CertRecord]:
        ids = sorted(i for i, c in self._d.certs.items() if c.key_powers is None and i > after)
        return [self._d.certs[i] for i in ids[:limit]]

    def set_cert_powers(self, cert_id: bytes, powers: bytes) -> None:
        cert = _get(self._d.certs, cert_id, "certificate")
        self._d.certs[cert_id] = replace(cert, key_powers=powers)

    def add_merchant(self, merchant: MerchantRecord) -> None:
        if merchant.sid in self._d.merchants or any(
            m.name == merchant.name for m in self._d.merchants.values()
        ):
            raise Conflict(f"merchant {merchant.name!r} exists")
        self._d.merchants[merchant.sid] = merchant

    def get_merchant(self, sid: str) -> MerchantRecord:
        return _get(self._d.merchants, sid, "merchant")

    def get_merchant_by_name(self, name: str) -> MerchantRecord:
        for m in self._d.merchants.values():
            if m.name == name:
                return m
        raise NotFound(f"no merchant named {name!r}")

    def lock_merchant(self, sid: str) -> MerchantRecord:
        return self.get_merchant(sid)

    def set_merchant_seq(self, sid: str, seq: int) -> None:
        self._d.merchants[sid] = replace(self.get_merchant(sid), last_seq=seq)

    def list_merchants(self) -> list[MerchantRecord]:
        return list(self._d.merchants.values())

    def add_payments(self, payments: Sequence[PaymentRecord]) -> None:
        keys = [(p.card_number, p.ser) for p in payments]
        if len(set(keys)) != len(keys) or any(k in self._d.payments for k in keys):
            raise Conflict("a payment (card, ser) was deposited before")
        for p in payments:
            self._d.payments[(p.card_number, p.ser)] = p

    def get_payment(self, card_number: str, ser: int) -> PaymentRecord | None:
        return self._d.payments.get((card_number, ser))

    def existing_sers(self, card_number: str, sers: Sequence[int]) -> dict[int, PaymentRecord]:
        return {
            s: self._d.payments[(card_number, s)]
            for s in sers
            if (card_number, s) in self._d.payments
        }

    def existing_payments(
        self, keys: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], PaymentRecord]:
        return {k: self._d.payments[k] for k in keys if k in self._d.payments}

    def iter_payments(self) -> Iterator[PaymentRecord]:
        return iter(list(self._d.payments.values()))

    def add_deposit(self, deposit: DepositRecord) -> None:
        if deposit.deposit_id in self._d.deposits or any(
            d.sid == deposit.sid and d.merchant_seq == deposit.merchant_seq
            for d in self._d.deposits.values()
        ):
            raise Conflict(f"deposit {deposit.deposit_id} exists")
        self._d.deposits[deposit.deposit_id] = deposit

    def get_deposit(self, deposit_id: str) -> DepositRecord | None:
        return self._d.deposits.get(deposit_id)

    def add_withdrawal(self, withdrawal: WithdrawalRecord) -> None:
        key = (withdrawal.card_number, withdrawal.seq)
        if key in self._d.withdrawals:
            raise Conflict(f"withdrawal {key} exists")
        self._d.withdrawals[key] = withdrawal

    def get_withdrawal(self, card_number: str, seq: int) -> WithdrawalRecord | None:
        return self._d.withdrawals.get((card_number, seq))

    def iter_withdrawals(self) -> Iterator[WithdrawalRecord]:
        return iter(list(self._d.withdrawals.values()))

    def card_totals(self, card_number: str) -> tuple[int, int]:
        granted = sum(
            w.amount for w in self._d.withdrawals.values() if w.card_number == card_number
        )
        spent = sum(p.amount for p in self._d.payments.values() if p.card_number == card_number)
        return granted, spent

    def card_payments_between(self, card_number: str, after: int, upto: int) -> list[PaymentRecord]:
        return sorted(
            (
                p
                for p in self._d.payments.values()
                if p.card_number == card_number and after < p.accepted_at <= upto
            ),
            key=lambda p: p.ser,
        )

    def account_flow_since(self, account_id: str, since: int, kind: str | None = None) -> int:
        return sum(
            leg.amount
            for t in self._d.transfers.values()
            if t.created_at > since and kind in (None, t.kind)
            for leg in t.legs
            if leg.account_id == account_id
        )

    def add_statement(self, statement: StatementRecord) -> None:
        key = (statement.card_number, statement.number)
        if key in self._d.statements:
            raise Conflict(f"statement {key} exists")
        self._d.statements[key] = statement

    def last_statement(self, card_number: str) -> StatementRecord | None:
        mine = [s for (c, _), s in self._d.statements.items() if c == card_number]
        return max(mine, key=lambda s: s.number, default=None)

    def list_statements(self) -> list[StatementRecord]:
        return [self._d.statements[k] for k in sorted(self._d.statements)]

    def add_interbank(self, records: Sequence[InterbankRecord]) -> None:
        keys = [(r.issuer, r.card_number, r.ser) for r in records]
        if len(set(keys)) != len(keys) or any(k in self._d.interbank for k in keys):
            raise Conflict("an interbank payment exists already")
        for k, r in zip(keys, records, strict=True):
            self._d.interbank[k] = r

    def existing_interbank(
        self, keys: Sequence[tuple[str, str, int]]
    ) -> dict[tuple[str, str, int], InterbankRecord]:
        return {k: self._d.interbank[k] for k in keys if k in self._d.interbank}

    def list_interbank(self) -> list[InterbankRecord]:
        return [self._d.interbank[k] for k in sorted(self._d.interbank)]

    def add_hotlist(self, card_number: str, reason: str, at: int) -> HotlistEntry:
        entry = HotlistEntry(len(self._d.hotlist) + 1, card_number, reason, at)
        self._d.hotlist.append(entry)
        return entry

    def hotlist_since(self, version: int) -> list[HotlistEntry]:
        return [e for e in self._d.hotlist if e.version > version]

    def add_alert(
        self, card_number: str, kind: str, detail: str, evidence: str, at: int
    ) -> AlertRecord:
        alert = AlertRecord(len(self._d.alerts) + 1, card_number, kind, detail, at, evidence)
        self._d.alerts.append(alert)
        return alert

    def list_alerts(self) -> list[AlertRecord]:
        return list(self._d.alerts)

    def get_idempotent(self, key: str) -> tuple[str, str] | None:
        return self._d.idempotency.get(key)

    def put_idempotent(self, key: str, request_hash: str, response: str, at: int) -> None:
        del at  # the in-memory store keeps no expiry time
        if key in self._d.idempotency:
            raise Conflict(f"idempotency key {key!r} is taken")
        self._d.idempotency[key] = (request_hash, response)

    def count_online_check(
        self, card_number: str, bank_id: str, sid: str, at: int, *, window: int, limit: int
    ) -> bool:
        cutoff = at - window
        checks = self._d.online_checks
        asked = {t: n for t, n in checks.get((card_number, bank_id, sid), {}).items() if t > cutoff}
        if sum(asked.values()) >= limit:
            return False
        asked[at] = asked.get(at, 0) + 1
        checks[(card_number, bank_id, sid)] = asked
        swept = 0
        for key in list(checks):
            for t in sorted(checks[key]):
                if t > cutoff or swept == ONLINE_SWEEP:
                    break
                del checks[key][t]
                swept += 1
            if not checks[key]:
                del checks[key]
        return True

    def online_check_free_at(
        self, card_number: str, bank_id: str, sid: str, at: int, *, window: int, limit: int
    ) -> int:
        asked = self._d.online_checks.get((card_number, bank_id, sid), {})
        return online_free_at(list(asked.items()), at, window=window, limit=limit)

    def audit_entry_sums(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self._d.transfers.values():
            for leg in t.legs:
                out[leg.account_id] = out.get(leg.account_id, 0) + leg.amount
        return out

    def audit_currency_sums(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self._d.transfers.values():
            out[t.currency] = out.get(t.currency, 0) + sum(leg.amount for leg in t.legs)
        return out

    def audit_unbalanced_transfers(self) -> list[str]:
        return [t.id for t in self._d.transfers.values() if sum(leg.amount for leg in t.legs)]

    def list_accounts(self) -> list[Account]:
        return list(self._d.accounts.values())

    def audit_flows(self) -> dict[tuple[str, str | None], int]:
        out: dict[tuple[str, str | None], int] = {}
        for t in self._d.transfers.values():
            for leg in t.legs:
                key: tuple[str, str | None] = (leg.account_id, t.kind)
                out[key] = out.get(key, 0) + leg.amount
        return out

    def audit_legs(self, transfer_kind: str, id_prefix: str) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for t in self._d.transfers.values():
            if t.kind != transfer_kind or not t.id.startswith(id_prefix):
                continue
            sums = out.setdefault(t.id, {})
            for leg in t.legs:
                acc = self._d.accounts.get(leg.account_id)
                kind = acc.kind.value if acc is not None else ""
                sums[kind] = sums.get(kind, 0) + leg.amount
        return out

    def audit_currency_mismatches(self) -> list[tuple[str, str]]:
        return [
            (t.id, leg.account_id)
            for t in sorted(self._d.transfers.values(), key=lambda t: t.id)
            for leg in t.legs
            if leg.account_id in self._d.accounts
            and self._d.accounts[leg.account_id].currency != t.currency
        ]

    def audit_payments_by_card(self) -> dict[str, CardPayments]:
        out: dict[str, CardPayments] = {}
        for p in self._d.payments.values():
            n, amount, top = out.get(p.card_number, CardPayments(0, 0, -1))
            out[p.card_number] = CardPayments(n + 1, amount + p.amount, max(top, p.ser))
        return out

    def audit_payments_by_deposit(self) -> dict[tuple[str, str], Totals]:
        out: dict[tuple[str, str], Totals] = {}
        for p in self._d.payments.values():
            n, amount, fee = out.get((p.deposit_id, p.sid), Totals(0, 0, 0))
            out[(p.deposit_id, p.sid)] = Totals(n + 1, amount + p.amount, fee + p.fee)
        return out

    def audit_interbank_acquired(self, acquirer: str) -> dict[tuple[str, str, str], Totals]:
        out: dict[tuple[str, str, str], Totals] = {}
        for r in self._d.interbank.values():
            if r.acquirer == acquirer:
                key = (r.ref, r.sid, r.clearing_house)
                n, amount, fee = out.get(key, Totals(0, 0, 0))
                out[key] = Totals(n + 1, amount + r.amount, fee + r.fee)
        return out

    def audit_withdrawals_by_card(self) -> dict[str, CardWithdrawals]:
        out: dict[str, CardWithdrawals] = {}
        for w in self._d.withdrawals.values():
            n, top, amount, fee = out.get(w.card_number, CardWithdrawals(0, 0, 0, 0))
            out[w.card_number] = CardWithdrawals(
                n + 1, max(top, w.seq), amount + w.amount, fee + w.fee
            )
        return out

    def audit_deposit_rows(self) -> dict[str, tuple[str, int]]:
        return {d.deposit_id: (d.sid, d.merchant_seq) for d in self._d.deposits.values()}

    def audit_row_misfits(self) -> list[str]:
        out = []
        for (n, ser), p in sorted(self._d.payments.items()):
            cert = self._d.certs.get(p.cert_id)
            if cert is None:
                out.append(f"payment {n}/{ser}: its CARD-CERT is none the bank issued")
            elif cert.card_number != n:
                out.append(f"payment {n}/{ser}: its CARD-CERT is card {cert.card_number}'s")
        for table, rows in (
            ("payments", sorted((k, p.fee, p.amount) for k, p in self._d.payments.items())),
            (
                "interbank",
                sorted(
                    ((r.card_number, r.ser), r.fee, r.amount) for r in self._d.interbank.values()
                ),
            ),
        ):
            out += [
                f"{table} row {n}/{ser}: fee {fee} outside [0, {amount}]"
                for (n, ser), fee, amount in rows
                if not 0 <= fee <= amount
            ]
        out += [
            f"withdrawal {n}/{seq}: fee {w.fee} below zero"
            for (n, seq), w in sorted(self._d.withdrawals.items())
            if w.fee < 0
        ]
        return out

    def audit_spec_mismatches(self, bank_id: str, currency: str) -> list[tuple[str, int]]:
        bad = []
        for p in self._d.payments.values():
            got = _spec_fields(p.spec)
            if (
                got is None
                or got[1:] != (p.sid, p.amount, p.currency, p.cert_id)
                or p.currency != currency
                or (not p.deposit_id.startswith("ib:") and got[0] != bank_id)
            ):
                bad.append((p.card_number, p.ser))
        return sorted(bad)

    def audit_payments_after(
        self, after: tuple[str, int] | None, limit: int
    ) -> list[PaymentRecord]:
        keys = self._d.payments.keys()
        page = heapq.nsmallest(limit, keys if after is None else (k for k in keys if k > after))
        return [self._d.payments[k] for k in page]

    def audit_certs_after(self, after: bytes, limit: int) -> list[CertRecord]:
        page = heapq.nsmallest(limit, (i for i in self._d.certs if i > after))
        return [self._d.certs[i] for i in page]


def _spec_fields(spec: bytes) -> tuple[str, str, int, str, bytes] | None:
    """A spec's bank id, S_id, amount, currency and CARD-CERT id, read where the SQL
    stores read them (``protocol/spec.py``'s layout), or None if it is too short."""
    if spec[:4] != b"JPS1":
        return None
    bank, pos = _prefixed(spec, 4)
    sid, pos = _prefixed(spec, pos)
    amount = int.from_bytes(spec[pos : pos + 8], "big")
    currency, pos = _prefixed(spec, pos + 8)
    if pos + 32 > len(spec):
        return None
    return bank, sid, amount, currency, spec[pos + 16 : pos + 32]


def _prefixed(data: bytes, pos: int) -> tuple[str, int]:
    """The length-prefixed text at ``pos``, and where the next field starts."""
    end = pos + 4 + int.from_bytes(data[pos : pos + 4], "big")
    return data[pos + 4 : end].decode("latin-1"), end


class MemoryStore:
    """A :class:`~jointpay.storage.base.Store` in process memory."""

    def __init__(self) -> None:
        self._data = _Data()
        self._lock = threading.RLock()

    @contextmanager
    def transaction(self, *, snapshot: bool = False) -> Iterator[MemoryUnitOfWork]:  # noqa: ARG002
        with self._lock:  # one at a time: every transaction is a snapshot
            before = copy.deepcopy(self._data)
            try:
                yield MemoryUnitOfWork(self._data)
            except BaseException:
                self._data.__dict__.update(before.__dict__)
                raise

    def close(self) -> None:
        """Nothing to release."""
