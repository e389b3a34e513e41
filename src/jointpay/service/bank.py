"""The bank's use cases (FIG. 3, 4, 5, 9, 10), each one unit of work.

A :class:`Bank` is built from an explicit :class:`~jointpay.storage.base.Store` and a
clock; nothing is read from the environment or created at import time. Every method
that changes state does it inside one transaction: it commits whole or not at all.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from jointpay.crypto.certs import (
    CERT_ID_LEN,
    CardCert,
    CardMode,
    MerchantCert,
    SigningKey,
    VerifyKey,
    check_ident,
    claimed_card,
    issue_card_cert,
    mac,
    new_cert_id,
    verify_mac,
)
from jointpay.crypto.errors import CryptoError
from jointpay.crypto.fips186 import FipsGroup, verify_bank_group
from jointpay.crypto.group import (
    SUITE_MODP,
    Group,
    GroupResolver,
    ModpGroup,
    ModpParams,
    get_group,
    named_modp_groups,
    resolver,
)
from jointpay.crypto.joint import Role, prove_possession
from jointpay.crypto.schnorr import PaymentCert, SecretScalar, verify
from jointpay.domain.money import check_currency, format_amount, format_rate
from jointpay.domain.records import (
    Account,
    AccountKind,
    AlertRecord,
    CardRecord,
    CardStatus,
    CertRecord,
    DepositRecord,
    HotlistEntry,
    Leg,
    MerchantRecord,
    Transfer,
    WithdrawalRecord,
)
from jointpay.protocol.card import (
    P_FINISH_USER,
    P_GEN_SHARE,
    P_IDENTITY,
    P_LOAD_SHARE,
    P_PUT_CERT,
    P_PUT_SECRET,
    contribution_secret_data,
    decode_contribution,
    identity_data,
)
from jointpay.protocol.deposit import (
    BatchError,
    DepositRequest,
    canonical_json,
    parse_deposit,
    parse_online_check,
    sign_receipt,
)
from jointpay.protocol.messages import (
    UNBLOCK_TAG,
    WITHDRAW_ACK_TAG,
    WITHDRAW_REFUSAL_TAG,
    WITHDRAW_REQUEST_TAG,
    AuthKind,
    WithdrawAck,
    WithdrawRefusal,
    WithdrawRequest,
    unblock_message,
)
from jointpay.protocol.terminal import CardClient, CardError
from jointpay.service import gcpause
from jointpay.service.deposit import (
    ClearedFirst,
    DepositRun,
    DepositTimes,
    VerifiedCerts,
    results_json,
)
from jointpay.service.errors import BadInput, Refused
from jointpay.service.interbank import Interbank
from jointpay.service.policy import TOO_MANY_CHECKS, Policy
from jointpay.service.rates import RATES_KEY, dump_table, load_table
from jointpay.service.verify_pool import Verifier, modp_params
from jointpay.storage.base import (
    BalanceOutOfRange,
    Conflict,
    InsufficientFunds,
    NotFound,
    Store,
    UnitOfWork,
)

Clock = Callable[[], int]
CONFIG_KEY: Final = "bank"
CONFIG_MAX_AGE: Final = 2.0
"""Seconds a long-lived bank may run on settings another process has changed since."""
USER_KEY_SOURCES: Final = ("card", "holder", "manufacturer", "split")
_deposit_log = logging.getLogger("jointpay.deposit")
"""One line a deposit at INFO: its phases' times (:class:`DepositTimes`), also as the
record's ``deposit_times``."""
_online_log = logging.getLogger("jointpay.online")
"""One line an on-line check answered to a merchant at INFO; a refusal past the
policy's limit at WARNING."""


def system_clock() -> int:
    return int(time.time())


