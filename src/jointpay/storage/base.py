"""The storage seam: a :class:`Store` hands out :class:`UnitOfWork` transactions.

Every use case of :mod:`jointpay.service` runs inside exactly one unit of work; it
either commits whole or leaves nothing behind. Three implementations satisfy this
protocol and one contract test suite (``tests/contract``) runs unchanged over all of
them: in-memory (fast tests), SQLite (the embedded default) and PostgreSQL.

Exactly-once is enforced by the database, not only by Python: ``(card_number, ser)``
of payments, transfer ids, ``(card_number, seq)`` of withdrawals, deposit ids and
idempotency keys are unique constraints, and :meth:`UnitOfWork.lock_card` /
:meth:`UnitOfWork.lock_merchant` take row locks (``SELECT ... FOR UPDATE`` on
PostgreSQL; SQLite serialises writers with ``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Final, NamedTuple, Protocol

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


class StorageError(Exception):
    """Base of storage errors."""


class InjectedFault(StorageError):
    """A failure a :class:`FaultPlan` asked for (tests and drills only)."""


@dataclass
class FaultPlan:
    """Make one statement or one commit of a store fail, on purpose.

    In the spirit of FoundationDB's "buggify": the store counts the SQL statements
    and the commits it runs while the plan is installed, and raises
    :class:`InjectedFault` at statement number ``fail_statement`` (1-based), or just
    before commit number ``fail_commit``. With neither set, it only counts, which is
    how a test learns how many statements a use case runs. Nothing in production
    installs a plan.
    """

    fail_statement: int | None = None
    fail_commit: int | None = None
    statements: int = 0
    commits: int = 0
    fired: bool = False

    def on_statement(self) -> None:
        self.statements += 1
        if self.statements == self.fail_statement:
            self.fired = True
            raise InjectedFault(f"injected failure at statement {self.statements}")

    def on_commit(self) -> None:
        self.commits += 1
        if self.commits == self.fail_commit:
            self.fired = True
            raise InjectedFault(f"injected failure before commit {self.commits}")


class NotFound(StorageError):
    """The record asked for does not exist."""


class Conflict(StorageError):
    """A uniqueness rule refused the write (the record exists already)."""


class InsufficientFunds(StorageError):
    """A transfer would take an account that may not go negative below zero."""

    def __init__(self, account_id: str, balance: int, needed: int) -> None:
        super().__init__(f"account {account_id} has {balance}, needs {needed}")
        self.account_id = account_id
        self.balance = balance
        self.needed = needed


class BalanceOutOfRange(StorageError):
    """A transfer would take an account's balance past what a balance may hold
    (±(2^63 − 1) minor units: the database's 64-bit integer)."""

    def __init__(self, account_id: str, balance: int) -> None:
        super().__init__(f"account {account_id} would hold {balance} minor units, past ±(2^63 - 1)")
        self.account_id = account_id


MAX_BALANCE: Final = (1 << 63) - 1
"""The largest balance, either way, an account may hold (a 64-bit column)."""

ONLINE_SWEEP: Final = 100
"""How many expired on-line check rows of other merchants and cards one check deletes
(:meth:`UnitOfWork.count_online_check`): more than it adds, so the rows of keys never
asked again go too."""


def online_free_at(asked: Sequence[tuple[int, int]], at: int, *, window: int, limit: int) -> int:
    """The first second from which a key whose checks in the window ``(at - window, at]``
    are ``asked`` (``(second, count)`` rows, any order) holds fewer than ``limit``:
    ``at`` if it does now, else the second its oldest checks leave the window (a check
    of second ``t`` counts while ``t > now - window``, so it leaves at ``t + window``)."""
    rows = sorted((t, n) for t, n in asked if t > at - window)
    excess = sum(n for _, n in rows) - limit + 1  # checks that must leave first
    if excess <= 0:
        return at
    for t, n in rows:
        excess -= n
        if excess <= 0:
            return t + window
    raise AssertionError("counted from these rows")  # pragma: no cover


class Totals(NamedTuple):
    """Payment rows counted, their amounts and their fees summed (the audit's sums)."""

    rows: int
    amount: int
    fee: int


class CardPayments(NamedTuple):
    """A card's accepted payments as the audit sums them."""

    rows: int
    amount: int
    top_ser: int


class CardWithdrawals(NamedTuple):
    """A card's recorded withdrawals (applied and refused) as the audit sums them."""

    rows: int
    top_seq: int
    amount: int
    fee: int


class UnitOfWork(Protocol):
    """One database transaction. Methods raise :class:`NotFound` / :class:`Conflict`."""

    # -- configuration (bank keys, parameters, policies) --------------------------------
    def config_get(self, key: str) -> str | None: ...
    def config_set(self, key: str, value: str) -> None: ...

    # -- ledger -------------------------------------------------------------------------
    def create_account(self, account: Account) -> None:
        """Insert a new account (balance must be 0). Conflict if the id exists."""

    def get_account(self, account_id: str) -> Account: ...
    def get_accounts(self, account_ids: Sequence[str]) -> dict[str, Account]:
        """The accounts among ``account_ids`` that exist (set-based, chunked)."""

    def get_balances(self, account_ids: Sequence[str], *, lock: bool = False) -> dict[str, int]:
        """The balances of the accounts among ``account_ids`` that exist: what a deposit
        needs of the floats of thousands of cards, without an :class:`Account` each.
        ``lock``: held until the transaction ends, as :meth:`lock_cards` holds cards."""

    def find_accounts(
        self, *, kind: str | None = None, owner: str | None = None
    ) -> list[Account]: ...

    def post(self, transfer: Transfer) -> None:
        """Apply a double-entry transfer: insert it and its legs, update balances.

        Refuses with :class:`Conflict` if the transfer id was posted before, and with
        :class:`InsufficientFunds` if an account that does not allow negative balances
        would go below zero (the check and the update are atomic under the row lock).
        """

    def get_transfer(self, transfer_id: str) -> Transfer: ...
    def transfers_for(self, account_id: str, *, limit: int = 100) -> list[Transfer]: ...

    # -- cards (FIG. 5) -----------------------------------------------------------------
    def add_card(self, card: CardRecord) -> None: ...
    def get_card(self, card_number: str) -> CardRecord: ...
    def lock_card(self, card_number: str) -> CardRecord:
        """Like :meth:`get_card`, holding a row lock until the transaction ends."""

    def lock_cards(self, card_numbers: Sequence[str]) -> dict[str, CardRecord]:
        """Lock and return the cards among ``card_numbers`` that exist, in one pass
        (rows locked in card-number order, so concurrent deposits cannot deadlock)."""

    def update_card(self, card: CardRecord) -> None:
        """Write every mutable field of ``card`` (seq, highest_ser, status, ...)."""

    def raise_highest_sers(self, highest: dict[str, int]) -> None:
        """Set each card's highest ser seen in an accepted deposit (one statement)."""

    def list_cards(self, *, holder: str | None = None, mode: str | None = None) -> list[CardRecord]:
        """Every card, or a holder's, or those of one mode, by card number."""

    def add_cert(self, cert: CertRecord) -> None: ...
    def get_cert(self, cert_id: bytes) -> CertRecord: ...
    def get_certs(self, cert_ids: Sequence[bytes]) -> dict[bytes, CertRecord]: ...
    def certs_for(self, card_number: str) -> list[CertRecord]: ...
    def certs_without_powers(self, after: bytes, limit: int) -> list[CertRecord]:
        """Up to ``limit`` certificates stored without comb powers, by cert id above
        ``after`` (b"" for the first), in cert-id order."""
        ...

    def set_cert_powers(self, cert_id: bytes, powers: bytes) -> None: ...

    # -- merchants (FIG. 3) -------------------------------------------------------------
    def add_merchant(self, merchant: MerchantRecord) -> None: ...
    def get_merchant(self, sid: str) -> MerchantRecord: ...
    def get_merchant_by_name(self, name: str) -> MerchantRecord: ...
    def lock_merchant(self, sid: str) -> MerchantRecord: ...
    def set_merchant_seq(self, sid: str, seq: int) -> None: ...
    def list_merchants(self) -> list[MerchantRecord]: ...

    # -- deposits (FIG. 9) --------------------------------------------------------------
    def add_payments(self, payments: Sequence[PaymentRecord]) -> None:
        """Insert accepted payments; :class:`Conflict` if any (card, ser) exists."""

    def get_payment(self, card_number: str, ser: int) -> PaymentRecord | None: ...
    def existing_sers(self, card_number: str, sers: Sequence[int]) -> dict[int, PaymentRecord]:
        """The payments among ``sers`` of one card that were deposited before (one query)."""

    def existing_payments(
        self, keys: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], PaymentRecord]:
        """The payments among ``(card_number, ser)`` keys deposited before (set-based)."""

    def iter_payments(self) -> Iterator[PaymentRecord]: ...
    def add_deposit(self, deposit: DepositRecord) -> None: ...
    def get_deposit(self, deposit_id: str) -> DepositRecord | None: ...

    # -- withdrawals (FIG. 10) ----------------------------------------------------------
    def add_withdrawal(self, withdrawal: WithdrawalRecord) -> None: ...
    def get_withdrawal(self, card_number: str, seq: int) -> WithdrawalRecord | None: ...
    def iter_withdrawals(self) -> Iterator[WithdrawalRecord]: ...

    # -- per-card sums and credit statements ---------------------------------------------
    def card_totals(self, card_number: str) -> tuple[int, int]:
        """``(granted, spent)``: the card's FIG. 10 amounts and its accepted payments."""

    def card_payments_between(self, card_number: str, after: int, upto: int) -> list[PaymentRecord]:
        """The card's payments accepted in ``(after, upto]``, by ser."""

    def account_flow_since(self, account_id: str, since: int, kind: str | None = None) -> int:
        """Sum of the account's entries in transfers of ``kind`` (None: of every kind)
        posted after ``since``."""

    def add_statement(self, statement: StatementRecord) -> None:
        """Conflict if the card has a statement of that number."""

    def last_statement(self, card_number: str) -> StatementRecord | None: ...
    def list_statements(self) -> list[StatementRecord]: ...

    # -- payments across banks (acquirer and clearing house) -----------------------------
    def add_interbank(self, records: Sequence[InterbankRecord]) -> None:
        """Conflict if one of them (issuer, card, ser) is there already."""

    def existing_interbank(
        self, keys: Sequence[tuple[str, str, int]]
    ) -> dict[tuple[str, str, int], InterbankRecord]:
        """The records of these ``(issuer, card_number, ser)``, where they exist."""

    def list_interbank(self) -> list[InterbankRecord]: ...

    # -- hot list and alerts ------------------------------------------------------------
    def add_hotlist(self, card_number: str, reason: str, at: int) -> HotlistEntry:
        """Append to the hot list with the next version number."""

    def hotlist_since(self, version: int) -> list[HotlistEntry]: ...
    def add_alert(
        self, card_number: str, kind: str, detail: str, evidence: str, at: int
    ) -> AlertRecord: ...
    def list_alerts(self) -> list[AlertRecord]: ...

    # -- idempotency of requests from outside (HTTP) ------------------------------------
    def get_idempotent(self, key: str) -> tuple[str, str] | None:
        """``(request_hash, response)`` stored under ``key``, if any."""

    def put_idempotent(self, key: str, request_hash: str, response: str, at: int) -> None: ...

    # -- on-line checks (the policy's limit per merchant and card) ------------------------
    def count_online_check(
        self, card_number: str, bank_id: str, sid: str, at: int, *, window: int, limit: int
    ) -> bool:
        """Record one on-line check asked at ``at`` by merchant ``sid`` of bank
        ``bank_id`` about ``card_number``, unless that merchant asked ``limit`` about it
        in the window ``(at - window, at]`` already: True if recorded, False (nothing
        recorded) if not. The key (card, bank, S_id) is locked first, so two checks at
        the limit cannot both be recorded (a PostgreSQL advisory lock; SQLite's and the
        memory store's transactions hold the whole database). The key's rows older
        than the window are deleted, and up to :data:`ONLINE_SWEEP` of anyone's, so the
        table holds about the checks of one window."""

    def online_check_free_at(
        self, card_number: str, bank_id: str, sid: str, at: int, *, window: int, limit: int
    ) -> int:
        """When that merchant may ask about that card again: the first second from which
        it has fewer than ``limit`` checks in its window (``at`` if it has now; see
        :func:`online_free_at`). Read only; for the ``Retry-After`` of a refusal."""

    # -- audit --------------------------------------------------------------------------
    def audit_entry_sums(self) -> dict[str, int]:
        """Sum of entry amounts per account id (the ledger's truth, one query)."""

    def audit_currency_sums(self) -> dict[str, int]:
        """Sum of entry amounts per currency (must be zero)."""

    def audit_unbalanced_transfers(self) -> list[str]:
        """Ids of transfers whose legs do not sum to zero (must be empty)."""

    def list_accounts(self) -> list[Account]: ...

    # The audit's sums: each one query over a whole table, grouped in the database, so
    # that the audit never loads the rows of a bank with millions of payments.
    def audit_flows(self) -> dict[tuple[str, str | None], int]:
        """Sum of entry amounts per (account id, kind of the entry's transfer); the kind
        is None for entries whose transfer is missing."""

    def audit_legs(self, transfer_kind: str, id_prefix: str) -> dict[str, dict[str, int]]:
        """For each transfer of ``transfer_kind`` whose id starts with ``id_prefix``: the
        sum of its legs per kind of account ("" for a leg on no account)."""

    def audit_currency_mismatches(self) -> list[tuple[str, str]]:
        """(transfer id, account id) of every entry whose currency is not its transfer's
        or not its account's."""

    def audit_payments_by_card(self) -> dict[str, CardPayments]:
        """Each card's accepted payments: how many, their amounts, the highest ser."""

    def audit_payments_by_deposit(self) -> dict[tuple[str, str], Totals]:
        """The accepted payments per (deposit id, sid)."""

    def audit_interbank_acquired(self, acquirer: str) -> dict[tuple[str, str, str], Totals]:
        """The other banks' payments ``acquirer`` credited to its merchants, per
        (deposit id, sid, clearing house)."""

    def audit_withdrawals_by_card(self) -> dict[str, CardWithdrawals]:
        """Each card's recorded withdrawals (FIG. 10 requests applied or refused)."""

    def audit_deposit_rows(self) -> dict[str, tuple[str, int]]:
        """Every deposit session recorded: its id, and its merchant and sequence number."""

    def audit_row_misfits(self) -> list[str]:
        """What no signed spec can say is wrong with a row, in words: a payment whose
        CARD-CERT is not a certificate of its card (or none the bank stored), and a fee
        below zero or above its payment (payments, other banks' payments) or below zero
        (withdrawals)."""

    def audit_spec_mismatches(self, bank_id: str, currency: str) -> list[tuple[str, int]]:
        """(card number, ser) of every payment whose row disagrees with the signed spec
        stored with it (its S_id, amount, currency or CARD-CERT id; for a payment made
        at one of ``bank_id``'s merchants, the spec's bank id), or whose currency is not
        ``currency``."""

    # The signature audit's pages: rows read ``limit`` at a time after the last one seen
    # (by the table's key, so each page is one index range), never a whole table.
    def audit_payments_after(
        self, after: tuple[str, int] | None, limit: int
    ) -> list[PaymentRecord]:
        """Up to ``limit`` payments in (card number, ser) order, from the first after
        ``after`` (None: from the first of all)."""

    def audit_certs_after(self, after: bytes, limit: int) -> list[CertRecord]:
        """Up to ``limit`` stored certificates in cert id order, from the first whose id
        is above ``after`` (b"": from the first of all)."""


class Store(Protocol):
    """A database. ``transaction()`` opens one unit of work."""

    def transaction(self, *, snapshot: bool = False) -> AbstractContextManager[UnitOfWork]:
        """Commit on normal exit, roll back on an exception (and re-raise it).

        ``snapshot``: every read of the unit of work sees the database as of one
        moment (PostgreSQL's REPEATABLE READ; a use case's default, READ COMMITTED,
        gives each statement its own), for a reader of many tables such as the audit.
        SQLite's and the memory store's transactions are snapshots already."""

    def close(self) -> None: ...
