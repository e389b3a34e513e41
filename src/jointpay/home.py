"""A single-machine installation: the folder ``JOINTPAY_HOME`` and what lives in it.

::

    $JOINTPAY_HOME/
      bank.db                      the embedded bank (unless JOINTPAY_DB names another)
      cards/<card number>.card     each card's non-volatile memory (0600)
      merchants/<slug>/terminal.json   the terminal's S_id, MERCHANT-CERT, key (0600)
      merchants/<slug>/terminal.db     payments taken and not yet deposited

The bank, the cards and the terminals are separate parties that happen to share a
folder here; each only ever reads its own files. This module is the composition
root: it builds the objects of :mod:`jointpay.service` and :mod:`jointpay.protocol`
from explicit paths and URLs, and holds no global state.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from jointpay.adapters.card_file import CardBusy, CardFile, InProcessChannel, atomic_write
from jointpay.adapters.terminal_store import Registration, SqliteTerminalStore, TerminalFile
from jointpay.adapters.vpcd import Endpoint, VirtualCard, VpcdError
from jointpay.crypto.certs import BankCert, BankRole, MerchantCert, SigningKey, VerifyKey
from jointpay.crypto.errors import CryptoError
from jointpay.crypto.fips186 import verify_bank_group
from jointpay.domain.money import convert, parse_amount, parse_rate
from jointpay.protocol.card import CardStateError
from jointpay.protocol.deposit import (
    OnlineCheck,
    build_batch,
    make_deposit,
    parse_batch,
    verify_receipt,
)
from jointpay.protocol.messages import AuthKind
from jointpay.protocol.spec import Conversion, PaymentSpec
from jointpay.protocol.terminal import (
    CardClient,
    Clearance,
    OnlineAnswer,
    OnlinePolicy,
    OnlineRefused,
    OnlineUnavailable,
    TakenPayment,
    Terminal,
)
from jointpay.service.bank import Bank, Clock, IssuedCard, system_clock
from jointpay.service.errors import BadInput, Refused, ServiceError
from jointpay.service.flows import (
    MAX_RESTORE,
    BankPort,
    DepositPort,
    WithdrawOutcome,
    pending_request,
    withdraw_with_card,
)
from jointpay.service.policy import Policy
from jointpay.storage import open_store
from jointpay.storage.base import Store, UnitOfWork


class _Unclosed:
    """A store whose ``close`` does nothing (the Home keeps the in-memory bank)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def transaction(self, *, snapshot: bool = False) -> AbstractContextManager[UnitOfWork]:
        return self._store.transaction(snapshot=snapshot)

    def close(self) -> None:
        """The in-memory bank lives as long as its Home."""


def default_home() -> Path:
    return Path(os.environ.get("JOINTPAY_HOME") or Path.home() / ".jointpay")


def _slug(name: str) -> str:
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:32] or "m"
    return f"{readable}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