def luhn_complete(digits: str) -> str:
    """Append the Luhn check digit (ISO/IEC 7812) to ``digits``."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return digits + str((10 - total % 10) % 10)


@dataclass(frozen=True, slots=True)
class BankConfig:
    """What ``bank init`` fixes: identity, suite, currency, keys, policy."""

    bank_id: str
    suite: str
    group: str | None
    currency: str
    signing_key: bytes
    policy: Policy
    created_at: int
    group_record: dict[str, Any] | None = None
    """A bank's own FIPS 186-4 group, as published (with its seed and counter)."""

    def __repr__(self) -> str:
        return f"BankConfig({self.bank_id}, {self.suite}, {self.group}, {self.currency})"

    def to_json(self) -> str:
        return json.dumps(
            {
                "bank_id": self.bank_id,
                "suite": self.suite,
                "group": self.group,
                "currency": self.currency,
                "signing_key": self.signing_key.hex(),
                "policy": self.policy.to_json(),
                "created_at": self.created_at,
                "group_record": self.group_record,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> BankConfig:
        d = json.loads(text)
        return cls(
            d["bank_id"],
            d["suite"],
            d["group"],
            d["currency"],
            bytes.fromhex(d["signing_key"]),
            Policy.from_json(d["policy"]),
            int(d["created_at"]),
            d.get("group_record"),
        )


@dataclass(frozen=True, slots=True)
class IssuedCard:
    card_number: str
    joint_key: bytes
    cert: CardCert
    balance: int


@dataclass(frozen=True, slots=True)
class AuditReport:
    ok: bool
    violations: list[str]
    figures: dict[str, Any]


def equity_account(currency: str) -> str:
    return f"bank:equity:{currency}"


def income_account(currency: str) -> str:
    return f"bank:income:{currency}"


def holder_account(holder: str) -> str:
    return f"holder:{holder}"


def clearing_account(sid: str) -> str:
    """Where a merchant's share of credit payments waits for the clearing delay."""
    return f"merchant:{sid}:clearing"


def _key_powers(cert: CardCert) -> bytes | None:
    """The comb powers of a certificate's joint key (:meth:`ModpGroup.key_powers`);
    None on secp256k1."""
    group = cert.group
    return group.key_powers(cert.joint_key) if isinstance(group, ModpGroup) else None


def _cert_record(cert: CardCert, encoded: bytes, now: int) -> CertRecord:
    """What the bank stores of a CARD-CERT it signed: its bytes (``encoded``), its
    validity and its key's comb powers."""
    return CertRecord(
        cert.cert_id,
        cert.card_number,
        encoded,
        cert.not_before,
        cert.not_after,
        now,
        _key_powers(cert),
    )


class Bank:
    """One bank: its keys, its policy, its books."""

    def __init__(self, store: Store, *, clock: Clock = system_clock) -> None:
        self.store = store
        self.clock = clock
        with store.transaction() as tx:
            raw = tx.config_get(CONFIG_KEY)
        if raw is None:
            raise BadInput("no_bank", "no bank here: run `jointpay bank init` first")
        self.config = BankConfig.from_json(raw)
        self._config_raw, self._config_read = raw, time.monotonic()
        own: dict[str, ModpParams] = {}
        if self.config.group_record is not None:
            rec = FipsGroup.from_json(self.config.group_record)
            own[rec.name] = rec.params
        self.resolve_group: GroupResolver = resolver(own)
        self.group: Group = self.resolve_group(self.config.suite, self.config.group)
        self._key = SigningKey.from_private_bytes(self.config.bank_id, self.config.signing_key)
        params = modp_params(self.group)
        self.verifier = Verifier(groups=[params] if params is not None else [])
        self.verify_key: VerifyKey = self._key.verify_key
        self.verified_certs = VerifiedCerts()
        self.interbank = Interbank(self)

    def close(self) -> None:
        """Release the verification pool, if one was started."""
        self.verifier.close()

    # -- FIG. 3-5 setup ---------------------------------------------------------------
    @classmethod
    def create(
        cls,
        store: Store,
        *,
        suite: str,
        group: str | None = None,
        currency: str = "EUR",
        bank_id: str | None = None,
        policy: Policy | None = None,
        clock: Clock = system_clock,
        own_group: dict[str, Any] | None = None,
    ) -> Bank:
        """``bank init``: the bank's signing key, parameters and books.

        ``own_group`` is a FIPS 186-4 group record (:class:`FipsGroup` JSON) the bank
        uses instead of a shipped one; it is re-checked from its seed first.
        """
        if policy is not None and (problems := policy.problems()):
            raise BadInput("bad_policy", "; ".join(problems))
        try:
            if own_group is not None:
                if suite != SUITE_MODP:
                    raise BadInput("bad_group", "an own group is for the modp-2048-256 suite")
                rec = verify_bank_group(own_group)
                if rec.name in named_modp_groups():
                    raise BadInput("bad_group", f"{rec.name!r} is the name of a shipped group")
                g: Group = resolver({rec.name: rec.params})(suite, rec.name)
            else:
                g = get_group(suite, group if suite == SUITE_MODP else None)
            check_currency(currency)
            if bank_id is not None:
                check_ident(bank_id, "bank id")
        except (CryptoError, ValueError) as exc:
            raise BadInput("bad_parameters", str(exc)) from exc
        key = SigningKey.generate(bank_id or "")
        bid = bank_id or f"bank-{key.verify_key.fingerprint[:8]}"
        now = clock()
        config = BankConfig(
            bid,
            suite,
            g.name,
            currency,
            key.private_bytes(),
            policy or Policy(),
            now,
            own_group,
        )
        with store.transaction() as tx:
            if tx.config_get(CONFIG_KEY) is not None:
                raise Refused("exists", "a bank already exists here")
            tx.config_set(CONFIG_KEY, config.to_json())
            tx.create_account(
                Account(
                    equity_account(currency),
                    AccountKind.EQUITY,
                    currency,
                    bid,
                    0,
                    now,
                    allow_negative=True,
                )
            )
            tx.create_account(
                Account(income_account(currency), AccountKind.INCOME, currency, bid, 0, now)
            )
        return cls(store, clock=clock)

    @property
    def bank_id(self) -> str:
        return self.config.bank_id

    @property
    def signing_key(self) -> SigningKey:
        """The bank's key (for the messages it signs to other scheme members)."""
        return self._key

    def open_internal(
        self, tx: UnitOfWork, account_id: str, kind: AccountKind, owner: str, now: int
    ) -> None:
        """An account of the bank's own books that may go either way (clearing)."""
        tx.create_account(
            Account(account_id, kind, self.currency, owner, 0, now, allow_negative=True)
        )

    @property
    def currency(self) -> str:
        return self.config.currency

    @property
    def policy(self) -> Policy:
        return self.config.policy

    def refresh(self, max_age: float | None = None) -> None:
        """Take up, at most ``max_age`` seconds late, what another process changed in
        the bank's settings: its policy (``bank policy --set``) and its membership of a
        scheme (``bank join-scheme``, ``bank add-clearing``). A long-lived bank (the
        server) calls this before each request, never inside a transaction."""
        now = time.monotonic()
        if now - self._config_read < (CONFIG_MAX_AGE if max_age is None else max_age):
            return
        self._config_read = now
        with self.store.transaction() as tx:
            raw = tx.config_get(CONFIG_KEY)
        if raw is not None and raw != self._config_raw:
            self._config_raw = raw
            self.config = replace(self.config, policy=BankConfig.from_json(raw).policy)
        self.interbank.reload()

    def parameters(self) -> dict[str, Any]:
        """What the bank publishes: identity, suite, group, key (authenticated channel)."""
        out: dict[str, Any] = {
            "bank_id": self.bank_id,
            "suite": self.config.suite,
            "group": self.config.group,
            "currency": self.currency,
            "public_key": self.verify_key.raw.hex(),
        }
        if self.config.group_record is not None:
            out["group_record"] = self.config.group_record  # re-checkable from its seed
        return out

    def group_params_json(self) -> str:
        """(p, q, g) of the bank's own group as JSON, for cards and terminals; or ""."""
        if self.config.group_record is None:
            return ""
        rec = FipsGroup.from_json(self.config.group_record)
        return json.dumps(rec.params.to_json(), sort_keys=True)

    # -- exchange rates (payments priced in another currency) ---------------------------
    def set_rate(self, currency: str, rate_micro: int, effective_from: int | None = None) -> None:
        """Publish a rate: ``rate_micro`` millionths of the bank's currency per unit of
        ``currency``, in effect from ``effective_from`` (now by default) on. Earlier
        rates stay in the table: a payment is judged at the rate of its own time."""
        try:
            check_currency(currency)
        except ValueError as exc:
            raise BadInput("bad_currency", str(exc)) from exc
        if currency == self.currency:
            raise BadInput("bad_currency", f"{currency} is the bank's own currency")
        if not 0 < rate_micro < 1 << 63:
            raise BadInput("bad_rate", "a rate must be positive")
        start = self.clock() if effective_from is None else effective_from
        with self.store.transaction() as tx:
            table = load_table(tx.config_get(RATES_KEY))
            rows = [r for r in table.get(currency, []) if r[0] != start]
            table[currency] = sorted([*rows, (start, rate_micro)])
            tx.config_set(RATES_KEY, dump_table(table))

    def rates(self) -> dict[str, Any]:
        """The published rate table: every rate with the moment it took effect."""
        with self.store.transaction() as tx:
            table = load_table(tx.config_get(RATES_KEY))
        return {
            "currency": self.currency,
            "tolerance_ppm": self.policy.rate_tolerance_ppm,
            "rates": {
                cur: [{"from": start, "rate": format_rate(micro)} for start, micro in rows]
                for cur, rows in sorted(table.items())
            },
        }

    def open_account(self, holder: str, balance: int) -> Account:
        """An ordinary account for ``holder``, funded with ``balance`` paid in."""
        _check_name(holder, "holder")
        if balance < 0:
            raise BadInput("bad_amount", "the opening balance cannot be negative")
        now = self.clock()
        acc = Account(holder_account(holder), AccountKind.HOLDER, self.currency, holder, 0, now)
        with self.store.transaction() as tx:
            try:
                tx.create_account(acc)
            except Conflict as exc:
                raise Refused("exists", f"holder {holder!r} already has an account") from exc
            if balance:
                tx.post(
                    Transfer(
                        f"open:{acc.id}",
                        "cash_in",
                        self.currency,
                        (Leg(equity_account(self.currency), -balance), Leg(acc.id, balance)),
                        "opening balance",
                        now,
                    )
                )
            return tx.get_account(acc.id)

    def open_merchant(self, name: str, public_key: bytes) -> tuple[MerchantRecord, bytes]:
        """FIG. 3: a service provider's deposit account, its S_id and its MERCHANT-CERT."""
        _check_name(name, "merchant")
        if len(public_key) != 32:
            raise BadInput("bad_key", "a merchant key is a 32-byte Ed25519 public key")
        now = self.clock()
        with self.store.transaction() as tx:
            for _ in range(16):
                sid = f"SP{secrets.randbelow(10**8):08d}"
                try:
                    tx.get_merchant(sid)
                except NotFound:
                    break
            else:  # pragma: no cover - 10^8 ids
                raise Refused("exhausted", "could not allocate an S_id")
            cert = MerchantCert(
                new_cert_id(),
                self.bank_id,
                sid,
                name,
                public_key,
                now,
                now + self.policy.cert_validity,
            ).signed(self._key)
            account_id = f"merchant:{sid}"
            tx.create_account(
                Account(account_id, AccountKind.MERCHANT, self.currency, name, 0, now)
            )
            record = MerchantRecord(sid, name, account_id, public_key, cert.encode(), 0, now)
            try:
                tx.add_merchant(record)
            except Conflict as exc:
                raise Refused("exists", f"a merchant named {name!r} exists already") from exc
        return record, cert.encode()

    # -- FIG. 4: issuing a card -------------------------------------------------------
    def issue_card(
        self,
        client: CardClient,
        *,
        holder: str,
        pin: str,
        load: int = 0,
        mode: str = CardMode.CASH.value,
        limit: int = 0,
        user_key: str = "card",
        holder_choice: Callable[[Sequence[str]], int] | None = None,
        auth: AuthKind = AuthKind.SIGNATURE,
    ) -> IssuedCard:
        """Personalise a blank card for ``holder`` and open its card account.

        Step 210: the holder must exist and be able to fund the initial load, or
        nothing is created (step 220). Step 240: the user key is made on the card's
        side as ``user_key`` says; the bank never sees it. Step 250: the bank's key
        ``S_C`` is written into the card and forgotten. Step 260: the CARD-CERT is
        signed after every proof of possession checks. Step 270: the initial load moves
        from the holder's account through the FIG. 10 exchange, so the card's balance
        only ever changes through authenticated acknowledgements.
        """
        if user_key not in USER_KEY_SOURCES:
            raise BadInput("bad_user_key", f"user key source must be one of {USER_KEY_SOURCES}")
        try:
            card_mode = CardMode(mode)
        except ValueError as exc:
            raise BadInput("bad_mode", "mode is cash, credit or cheque") from exc
        if load < 0 or limit < 0:
            raise BadInput("bad_amount", "amounts cannot be negative")
        if card_mode is not CardMode.CASH and load:
            raise BadInput("bad_amount", "only cash cards carry an initial load")
        if card_mode is CardMode.CREDIT and not limit:
            raise BadInput("bad_amount", "a credit card needs --limit")
        if card_mode is CardMode.CASH and limit:
            raise BadInput("bad_amount", "--limit is for credit cards (and cheque books)")
        now = self.clock()
        with self.store.transaction() as tx:  # step 210
            try:
                acct = tx.get_account(holder_account(holder))
            except NotFound as exc:
                raise Refused("unknown_holder", f"no account for holder {holder!r}") from exc
            if acct.balance < load + (self.policy.withdrawal_fee if load else 0):
                raise Refused(
                    "insufficient_funds",
                    f"holder {holder!r} cannot fund an initial load of "
                    f"{format_amount(load, self.currency)}",
                )
            while True:
                number = luhn_complete("4" + "".join(str(secrets.randbelow(10)) for _ in range(14)))
                try:
                    tx.get_card(number)
                except NotFound:
                    break
        group = self.group
        master_key = secrets.token_bytes(32)
        try:
            client.select()
            client.command(
                0x80,
                0xE0,
                P_IDENTITY,
                0,
                identity_data(
                    number,
                    group.suite,
                    group.name,
                    self.currency,
                    card_mode.value,
                    self.bank_id,
                    self.verify_key.raw,
                    master_key,
                    pin,
                    self.group_params_json(),
                    self._scheme_for_cards(),
                ),
                what="PERSONALISE identity",
            )
            self._make_user_key(client, user_key, holder_choice)
            user = decode_contribution(
                group, client.command(0x80, 0xE0, P_FINISH_USER, 0, what="PERSONALISE user key")
            )
            s_c = SecretScalar(group.random_scalar())  # step 250
            bank_part = prove_possession(group, s_c, number, Role.BANK)
            client.command(
                0x80,
                0xE0,
                P_PUT_SECRET,
                0,
                contribution_secret_data(Role.BANK.value, s_c),
                what="PERSONALISE bank key",
            )
            del s_c  # the bank keeps no copy of S_C
            cert = issue_card_cert(  # step 260, after every proof of possession
                self._key,
                group=group,
                card_number=number,
                contributions=[user, bank_part],
                currency=self.currency,
                mode=card_mode,
                not_before=now - self.policy.clock_skew,
                not_after=now + self.policy.cert_validity,
                max_amount=self.policy.max_amount,
            )
            client.command(0x80, 0xE0, P_PUT_CERT, 0, cert.encode(), what="PERSONALISE cert")
        except CardError as exc:
            raise Refused("card_error", f"personalisation failed: {exc}") from exc
        except CryptoError as exc:
            raise Refused("bad_contribution", f"the card's key contribution: {exc}") from exc
        record = self._open_card_account(number, holder, card_mode, limit, cert, master_key, now)
        balance = 0
        # Step 270: a cash card's load, a credit card's limit, a cheque card's cheque book,
        # each written by the FIG. 10 exchange (only the cash load moves money).
        first = load if card_mode is CardMode.CASH else limit
        if first:
            from jointpay.service.flows import withdraw_with_card

            balance = withdraw_with_card(client, self, pin=pin, amount=first, auth=auth).balance
        return IssuedCard(record.card_number, cert.joint_key.encoded, cert, balance)

    def _make_user_key(
        self, client: CardClient, source: str, holder_choice: Callable[[Sequence[str]], int] | None
    ) -> None:
        """FIG. 4 step 240 / claims 17-24: who makes S_U, never the bank."""
        if source in ("card", "split"):
            client.command(0x80, 0xE0, P_GEN_SHARE, 0, what="PERSONALISE generate")
        if source in ("holder", "split"):
            _TrustedTerminal(self.group).load_holder_choice(client, holder_choice)
        if source == "manufacturer":
            _Manufacturer(self.group).load_share(client)

    def has_card(self, card_number: str) -> bool:
        """Whether this bank registered the card (in any state)."""
        with self.store.transaction() as tx:
            try:
                tx.get_card(card_number)
            except NotFound:
                return False
            return True

    def _open_card_account(
        self,
        number: str,
        holder: str,
        mode: CardMode,
        limit: int,
        cert: CardCert,
        master_key: bytes,
        now: int,
    ) -> CardRecord:
        float_id = f"card:{number}"
        record = CardRecord(
            card_number=number,
            holder=holder,
            holder_account=holder_account(holder),
            float_account=float_id if mode is not CardMode.CHEQUE else "",
            mode=mode.value,
            currency=self.currency,
            suite=cert.suite,
            group=cert.group.name,
            joint_key=cert.joint_key.encoded,
            master_key=master_key,
            seq=0,
            highest_ser=-1,
            status=CardStatus.ACTIVE,
            limit=limit,
            created_at=now,
            current_cert_id=cert.cert_id,
        )
        with self.store.transaction() as tx:
            if mode is not CardMode.CHEQUE:
                kind = AccountKind.CARD_FLOAT if mode is CardMode.CASH else AccountKind.CREDIT
                tx.create_account(
                    Account(
                        float_id,
                        kind,
                        self.currency,
                        holder,
                        0,
                        now,
                        allow_negative=mode is CardMode.CREDIT,
                    )
                )
            tx.add_card(record)
            tx.add_cert(_cert_record(cert, cert.encode(), now))
        return record

    def backfill_key_powers(self, batch: int = 500) -> int:
        """Store the comb powers (:meth:`ModpGroup.key_powers`) of every certificate
        stored without them, those a modp bank stored before migration 0005, ``batch``
        to a transaction; return how many. A deposit then verifies their payments by
        the comb (crypto.md). Safe while the bank serves, and to run again: each
        certificate is done once. Nothing to do on secp256k1."""
        if batch < 1:
            raise ValueError("a batch is at least one certificate")
        if not isinstance(self.group, ModpGroup):
            return 0
        done, after = 0, b""
        while True:
            with self.store.transaction() as tx:
                stored = tx.certs_without_powers(after, batch)
                for rec in stored:  # ours, checked when we stored it: read back known
                    cert = CardCert.decode(rec.encoded, self.resolve_group, known=True)
                    powers = _key_powers(cert)
                    if powers is not None:
                        tx.set_cert_powers(rec.cert_id, powers)
                        done += 1
            if len(stored) < batch:
                return done
            after = stored[-1].cert_id

    # -- hot list, unblock, alerts ----------------------------------------------------
    def blacklist(self, card_number: str, reason: str = "reported") -> HotlistEntry:
        with self.store.transaction() as tx:
            try:
                card = tx.lock_card(card_number)
            except NotFound as exc:
                raise BadInput("unknown_card", f"no card {card_number}") from exc
            return self.hotlist_card(tx, card, reason, self.clock())

    def hotlist_card(self, tx: UnitOfWork, card: CardRecord, reason: str, now: int) -> HotlistEntry:
        if card.status is not CardStatus.BLACKLISTED:
            tx.update_card(replace(card, status=CardStatus.BLACKLISTED, blacklisted_at=now))
        return tx.add_hotlist(card.card_number, reason, now)

    def hotlist(self, since: int = 0) -> list[HotlistEntry]:
        with self.store.transaction() as tx:
            return tx.hotlist_since(since)

    def alerts(self) -> list[AlertRecord]:
        with self.store.transaction() as tx:
            return tx.list_alerts()

    def card(self, card_number: str) -> CardRecord:
        with self.store.transaction() as tx:
            try:
                return tx.get_card(card_number)
            except NotFound as exc:
                raise BadInput("unknown_card", f"no card {card_number}") from exc

    def account(self, account_id: str) -> Account:
        with self.store.transaction() as tx:
            try:
                return tx.get_account(account_id)
            except NotFound as exc:
                raise BadInput("unknown_account", f"no account {account_id}") from exc

    def merchant(self, name: str) -> MerchantRecord:
        with self.store.transaction() as tx:
            try:
                return tx.get_merchant_by_name(name)
            except NotFound as exc:
                raise BadInput("unknown_merchant", f"no merchant named {name!r}") from exc

    # -- the scheme: several banks and clearing houses ---------------------------------
    def _scheme_for_cards(self) -> tuple[str, bytes] | None:
        m = self.interbank.membership
        return None if m is None else (m.scheme_id, m.scheme_key.raw)

    def scheme(self) -> dict[str, Any]:
        """``GET /v1/scheme``: the root key, our BANK-CERT, the reachable member banks."""
        return self.interbank.scheme_view()

    def scheme_hotlist(self) -> list[dict[str, Any]]:
        return self.interbank.scheme_hotlist()

    def interbank_deposit(self, message: object) -> dict[str, Any]:
        return self.interbank.receive(message)

    def interbank_settlement(self, message: object) -> dict[str, Any]:
        return self.interbank.settlement(message)

    def interbank_position(self, clearing_house: str) -> dict[str, Any]:
        return self.interbank.position(clearing_house)

    def interbank_online_check(self, message: object) -> dict[str, Any]:
        return self.interbank.online_check(message)

    def online_check(self, message: object) -> dict[str, Any]:
        """``POST /v1/online-check``: FIG. 8's optional on-line clearance, asked by one
        of our service providers in a message it signs (:class:`OnlineCheck`), fresh
        within the policy's ``online_window``. The answer says whether the amount would
        clear now, and for a credit card how far its C_balance would be restored; it
        never gives the card's balance. A merchant may ask about one card the policy's
        ``online_checks`` times within ``online_checks_window``; past that it is
        refused ``too_many_checks`` (:meth:`clearance`)."""
        try:
            ask = parse_online_check(message)
        except BatchError as exc:
            raise BadInput("malformed", str(exc)) from exc
        if ask.bank_id != self.bank_id:
            raise Refused("wrong_bank", f"the check is for bank {ask.bank_id!r}")
        with self.store.transaction() as tx:
            _signed_by_merchant(tx, ask.sid, ask.verify, "check")
        if abs(self.clock() - ask.time) > self.policy.online_window:
            raise Refused("stale_message", "the check's timestamp is not fresh")
        return self.clearance(ask.card, ask.amount, ask.issuer, asker=ask.sid)

    def clearance(
        self,
        card_number: str,
        amount: int,
        issuer: str | None = None,
        *,
        asker: str | None = None,
        acquirer: str | None = None,
    ) -> dict[str, Any]:
        """Would ``amount`` clear on the card now (and a credit card's top-up)? From the
        card's current record; another bank's card is asked about through a clearing
        house. For the bank's own use: the merchants' question is :meth:`online_check`.

        A merchant's question (``asker``: its S_id; ``acquirer``: its bank, None for
        ours) is counted first: yes-or-no answers to many amounts bracket a balance, so
        past the policy's ``online_checks`` within ``online_checks_window`` by that
        merchant about that card it is refused ``too_many_checks``, and nothing is
        recorded. Every card number is counted alike, whether we issued it or not, so
        the limit tells no one which card numbers are ours. Each answer is logged
        (``jointpay.online``, INFO, the asker as ``S_id`` or ``acquirer/S_id``), and a
        refusal at WARNING."""
        if issuer is not None and issuer != self.bank_id:
            return self.interbank.online_via_house(issuer, card_number, amount, asker)
        who = asker if acquirer is None else f"{acquirer}/{asker}"
        if asker is not None:
            policy = self.policy
            now = self.clock()
            key = (card_number, acquirer or self.bank_id, asker, now)
            window, limit = policy.online_checks_window, policy.online_checks
            with self.store.transaction() as tx:
                counted = tx.count_online_check(*key, window=window, limit=limit)
                # a refusal says when it lifts (Retry-After), read under the same lock
                free_at = (
                    now if counted else tx.online_check_free_at(*key, window=window, limit=limit)
                )
            if not counted:
                _online_log.warning(
                    "online check by %s: card ...%s, %d: too_many_checks (%d within %d s)",
                    who,
                    card_number[-4:],
                    amount,
                    policy.online_checks,
                    policy.online_checks_window,
                )
                raise Refused(
                    TOO_MANY_CHECKS,
                    f"merchant {who} has asked about this card {policy.online_checks} "
                    f"times within {policy.online_checks_window} s, the bank's limit",
                    retry_after=max(1, free_at - now),
                )
        try:
            card: CardRecord | None = self.card(card_number)
        except BadInput:
            card = None
        answer = self._clearance(card, amount)
        if asker is not None:
            _online_log.info(
                "online check by %s: card ...%s, %d: %s",
                who,
                card_number[-4:],
                amount,
                answer["reason"] or "approved",
            )
        return answer

    def _clearance(self, card: CardRecord | None, amount: int) -> dict[str, Any]:
        if card is None:
            return {"approved": False, "reason": "unknown_card", "topup": 0}
        if card.status is CardStatus.BLACKLISTED:
            return {"approved": False, "reason": "blacklisted", "topup": 0}
        topup = 0
        if card.mode == CardMode.CHEQUE.value:
            available = self.account(card.holder_account).balance
        elif card.mode == CardMode.CREDIT.value:
            with self.store.transaction() as tx:
                topup, on_card = self._credit_topup(tx, card)
            available = on_card + topup
        else:
            available = self.account(card.float_account).balance
        ok = amount <= available
        return {"approved": ok, "reason": None if ok else "insufficient_balance", "topup": topup}

    def _credit_topup(
        self, tx: UnitOfWork, card: CardRecord, card_balance: int | None = None
    ) -> tuple[int, int]:
        """How far a credit card's C_balance may be raised now (FIG. 10 step 840), and
        what the card may still spend (granted C_balance less the payments deposited).

        The bank's exposure on the card is what the holder owes (the credit account
        below zero) plus what the card may still spend. The restore keeps it within the
        limit, keeps the card's own C_balance (``card_balance``, as it reports it; the
        most it may hold if None) within the limit, and is capped by the policy's
        maximum top-up.
        """
        granted, spent = tx.card_totals(card.card_number)
        on_card = granted - spent
        owed = -tx.get_account(card.float_account).balance
        held = on_card if card_balance is None else card_balance
        room = min(card.limit - owed - on_card, card.limit - held)
        if self.policy.credit_max_topup:
            room = min(room, self.policy.credit_max_topup)
        return max(0, room), on_card

    def set_policy(self, **changes: int) -> Policy:
        """Change policy values (fees, windows, credit terms); returns the new policy."""
        known = set(Policy.__dataclass_fields__)
        for name, value in changes.items():
            if name not in known:
                raise BadInput("bad_policy", f"no policy value named {name!r}")
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 63:
                raise BadInput("bad_policy", f"{name} must be a non-negative integer")
        with self.store.transaction() as tx:
            raw = tx.config_get(CONFIG_KEY)
            if raw is None:  # pragma: no cover - the bank exists
                raise BadInput("no_bank", "no bank here")
            config = BankConfig.from_json(raw)
            config = replace(config, policy=replace(config.policy, **changes))
            if problems := config.policy.problems():
                raise BadInput("bad_policy", "; ".join(problems))
            tx.config_set(CONFIG_KEY, config.to_json())
        self.config, self._config_raw = config, config.to_json()
        return config.policy

    def unblock_card(self, client: CardClient, new_pin: str) -> None:
        """Reset a locked card's PIN counter and set a new PIN, through the master key."""
        client.select()
        info = client.info()
        card = self.card(info.card_number)
        challenge = client.get_challenge()
        tag = mac(
            card.master_key, UNBLOCK_TAG, unblock_message(card.card_number, challenge, new_pin)
        )
        try:
            client.reset_retry_counter(new_pin, tag)
        except CardError as exc:
            raise Refused("card_error", f"the card refused the unblock: {exc}") from exc

    # -- FIG. 10: withdrawal, the bank's side -----------------------------------------
    def withdraw(self, request: bytes) -> bytes:
        """Steps 880-910: check the request, move the money, return the acknowledgement.

        Idempotent: the same request again (a lost acknowledgement) returns the same
        acknowledgement and moves nothing.
        """
        try:
            req = WithdrawRequest.decode(request)
        except CryptoError as exc:
            raise BadInput("malformed", f"withdrawal request: {exc}") from exc
        if req.bank_id != self.bank_id:
            raise Refused("wrong_bank", f"this card belongs to bank {req.bank_id!r}")
        now = self.clock()
        alert: tuple[str, str, str] | None = None
        refusal: tuple[str, str]
        try:
            with self.store.transaction() as tx:
                try:
                    card = tx.lock_card(req.card_number)
                except NotFound as exc:
                    raise Refused("unknown_card", f"no card {req.card_number}") from exc
                prior = tx.get_withdrawal(card.card_number, req.seq)
                if prior is not None:
                    if prior.request_digest == req.digest:
                        return _answer_again(prior.ack)  # a retry: the first answer
                    raise Refused("replay", f"seq {req.seq} was used by another request")
                if req.seq != card.seq + 1:
                    raise Refused("bad_seq", f"expected seq {card.seq + 1}, got {req.seq}")
                cert = self._card_cert(tx, card, req.cert_id)
                self._check_withdraw_auth(card, cert, req)
                # From here the request is the card's own: a refusal is signed and recorded.
                float_acc = tx.get_account(card.float_account) if card.float_account else None
                credit = card.mode == CardMode.CREDIT.value
                room = self._credit_topup(tx, card, req.balance)[0] if credit else 0
                amount = min(req.amount, room) if req.up_to and credit else req.amount
                if card.status is CardStatus.BLACKLISTED:
                    refusal = ("blacklisted", "the card is on the hot list")
                elif req.up_to and not credit:
                    refusal = ("bad_amount", "only a credit card's restore asks up to an amount")
                elif req.up_to and amount == 0 and not req.renew:
                    refusal = ("credit_limit", "the bank has no credit to restore now")
                elif req.amount == 0 and not req.renew:
                    refusal = ("bad_amount", "a withdrawal of zero must ask for renewal")
                elif card.mode == CardMode.CHEQUE.value and req.amount > max(
                    0, card.limit - req.balance
                ):
                    refusal = (
                        ("cheque_limit", "the cheque book would exceed its size")
                        if card.limit
                        else ("not_supported", "this cheque card carries no cheque count")
                    )
                elif credit and amount > room:
                    refusal = ("credit_limit", "the credit line cannot be restored by that much")
                elif (
                    card.mode == CardMode.CASH.value
                    and float_acc is not None
                    and (req.balance > float_acc.balance)
                ):
                    # Step 880: the card may be lower (payments not yet deposited), never
                    # higher.
                    alert = (
                        "balance_above_bank",
                        json.dumps(
                            {
                                "card_balance": req.balance,
                                "bank_balance": float_acc.balance,
                                "seq": req.seq,
                            }
                        ),
                        canonical_json({"request": request.hex()}).decode(),
                    )
                    refusal = (
                        "balance_mismatch",
                        "the card reports more value than the bank's record; card hot-listed",
                    )
                else:
                    cash = card.mode == CardMode.CASH.value
                    fee = self.policy.withdrawal_fee if req.amount and cash else 0
                    return self._apply_withdrawal(tx, card, cert, req, amount, fee, now)
        except (InsufficientFunds, BalanceOutOfRange):
            # A float past 2^63 - 1 is one the holder's account cannot fund either (all
            # of a holder's floats came out of it), and a store may find that first.
            refusal = ("insufficient_funds", "the holder's account cannot fund this withdrawal")
        return self._refuse_withdrawal(req, refusal, alert, now)

    def _refuse_withdrawal(
        self,
        req: WithdrawRequest,
        refusal: tuple[str, str],
        alert: tuple[str, str, str] | None,
        now: int,
    ) -> bytes:
        """Record the refusal against (card, seq), then raise it with its signed proof.

        Recorded, the refused request can never be applied later (a replay gets the
        same refusal); signed, the card can trust it and drop its pending request.
        """
        code, message = refusal
        with self.store.transaction() as tx:
            card = tx.lock_card(req.card_number)
            prior = tx.get_withdrawal(card.card_number, req.seq)
            if prior is not None:  # a concurrent twin answered first: same answer
                if prior.request_digest == req.digest:
                    return _answer_again(prior.ack)
                raise Refused("replay", f"seq {req.seq} was used by another request")
            if alert is not None:
                tx.add_alert(card.card_number, alert[0], alert[1], alert[2], now)
                self.hotlist_card(tx, card, "balance above the bank's record", now)
                card = tx.lock_card(req.card_number)
            no = WithdrawRefusal(card.card_number, req.seq, req.digest, code)
            no = replace(no, mac=mac(card.master_key, WITHDRAW_REFUSAL_TAG, no.tbs()))
            proof = no.encode()
            tx.add_withdrawal(
                WithdrawalRecord(card.card_number, req.seq, req.digest, 0, 0, proof, now)
            )
            tx.update_card(replace(card, seq=req.seq))
        raise Refused(code, message, proof=proof)

    def _apply_withdrawal(
        self,
        tx: UnitOfWork,
        card: CardRecord,
        cert: CardCert,
        req: WithdrawRequest,
        amount: int,
        fee: int,
        now: int,
    ) -> bytes:
        """Apply the request, for ``amount`` (the request's, or less for an up-to
        restore), and return its acknowledgement, which names that amount."""
        if amount and card.mode == CardMode.CASH.value:
            # cash: holder's account -> card float. A credit card's restored limit and a
            # cheque card's cheques are no money: nothing is posted for them.
            legs = [
                Leg(card.holder_account, -(amount + fee)),
                Leg(card.float_account, amount),
            ]
            if fee:
                legs.append(Leg(income_account(self.currency), fee))
            tx.post(  # InsufficientFunds (or a float out of range): refused by withdraw()
                Transfer(
                    f"withdraw:{card.card_number}:{req.seq}",
                    "withdrawal",
                    self.currency,
                    tuple(legs),
                    f"seq {req.seq}",
                    now,
                )
            )
        new_cert = b""
        if req.renew or cert.not_after - now < self.policy.renew_before:
            renewed = replace(
                cert,
                cert_id=new_cert_id(),
                not_before=now - self.policy.clock_skew,
                not_after=now + self.policy.cert_validity,
            ).signed(self._key)
            new_cert = renewed.encode()
            tx.add_cert(_cert_record(renewed, new_cert, now))
        ack = WithdrawAck(card.card_number, req.seq, amount, req.digest, new_cert)
        ack = replace(ack, mac=mac(card.master_key, WITHDRAW_ACK_TAG, ack.tbs()))
        encoded = ack.encode()
        tx.add_withdrawal(
            WithdrawalRecord(card.card_number, req.seq, req.digest, amount, fee, encoded, now)
        )
        tx.update_card(
            replace(
                card,
                seq=req.seq,
                current_cert_id=(
                    CardCert.decode(new_cert, self.resolve_group).cert_id
                    if new_cert
                    else card.current_cert_id
                ),
            )
        )
        return encoded

    def _card_cert(self, tx: UnitOfWork, card: CardRecord, cert_id: bytes) -> CardCert:
        try:
            rec = tx.get_cert(cert_id)
        except NotFound as exc:
            raise Refused(
                "bad_cert", "the request names a CARD-CERT this bank never issued"
            ) from exc
        if rec.card_number != card.card_number:
            raise Refused("bad_cert", "the CARD-CERT belongs to another card")
        cert = CardCert.decode(rec.encoded, self.resolve_group)
        # The stored certificate's signature, checked again: a withdrawal may renew it,
        # and a renewal signed over a certificate written into the database by someone
        # other than the bank would make it genuine (bank audit --signatures names such
        # a certificate, but not the payments made under its renewal).
        try:
            cert.verify(self.verify_key)
        except CryptoError as exc:
            raise Refused(
                "bad_cert", f"the stored CARD-CERT does not bear this bank's signature: {exc}"
            ) from exc
        return cert

    def _check_withdraw_auth(self, card: CardRecord, cert: CardCert, req: WithdrawRequest) -> None:
        try:
            if req.auth_kind is AuthKind.SIGNATURE:
                if len(req.auth) != 64:
                    raise Refused("bad_auth", "a signed request carries b and r (64 bytes)")
                sig = PaymentCert.parse(
                    cert.group, req.seq, req.tbs(), req.auth[:32], req.auth[32:]
                )
                verify(cert.group, cert.joint_key, sig, tag=WITHDRAW_REQUEST_TAG)
            else:
                verify_mac(card.master_key, WITHDRAW_REQUEST_TAG, req.tbs(), req.auth)
        except CryptoError as exc:
            raise Refused("bad_auth", "the withdrawal request is not authentic") from exc

    # -- FIG. 9: deposit --------------------------------------------------------------
    def deposit(self, message: object, *, via: str | None = None) -> dict[str, Any]:
        """Steps 620-710: verify the session, then every payment; credit; sign a receipt.

        ``via``: the clearing house the merchant deposited at (:meth:`Interbank.relayed`),
        through which the other banks' cards are cleared where it reaches their issuers.
        """
        times = DepositTimes()
        try:
            req = parse_deposit(message)
        except (BatchError, CryptoError) as exc:
            text = str(exc)  # most of parse_deposit's say "deposit: ..." already
            raise BadInput("malformed", text if "deposit" in text else f"deposit: {text}") from exc
        if req.bank_id != self.bank_id:
            raise Refused(
                "wrong_bank", f"this deposit is for bank {req.bank_id!r}, not {self.bank_id!r}"
            )
        now = self.clock()
        deposit_id = f"{req.sid}:{req.seq}"
        # Other banks' cards are cleared before the transaction opens: the houses answer
        # over the network, and a transaction waiting for them held the merchant's and
        # the cards' locks (on SQLite, the whole database) for as long as they took.
        cleared = self._clear_first(req, deposit_id, now, via)
        with gcpause.paused(), self.store.transaction() as tx:
            _, prior = self._session(tx, req, deposit_id, now, lock=True)
            if prior is not None:
                return prior  # a retried session: the same answer
            times.mark("session")
            run = DepositRun(self, tx, req, deposit_id, now, cleared=cleared, times=times)
            results = run.run()
            accepted = [r for r in results if r.status == "accepted"]
            gross = sum(r.amount or 0 for r in accepted)
            receipt = sign_receipt(
                self._key,
                {
                    "bank_id": self.bank_id,
                    "deposit_id": deposit_id,
                    "sid": req.sid,
                    "seq": req.seq,
                    "batch_digest": req.batch_digest.hex(),
                    "time": now,
                    "accepted": len(accepted),
                    "rejected": len(results) - len(accepted),
                    "credited": format_amount(gross, self.currency),
                    "fees": format_amount(run.fees, self.currency),
                    "net": format_amount(gross - run.fees, self.currency),
                    "currency": self.currency,
                    "results": results_json(results, self.currency),
                },
            )
            times.mark("receipt")
            tx.set_merchant_seq(req.sid, req.seq)
            tx.add_deposit(
                DepositRecord(
                    deposit_id,
                    req.sid,
                    req.seq,
                    req.batch_digest,
                    now,
                    canonical_json(receipt).decode(),  # keys sorted, compact
                )
            )
        times.mark("commit")
        if _deposit_log.isEnabledFor(logging.INFO):
            figures = times.summary()
            _deposit_log.info(
                "deposit %s: %d payments, %d accepted, %.0f ms: %s ms",
                deposit_id,
                len(results),
                receipt["accepted"],
                figures["total"],
                DepositTimes.text(figures),
                extra={"deposit_times": figures},
            )
        return receipt

    def _session(
        self, tx: UnitOfWork, req: DepositRequest, deposit_id: str, now: int, *, lock: bool
    ) -> tuple[MerchantRecord, dict[str, Any] | None]:
        """Step 620: the merchant, its signature on the session, the session's sequence
        number and freshness; the receipt already given if this session was taken."""
        merchant = _signed_by_merchant(tx, req.sid, req.verify, "deposit", lock=lock)
        prior = tx.get_deposit(deposit_id)
        if prior is not None:
            if prior.batch_digest == req.batch_digest:
                return merchant, dict(json.loads(prior.receipt))
            raise Refused("replay", f"deposit sequence {req.seq} was used before")
        if req.seq <= merchant.last_seq:
            raise Refused("replay", f"deposit sequence {req.seq} is not after {merchant.last_seq}")
        if abs(now - req.time) > self.policy.message_window:
            raise Refused("stale_message", "the deposit message's timestamp is not fresh")
        return merchant, None

    def _clear_first(
        self, req: DepositRequest, deposit_id: str, now: int, via: str | None
    ) -> ClearedFirst | None:
        """The other banks' payments of a deposit, judged by our rules and cleared
        through the houses before the deposit's transaction opens; None if it has none.

        The judging is the deposit's own (:class:`DepositRun` over the batch's groups
        whose CARD-CERTs name another bank, in a transaction that writes nothing), after
        the session is authenticated: a session we would refuse clears nothing. The
        deposit then takes these answers (:meth:`DepositRun._clear_foreign`)."""
        own = self.bank_id
        named = own.encode()
        ours = (len(named).to_bytes(4, "big") + named).hex()  # our bank id as a cert has it
        groups = [g for g in req.batch.cards if _claims_another_bank(g, own, ours)]
        if not groups:
            return None
        sub = replace(
            req,
            batch=replace(req.batch, cards=groups, count=sum(len(g["payments"]) for g in groups)),
        )
        with self.store.transaction() as tx:
            _, prior = self._session(tx, req, deposit_id, now, lock=False)
            if prior is not None:
                return None
            plan = DepositRun(self, tx, sub, deposit_id, now, plan=True)
            plan.run()
        candidates = plan.planned
        answers = self.interbank.clear(req.sid, deposit_id, candidates, via=via)
        return ClearedFirst(candidates, answers)

    # -- credit: settlement run, repayments -----------------------------------------------
    def settle(self, until: int | None = None) -> dict[str, Any]:
        """``bank settle``: release cleared merchant credits, bill every credit card."""
        from jointpay.service.credit import settle

        return settle(self, until)

    def repay(
        self, holder: str, amount: int, *, ref: str | None = None, from_account: bool = False
    ) -> dict[str, Any]:
        """``bank settle --paid HOLDER AMT``: a settlement made by other means."""
        from jointpay.service.credit import repay

        return repay(self, holder, amount, ref=ref, from_account=from_account)

    # -- audit --------------------------------------------------------------------------
    def audit(self, *, signatures: bool = False, bank_key: bytes | None = None) -> AuditReport:
        """Check every ledger invariant; report each violation in words.

        ``signatures``: also verify, in the same snapshot, every stored CARD-CERT and
        MERCHANT-CERT under the bank's key and every accepted payment's PAYMENT-CERT
        under its CARD-CERT (``service/audit.py``, 10-12), under ``bank_key`` if given
        (the public key the auditor holds from outside the database)."""
        from jointpay.crypto.certs import ED25519_KEY_LEN
        from jointpay.service.audit import run_audit

        if bank_key is not None:
            if not signatures:
                raise BadInput("bad_usage", "a bank key to verify under goes with signatures")
            if len(bank_key) != ED25519_KEY_LEN:
                raise BadInput("bad_key", "a bank key is a 32-byte Ed25519 public key")
        with self.store.transaction(snapshot=True) as tx:  # one moment's books
            return run_audit(self, tx, signatures=signatures, bank_key=bank_key)


def _signed_by_merchant(
    tx: UnitOfWork,
    sid: str,
    verify: Callable[[VerifyKey], None],
    what: str,
    *,
    lock: bool = False,
) -> MerchantRecord:
    """The service provider ``sid`` (row-locked if ``lock``), once ``verify`` accepted
    its key for the message; else ``unknown_merchant`` or ``bad_signature``."""
    try:
        merchant = tx.lock_merchant(sid) if lock else tx.get_merchant(sid)
    except NotFound as exc:
        raise Refused("unknown_merchant", f"no service provider {sid}") from exc
    try:
        verify(VerifyKey(sid, merchant.public_key))
    except CryptoError as exc:
        raise Refused("bad_signature", f"the {what} is not signed by the merchant") from exc
    return merchant


def _answer_again(stored: bytes) -> bytes:
    """The stored answer to a request seen before: its acknowledgement, or its refusal."""
    if WithdrawRefusal.is_refusal(stored):
        no = WithdrawRefusal.decode(stored)
        raise Refused(no.reason, "this withdrawal request was refused before", proof=stored)
    return stored


def _check_name(name: str, what: str) -> None:
    if (
        not isinstance(name, str)
        or not 1 <= len(name) <= 64
        or not name.isprintable()
        or name != name.strip()
        or ":" in name
    ):
        raise BadInput(
            "bad_name",
            f"{what} name must be 1-64 printable characters, no ':' and no surrounding spaces",
        )


class _TrustedTerminal:
    """The bank's trusted terminal of FIG. 4 step 240, method 1.

    It shows the holder a list of random keys, loads the chosen one into the card,
    and erases the list: the bank's systems never record it.
    """

    CANDIDATES: Final = 8

    def __init__(self, group: Group) -> None:
        self.group = group

    def load_holder_choice(
        self, client: CardClient, choose: Callable[[Sequence[str]], int] | None
    ) -> None:
        secrets_list = [self.group.random_scalar() for _ in range(self.CANDIDATES)]
        # The holder sees fingerprints of the public keys, not the secrets.
        shown = [self.group.public_key(s).encoded.hex()[-12:] for s in secrets_list]
        index = choose(shown) if choose is not None else secrets.randbelow(len(shown))
        if not 0 <= index < len(shown):
            raise BadInput("bad_choice", "the holder's choice is not on the list")
        chosen = secrets_list[index]
        try:
            client.command(
                0x80,
                0xE0,
                P_LOAD_SHARE,
                0,
                chosen.to_bytes(32, "big"),
                what="PERSONALISE load user share",
            )
        finally:
            secrets_list.clear()
            del chosen


class _Manufacturer:
    """FIG. 4 step 240, method 3: the card maker writes S_U during manufacture."""

    def __init__(self, group: Group) -> None:
        self.group = group

    def load_share(self, client: CardClient) -> None:
        share = self.group.random_scalar()
        try:
            client.command(
                0x80,
                0xE0,
                P_LOAD_SHARE,
                0,
                share.to_bytes(32, "big"),
                what="MANUFACTURE user share",
            )
        finally:
            del share


def _claims_another_bank(group: dict[str, Any], own: str, ours: str) -> bool:
    """Whether a batch's card group carries a CARD-CERT naming a bank other than ``own``
    (read at its offsets: :func:`claimed_card`; a malformed one is ours to refuse).
    ``ours``: our bank id's field as hex, which most certificates carry (a comparison
    of text at its offset: reading all of a batch's 10,000 claims took 17 to 24 ms)."""
    raw = group.get("cert")
    if not isinstance(raw, str):
        return False
    if raw.startswith(ours, 2 * (1 + CERT_ID_LEN)):
        return False
    try:  # the two fields' bytes only
        claim = claimed_card(bytes.fromhex(raw[: 2 * _CLAIM_BYTES]))
    except ValueError:
        return False
    return claim is not None and claim[0] != own


_CLAIM_BYTES: Final = 1 + CERT_ID_LEN + 4 + 64 + 4 + 19
"""A CARD-CERT's bytes up to its card number at the longest: version, id, bank id
(at most 64 bytes) and card number (at most 19), each text with its 4-byte length."""