@dataclass
class Home:
    root: Path
    db_url: str | None = None
    clock: Clock = system_clock
    _memory: Store | None = field(default=None, repr=False)

    @classmethod
    def at(cls, root: Path | None, *, clock: Clock = system_clock) -> Home:
        return cls(root or default_home(), os.environ.get("JOINTPAY_DB") or None, clock)

    # -- the bank -----------------------------------------------------------------------
    def store(self, *, create: bool = False) -> Store:
        """The home's database: ``JOINTPAY_DB``, or SQLite ``bank.db`` in the home. Only
        ``create`` (``bank init``, ``clearing init``) makes a missing SQLite one: a
        command run on a mistyped home, or on a home whose bank is on PostgreSQL with
        ``JOINTPAY_DB`` unset, is refused instead of leaving an empty database there."""
        if self.db_url is None and not create and not (self.root / "bank.db").exists():
            raise BadInput(
                "no_bank",
                f"no bank in {self.root}: run `jointpay bank init` first (a bank on "
                "PostgreSQL: set JOINTPAY_DB)",
            )
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.db_url == "memory:":  # one in-memory bank per Home, kept across calls
            if self._memory is None:
                self._memory = open_store("memory:")
            return _Unclosed(self._memory)
        return open_store(self.db_url, home=self.root)

    @contextmanager
    def bank(self) -> Iterator[Bank]:
        store = self.store()
        try:
            bank = Bank(store, clock=self.clock)
            try:
                yield bank
            finally:
                bank.close()
        finally:
            store.close()

    def init_bank(
        self,
        *,
        suite: str,
        group: str | None,
        currency: str,
        bank_id: str | None = None,
        policy: Policy | None = None,
        own_group: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        self._refuse_a_home_of_another_bank()
        fresh = self.db_url is None and not (self.root / "bank.db").exists()
        store = self.store(create=True)
        try:
            bank = Bank.create(
                store,
                own_group=own_group,
                suite=suite,
                group=group,
                currency=currency,
                bank_id=bank_id,
                policy=policy,
                clock=self.clock,
            )
            return bank.parameters()
        except BaseException:
            if fresh:  # a refused init leaves no database behind
                store.close()
                for name in ("bank.db", "bank.db-wal", "bank.db-shm"):
                    (self.root / name).unlink(missing_ok=True)
            raise
        finally:
            store.close()

    def _refuse_a_home_of_another_bank(self) -> None:
        """A home with cards or terminals and no SQLite bank holds another bank's: most
        likely one on PostgreSQL, with ``JOINTPAY_DB`` unset in this shell."""
        if self.db_url is not None or (self.root / "bank.db").exists():
            return
        held = [d for d in ("cards", "merchants") if any((self.root / d).glob("*"))]
        if held:
            raise BadInput(
                "exists",
                f"{self.root} holds {' and '.join(held)} but no bank.db: its bank is "
                "elsewhere (JOINTPAY_DB unset?); use another home for a new bank",
            )

    # -- cards --------------------------------------------------------------------------
    def card_path(self, number: str) -> Path:
        if not re.fullmatch(r"[0-9]{8,19}", number):
            raise BadInput("bad_card", f"{number!r} is not a card number (8 to 19 digits)")
        return self.root / "cards" / f"{number}.card"

    def card(self, number: str) -> CardFile:
        f = CardFile(self.card_path(number))
        if not f.exists():
            raise BadInput("unknown_card", f"no card {number} in {self.root / 'cards'}")
        return f

    @contextmanager
    def _held(self, number: str) -> Iterator[CardFile]:
        """The card file, locked for the block; its faults as the commands report them."""
        card = self.card(number)
        try:
            with card.hold():
                yield card
        except CardStateError as exc:
            raise BadInput("corrupt_card", f"card {number}: {exc}") from exc
        except CardBusy as exc:
            raise BadInput("card_busy", str(exc)) from exc

    @contextmanager
    def card_client(self, number: str) -> Iterator[CardClient]:
        """The card in a local reader: its applet loaded from its file, held locked."""
        with self._held(number) as card:
            yield CardClient(InProcessChannel(card.applet()))

    @contextmanager
    def open_card(self, card: str | None = None, reader: str | None = None) -> Iterator[CardClient]:
        """The card named by number (its file, in process) or by the reader it sits in.

        With both, the card in the reader must be that card.
        """
        if reader is None:
            if card is None:
                raise BadInput("no_card", "name the card (--card) or its reader (--reader)")
            with self.card_client(card) as client:
                yield client
            return
        from jointpay.adapters.pcsc import PcscChannel

        with PcscChannel(reader) as channel:
            client = CardClient(channel)
            if card is not None:
                client.select()
                found = client.info().card_number
                if found != card:
                    raise BadInput("wrong_card", f"the card in {reader!r} is {found}, not {card}")
            yield client

    def insert_card(
        self,
        number: str,
        endpoint: Endpoint,
        *,
        connected: Callable[[], None],
        stop: threading.Event,
        timeout: float = 5.0,
    ) -> None:
        """Serve the card to a vpcd reader until ``stop`` is set (CONTRACT: card insert).

        If the reader goes away (pcscd restarted), wait for it and plug in again.
        """
        with self._held(number) as card:
            card.load()  # fail now, not at the first power-on, if the file is bad
            current = VirtualCard(card.applet, endpoint)
            current.connect(timeout)
            connected()

            def pull() -> None:
                stop.wait()
                current.stop()

            threading.Thread(target=pull, daemon=True, name="card-pull").start()
            try:
                while not stop.is_set():
                    try:
                        current.serve()
                    except VpcdError:
                        # The reader went away (pcscd restarted): wait, plug in again.
                        while not stop.is_set():
                            try:
                                current.connect(timeout)
                                break
                            except VpcdError:
                                continue
            finally:
                current.stop()

    def issue_card(
        self,
        bank: Bank,
        *,
        holder: str,
        pin: str,
        load: int,
        mode: str,
        limit: int,
        user_key: str,
        choice: int | None = None,
        auth: AuthKind = AuthKind.SIGNATURE,
    ) -> IssuedCard:
        """FIG. 4 with a fresh blank card file; the file is removed if issuing fails."""
        tmp = self.root / "cards" / f".blank-{os.getpid()}-{os.urandom(4).hex()}.card"
        _, applet = CardFile.blank(tmp)

        def chooser(options: Sequence[str]) -> int:
            if choice is None or not 0 <= choice < len(options):
                raise BadInput(
                    "bad_choice", f"--user-key holder needs --choice N (0-{len(options) - 1})"
                )
            return choice

        try:
            issued = bank.issue_card(
                CardClient(InProcessChannel(applet)),
                holder=holder,
                pin=pin,
                load=load,
                mode=mode,
                limit=limit,
                user_key=user_key,
                holder_choice=chooser,
                auth=auth,
            )
            os.replace(tmp, self.card_path(issued.card_number))
            return issued
        except Exception as exc:
            # Issuing is two steps (FIG. 4): the bank registers the card, then loads it
            # through the withdrawal exchange (step 270). If the load failed after the
            # registration committed, the card is issued: keep it, and say how to load it.
            number = applet.state.card_number
            if number and bank.has_card(number):
                os.replace(tmp, self.card_path(number))
                raise Refused(
                    "load_failed",
                    f"card {number} is issued, but its initial load failed ({exc}); "
                    f"load it with `jointpay withdraw --card {number}`",
                ) from exc
            raise
        finally:
            if tmp.exists():
                tmp.unlink()

    # -- merchants ----------------------------------------------------------------------
    def merchant_dir(self, name: str) -> Path:
        return self.root / "merchants" / _slug(name)

    def open_merchant(self, bank: Bank, name: str, bank_url: str | None = None) -> TerminalFile:
        """FIG. 3: the merchant makes its key; the bank certifies it; the terminal is set up."""
        folder = self.merchant_dir(name)
        if (folder / "terminal.json").exists():
            raise Refused("exists", f"a merchant terminal named {name!r} exists already")
        key = SigningKey.generate(name)
        record, cert = bank.open_merchant(name, key.verify_key.raw)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        tf = TerminalFile(
            name,
            bank.bank_id,
            record.sid,
            cert,
            key.private_bytes(),
            {bank.bank_id: bank.verify_key.raw},
            bank_url,
            {bank.group.name: json.loads(bank.group_params_json())}
            if bank.group_params_json() and bank.group.name
            else None,
        )
        atomic_write(folder / "terminal.json", tf.to_json().encode())
        SqliteTerminalStore(folder / "terminal.db").close()
        return tf

    def terminal_file(self, name: str) -> TerminalFile:
        path = self.merchant_dir(name) / "terminal.json"
        if not path.exists():
            raise BadInput("unknown_merchant", f"no merchant terminal named {name!r}")
        return TerminalFile.from_json(path.read_text(encoding="utf-8"))

    @contextmanager
    def terminal(self, name: str) -> Iterator[tuple[TerminalFile, SqliteTerminalStore]]:
        tf = self.terminal_file(name)
        store = SqliteTerminalStore(self.merchant_dir(name) / "terminal.db")
        try:
            yield tf, store
        finally:
            store.close()

    # -- the three transactions -----------------------------------------------------------
    def pay(
        self,
        card: str | None,
        merchant: str,
        amount: int | str,
        pin: str | Callable[[], str],
        *,
        reader: str | None = None,
        bank: BankPort | None = None,
        floor_limit: int | str | None = None,
        online_sample: float = 0.0,
        price_currency: str | None = None,
        rate: str | None = None,
        cleared: Callable[[Clearance], None] | None = None,
    ) -> TakenPayment:
        """FIG. 8: one offline payment; no bank is contacted unless on-line clearance asks.

        With ``price_currency`` (other than the card's), ``amount`` is a decimal string
        in that currency and the card pays its conversion at ``rate`` (a decimal
        string), or at the bank's published rate if ``rate`` is None.

        ``amount`` (and ``floor_limit``) are minor units, or decimal strings read in
        the card's currency once the card is read (as a terminal asks for the amount
        after the card is in). ``pin`` may be a callable, asked only when the card
        wants the PIN. With ``floor_limit`` or ``online_sample``, the terminal asks
        ``bank`` (the embedded bank if None) to clear payments above the floor limit
        and a random fraction of the others; ``cleared`` is told what it did for a
        payment taken.
        """
        wants_online = floor_limit is not None or online_sample > 0
        with contextlib.ExitStack() as stack:
            tf, store = stack.enter_context(self.terminal(merchant))
            client = stack.enter_context(self.open_card(card, reader))
            now = self.clock()
            terminal = Terminal(tf.config(store.hotlist()), store)
            cert = terminal.read_card(client, now, hotlist=False)
            if store.in_flight(cert.card_number) is None:  # else recovered first (pay)
                terminal.check_hotlist(cert)
            credit = cert.mode.value == "credit"  # cleared on-line by default
            # a card of a bank we are registered with pays us there, and that bank clears
            reg = tf.registrations.get(cert.bank_id) if cert.bank_id != tf.bank_id else None
            needs_bank = wants_online or credit or (price_currency and rate is None)
            if needs_bank and reg is not None:
                bank = stack.enter_context(self.connect(reg.bank_url, reg.bank_key))
            elif needs_bank and bank is None:
                bank = stack.enter_context(self.bank())
            conversion = None
            if price_currency is not None and price_currency != cert.currency:
                if not isinstance(amount, str):
                    raise BadInput("bad_amount", "a converted price is a decimal string")
                conversion = _conversion(amount, price_currency, rate, bank, now)
                minor = convert(
                    conversion.orig_amount, price_currency, conversion.rate_micro, cert.currency
                )
            else:
                minor = parse_amount(amount, cert.currency) if isinstance(amount, str) else amount
            if (wants_online or credit) and bank is not None:  # the card's currency too
                floor = (
                    parse_amount(floor_limit, cert.currency, allow_zero=True)
                    if isinstance(floor_limit, str)
                    else floor_limit
                )
                # another bank's card, with no account there: asked through a clearing house
                foreign = cert.bank_id != tf.bank_id and reg is None
                asked = tf.bank_id if reg is None else cert.bank_id
                key = SigningKey.from_private_bytes(_sid_at(tf, asked), tf.signing_key)
                terminal.online = OnlinePolicy(
                    online_clearance(bank, key, self.clock, cert.bank_id if foreign else None),
                    floor,
                    online_sample,
                    always=credit,
                    restore=online_restore(bank) if credit and not foreign else None,
                )
            source = pin if callable(pin) else (lambda: pin)
            taken = terminal.pay(client, minor, source, now, card=cert, conversion=conversion)
            if cleared is not None:
                cleared(terminal.clearance)
            return taken

    def online_check(
        self,
        merchant: str,
        card_number: str,
        amount: int | str,
        bank: BankPort,
        issuer: str | None = None,
    ) -> dict[str, Any]:
        """FIG. 8's on-line check asked by the merchant's terminal with no card at hand
        (``merchant check``): would ``amount`` clear on the card now? Signed with the
        terminal's key, as a payment's check is."""
        tf = self.terminal_file(merchant)
        currency = str(bank.parameters()["currency"])
        if isinstance(amount, str):
            amount = parse_amount(amount, currency)
        key = SigningKey.from_private_bytes(_sid_at(tf, bank.bank_id), tf.signing_key)
        ask = OnlineCheck(bank.bank_id, key.owner, card_number, amount, issuer, self.clock())
        try:
            answer = read_online_answer(bank.online_check(ask.signed(key)))
        except OnlineUnavailable as exc:
            raise Refused("bank_unreachable", str(exc)) from exc
        return {**asdict(answer), "currency": currency}

    def sync_hotlist(self, merchant: str, bank: BankPort) -> int:
        """Bring the terminal's hot list (and, in a scheme, its list of member banks and
        their hot lists) up to date; return how many hot-list entries arrived."""
        with self.terminal(merchant) as (tf, store):
            entries = bank.hotlist(store.hotlist_version())
            store.add_hotlist((e.card_number, e.version) for e in entries)
            n = len(entries)
            scheme = bank.scheme()
            if scheme.get("scheme_id"):
                self._trust_scheme(merchant, tf, scheme)
                n += store.add_scheme_hotlist(str(e["card"]) for e in bank.scheme_hotlist())
            for reg in tf.registrations.values():  # the hot lists of the other banks we serve
                with self.connect(reg.bank_url, reg.bank_key) as port:
                    n += store.add_scheme_hotlist(e.card_number for e in port.hotlist(0))
            return n

    def _trust_scheme(self, merchant: str, tf: TerminalFile, scheme: dict[str, Any]) -> None:
        """Trust every member bank the scheme root certifies, and keep our BANK-CERT."""
        root = VerifyKey(str(scheme["scheme_id"]), bytes.fromhex(str(scheme["scheme_key"])))
        keys = {tf.bank_id: tf.bank_keys[tf.bank_id]}
        now = self.clock()
        for raw in scheme.get("members", []):
            try:
                cert = BankCert.decode(bytes.fromhex(str(raw)))
                cert.verify(root, at=now, role=BankRole.BANK)
            except (CryptoError, ValueError):
                continue  # an expired or forged certificate: that bank's cards are refused
            keys.setdefault(cert.bank_id, cert.public_key)
        own = BankCert.decode(bytes.fromhex(str(scheme["bank_cert"])))
        own.verify(root, role=BankRole.BANK)
        if own.bank_id != tf.bank_id or own.public_key != tf.bank_keys[tf.bank_id]:
            raise Refused("bad_cert", "the bank's BANK-CERT certifies another bank or key")
        updated = replace(tf, bank_keys=keys, bank_cert=own.encode())
        atomic_write(self.merchant_dir(merchant) / "terminal.json", updated.to_json().encode())

    def merchant_key(self, merchant: str) -> dict[str, str]:
        """What another bank needs to open an account for this terminal (FIG. 3)."""
        tf = self.terminal_file(merchant)
        key = SigningKey.from_private_bytes(tf.sid, tf.signing_key).verify_key
        return {"merchant": tf.name, "public_key": key.raw.hex(), "bank_id": tf.bank_id}

    def add_bank(self, merchant: str, bank: BankPort, cert: bytes, url: str) -> Registration:
        """Register the terminal with another bank, from the MERCHANT-CERT it issued us.

        The certificate must verify under that bank's published key and certify our own
        terminal key; from then on that bank's cards pay us under its S_id, and its
        payments are deposited there.
        """
        tf = self.terminal_file(merchant)
        try:
            mc = MerchantCert.decode(cert)
            mc.verify(bank.verify_key, at=self.clock())
        except CryptoError as exc:
            raise Refused("bad_cert", f"the MERCHANT-CERT does not verify: {exc}") from exc
        own = SigningKey.from_private_bytes(tf.sid, tf.signing_key).verify_key.raw
        if mc.bank_id != bank.bank_id or mc.public_key != own:
            raise Refused("bad_cert", "the MERCHANT-CERT is for another bank or terminal key")
        if mc.bank_id == tf.bank_id:
            raise Refused("exists", "the terminal already belongs to that bank")
        params = bank.parameters()
        group = group_name = None
        if params.get("group_record") is not None:
            rec = verify_bank_group(params["group_record"])
            group, group_name = rec.params.to_json(), rec.name
        reg = Registration(mc.bank_id, mc.sid, cert, bank.verify_key.raw, url, group, group_name)
        updated = replace(tf, registrations={**tf.registrations, reg.bank_id: reg})
        atomic_write(self.merchant_dir(merchant) / "terminal.json", updated.to_json().encode())
        return reg

    @contextmanager
    def connect(self, url: str, pinned: bytes | None = None) -> Iterator[BankPort]:
        """A bank by its address: ``http(s)://`` (its service) or a database URL (an
        embedded bank on this machine). With ``pinned``, the bank's key must be that
        one (a registration's bank), or :class:`Refused` ``wrong_bank_key``."""
        if url.startswith(("http://", "https://")):
            from jointpay.api.client import HttpBank

            port = HttpBank(url, pinned_key=pinned)
            try:
                yield port
            finally:
                port.close()
        else:
            with Home(self.root, url, self.clock).bank() as bank:
                if pinned is not None and bank.verify_key.raw != pinned:
                    raise Refused("wrong_bank_key", f"{url} holds another bank's key")
                yield bank

    def export_batch(
        self, merchant: str, bank_id: str | None = None, *, since: int | None = None
    ) -> dict[str, Any]:
        """The batch of pending payments for ``bank_id`` (our own bank by default);
        with ``since``, also those the bank settled since then, by its receipts' times
        (to deposit again at a bank restored from a backup)."""
        with self.terminal(merchant) as (tf, store):
            bank_id = bank_id or tf.bank_id
            sid = _sid_at(tf, bank_id)
            return build_batch(bank_id, sid, _pending_for(tf, store, bank_id, since))

    def deposit(
        self, merchant: str, bank: DepositPort, batch: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """FIG. 9 on the merchant's side: sign the session, send, check the receipt.

        Deposits the payments made out to ``bank`` (our own bank, or one we are
        registered with), or ``batch``.
        """
        with self.terminal(merchant) as (tf, store):
            bank_id = bank.bank_id
            sid = _sid_at(tf, bank_id)
            ours = None  # the receipt settles every payment sent: our own
            if batch is None:
                batch = build_batch(bank_id, sid, _pending_for(tf, store, bank_id))
            else:
                ours = _held_as_sent(_pending_for(tf, store, bank_id), batch)
            parse_batch(batch)  # a malformed batch is bad input, whatever bank it names
            if batch.get("bank_id") != bank_id:
                raise Refused(
                    "wrong_bank",
                    f"the batch is for bank {batch.get('bank_id')!r}, not {bank_id!r}",
                )
            key = SigningKey.from_private_bytes(sid, tf.signing_key)
            message = make_deposit(key, bank_id, sid, store.next_deposit_seq(), self.clock(), batch)
            receipt = bank.deposit(message)
            bank_key = (
                tf.bank_keys[bank_id]
                if bank_id == tf.bank_id
                else tf.registrations[bank_id].bank_key
            )
            verify_receipt(VerifyKey(bank_id, bank_key), receipt)
            results = receipt["results"]
            if ours is not None:  # a file: its answers settle only the payments we hold
                results = [r for r in results if (r.get("card"), r.get("ser")) in ours]
            at = receipt.get("time")  # the bank's clock, as a backup's time is
            store.record_results(
                str(receipt["deposit_id"]), results, at if type(at) is int else None
            )
            return receipt

    def deposit_everywhere(self, merchant: str, bank: DepositPort | None) -> list[dict[str, Any]]:
        """Sort the pending payments by the bank they are made out to, and deposit each
        part there: our own bank's through ``bank`` (the bank, a clearing house that
        relays to it, or the embedded bank if None), then every bank we are registered
        with that has payments waiting. One receipt per bank."""
        tf = self.terminal_file(merchant)
        with self.terminal(merchant) as (_, store):
            waiting = _payee_banks(tf, store)
        receipts = []
        with contextlib.ExitStack() as stack:
            own = bank if bank is not None else stack.enter_context(self.bank())
            receipts.append(self.deposit(merchant, own))
        for bank_id in sorted(waiting - {tf.bank_id}):
            reg = tf.registrations[bank_id]
            with self.connect(reg.bank_url, reg.bank_key) as port:
                receipts.append(self.deposit(merchant, port))
        return receipts

    def withdraw(
        self,
        card: str | None,
        bank: BankPort,
        *,
        pin: str | Callable[[], str],
        amount: int | str,
        renew: bool,
        auth: AuthKind = AuthKind.SIGNATURE,
        reader: str | None = None,
    ) -> WithdrawOutcome:
        """FIG. 10 from the holder's side; ``amount`` as in :meth:`pay`.

        For a credit card the exchange restores its usable limit (no money moves);
        ``amount="max"`` restores it as far as the bank allows now, in one exchange
        that the card signs (the bank tells no one else how far that is).
        """
        up_to = False
        with self.open_card(card, reader) as client:
            if isinstance(amount, str):
                client.select()
                info = client.info()
                if not info.currency:
                    raise Refused("not_issued", "the card has not been issued")
                if amount == "max":
                    if info.mode != "credit":
                        raise BadInput("bad_amount", "--amount max restores a credit card")
                    # the card asks for a restore of up to any amount; the bank grants
                    # what the limit allows, and the card takes what it grants. A
                    # restore whose answer was lost is the one to complete.
                    pending = pending_request(client)
                    amount, up_to = (
                        (pending.amount, pending.up_to)
                        if pending is not None
                        else (MAX_RESTORE, True)
                    )
                else:
                    amount = parse_amount(amount, info.currency, allow_zero=True)
            return withdraw_with_card(
                client,
                bank,
                pin=pin() if callable(pin) else pin,
                amount=amount,
                renew=renew,
                auth=auth,
                up_to=up_to,
            )


def _sid_at(tf: TerminalFile, bank_id: str) -> str:
    """Our S_id at ``bank_id``."""
    if bank_id == tf.bank_id:
        return tf.sid
    reg = tf.registrations.get(bank_id)
    if reg is None:
        raise Refused("wrong_bank", f"the merchant has no account at bank {bank_id!r}")
    return reg.sid


def _payee_bank(p: TakenPayment) -> str:
    return PaymentSpec.decode(p.spec).bank_id


def _held_as_sent(pending: list[TakenPayment], batch: object) -> set[tuple[str, int]]:
    """The (card, ser) of the pending payments that ``batch`` (a file) carries exactly
    as this terminal took them: CARD-CERT, ser, spec, b and r (the hint aside).

    A receipt's answer for (card, ser) is about the bytes that were sent. A file whose
    copy of a payment was damaged or altered gets it rejected (``bad_signature``, say);
    marking the terminal's own, sound copy rejected with it lost the merchant that
    payment for good: only the terminal's copy can still be deposited."""
    if not pending:
        return set()  # a file of payments this terminal does not hold: nothing to settle
    ours = {(p.ser, p.spec.hex()): p for p in pending}
    certs = {p.card_cert: p.card_cert.hex() for p in pending}  # one hex a certificate
    held: set[tuple[str, int]] = set()
    groups = batch.get("cards") if isinstance(batch, dict) else None
    for group in groups if isinstance(groups, list) else []:
        if not isinstance(group, dict) or not isinstance(group.get("payments"), list):
            continue
        cert = str(group.get("cert")).lower()
        for sent in group["payments"]:
            if not isinstance(sent, dict):
                continue  # the bank reports a malformed payment; it settles nothing here
            ser, spec = sent.get("ser"), sent.get("spec")
            p = (
                ours.get((ser, spec.lower()))
                if type(ser) is int and isinstance(spec, str)
                else None
            )
            if (
                p is not None
                and cert == certs[p.card_cert]
                and str(sent.get("b")).lower() == p.b.hex()
                and str(sent.get("r")).lower() == p.r.hex()
            ):
                held.add((p.card_number, p.ser))
    return held


def _pending_for(
    tf: TerminalFile, store: SqliteTerminalStore, bank_id: str, since: int | None = None
) -> list[TakenPayment]:
    """The pending payments made out to ``bank_id`` (all of them with one bank only);
    with ``since``, and those the bank settled since then (its receipts' times)."""
    taken = store.pending(deposited_since=since)
    if not tf.registrations:
        return list(taken) if bank_id == tf.bank_id else []
    return [p for p in taken if _payee_bank(p) == bank_id]


def _payee_banks(tf: TerminalFile, store: SqliteTerminalStore) -> set[str]:
    if not tf.registrations:
        return {tf.bank_id}
    return {_payee_bank(p) for p in store.pending()}


NO_ANSWER: frozenset[str] = frozenset(
    {"bank_unreachable", "bad_answer", "error", "no_bank", "no_clearing_house"}
)
"""Failures of an on-line check that are no answer about the card: the bank or the
house could not be reached, a reply that is not JSON (``bad_answer``: a proxy's page),
a failure that is no problem+json (``error``: a server's bare 500 after the client's
retries), a server with no bank or no clearing house (503). The terminal treats them as
an unreachable bank; any other refusal (``unknown_card``, ``unauthorised``, ...) is the
bank's answer and declines."""


def online_clearance(
    bank: BankPort, key: SigningKey, clock: Callable[[], int], issuer: str | None = None
) -> Callable[[str, int], OnlineAnswer]:
    """The terminal's on-line question, signed with the merchant's ``key`` (its owner
    is our S_id at ``bank``) and put to that bank (embedded or over HTTP); for another
    bank's card (``issuer``), our bank asks it through a clearing house."""

    def check(card_number: str, amount: int) -> OnlineAnswer:
        try:  # a bank over HTTP is asked its id too: unreachable from there on
            ask = OnlineCheck(bank.bank_id, key.owner, card_number, amount, issuer, clock())
            answer = bank.online_check(ask.signed(key))
        except ServiceError as exc:
            if exc.code in NO_ANSWER:
                raise OnlineUnavailable(exc.message) from exc
            return OnlineAnswer(False, exc.code)
        return read_online_answer(answer)

    return check


def read_online_answer(answer: object) -> OnlineAnswer:
    """The bank's on-line answer, checked: ``approved`` a boolean, ``reason`` a string
    or null, ``topup`` a non-negative integer (left out: 0). Anything else is no answer
    (:class:`OnlineUnavailable`): the terminal then treats the bank as unreachable,
    declining above the floor limit and going on offline below it, never guessing
    an approval from a damaged reply."""
    if not isinstance(answer, dict):
        raise OnlineUnavailable("the bank's on-line answer is not a JSON object")
    approved, reason, topup = answer.get("approved"), answer.get("reason"), answer.get("topup", 0)
    if type(approved) is not bool:
        raise OnlineUnavailable("the bank's on-line answer has no boolean 'approved'")
    if reason is not None and not isinstance(reason, str):
        raise OnlineUnavailable("the bank's on-line answer has a 'reason' that is no string")
    if topup is None:
        topup = 0
    if type(topup) is not int or topup < 0:
        raise OnlineUnavailable("the bank's on-line answer has a 'topup' that is no amount")
    return OnlineAnswer(approved, reason, topup)


def online_restore(bank: BankPort) -> Callable[[bytes], bytes]:
    """A credit card's FIG. 10 request, carried by a merchant's terminal to the bank."""

    def restore(request: bytes) -> bytes:
        try:
            return bank.withdraw(request)
        except ServiceError as exc:
            if exc.code == "bank_unreachable":
                raise OnlineUnavailable(exc.message) from exc
            proof = exc.proof if isinstance(exc, Refused) else None
            raise OnlineRefused(exc.code, exc.message, proof) from exc

    return restore


def _conversion(
    amount: str, currency: str, rate: str | None, bank: BankPort | None, now: int
) -> Conversion:
    """The spec's conversion: the price in ``currency`` and the rate the terminal states."""
    orig = parse_amount(amount, currency)
    if rate is not None:
        micro = parse_rate(rate)
    elif bank is None:  # pragma: no cover - pay() opens the embedded bank in this case
        raise BadInput("bad_rate", "no rate given and no bank to ask")
    else:
        rows = bank.rates()["rates"].get(currency) or []
        current = [r for r in rows if int(r["from"]) <= now]
        if not current:
            raise Refused(
                "currency_mismatch", f"the bank publishes no rate for {currency}; give --rate"
            )
        micro = parse_rate(str(current[-1]["rate"]))
    return Conversion(orig, currency, micro)
