"""The bank's per-payment checks of a deposit session (FIG. 9 steps 650-700).

Set-based and streaming, inside the session's one transaction:

1. **cards first**: each card group's CARD-CERT decoded and checked once (our own
   recognised by their stored bytes);
2. **chunks** of payments, as the batch carries them, handed to the workers that parse
   (format, spec, scalars) and verify them (:mod:`jointpay.service.verify_pool`)
   while earlier chunks are settled. Before the first chunk is settled, every card of
   the batch is row-locked in one statement, in card-number order, with its issued
   certificates and balances. Per chunk: one query for their ``(card, ser)`` deposited
   before (only sers at or below the card's highest deposited one can have been), the
   checks in the order of the contract's reason codes, one insert of the accepted
   rows. There is never one SELECT per payment;
3. **book** everything accepted as one compound posting.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from itertools import islice
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from jointpay.crypto.certs import CERT_ID_LEN, CardCert, CardMode, claimed_card
from jointpay.crypto.errors import CryptoError
from jointpay.crypto.schnorr import MAX_SER
from jointpay.domain.money import RATE_SCALE, convert, format_amount
from jointpay.domain.records import (
    Account,
    AccountKind,
    CardRecord,
    CardStatus,
    CertRecord,
    InterbankRecord,
    Leg,
    PaymentRecord,
    Transfer,
)
from jointpay.protocol.deposit import MAX_CERT_HEX, DepositRequest, canonical_json
from jointpay.protocol.spec import PaymentSpec
from jointpay.service import verify_pool
from jointpay.service.errors import Refused
from jointpay.service.interbank import Candidate, Cleared
from jointpay.service.rates import RATES_KEY, RateTable, load_table, rate_in
from jointpay.service.verify_pool import (
    Answer,
    JobHead,
    RawJob,
    modp_params,
    parse_and_verify,
)
from jointpay.storage.base import InsufficientFunds, UnitOfWork

if TYPE_CHECKING:
    from jointpay.service.bank import Bank


class PaymentResult(NamedTuple):
    """One payment's answer in the receipt (a named tuple: one per payment, see
    :class:`~jointpay.domain.records.PaymentRecord`)."""

    card: str
    ser: int | None
    status: str
    reason: str | None
    amount: int | None


def results_json(results: list[PaymentResult], currency: str) -> list[dict[str, Any]]:
    """The receipt's ``results``: each payment's answer, its amount as a decimal string.

    A shop's payments repeat a few prices, so each amount is formatted once per
    deposit: the receipt of 10,000 payments took 26 ms to build with a method call
    and a formatting a payment, 6 ms so, and the bank builds it holding the cards'
    locks."""
    amounts: dict[int, str] = {}
    out: list[dict[str, Any]] = []
    add = out.append
    for card, ser, status, reason, amount in results:
        text = None
        if amount is not None:
            text = amounts.get(amount)
            if text is None:
                text = amounts[amount] = format_amount(amount, currency)
        add({"card": card, "ser": ser, "status": status, "reason": reason, "amount": text})
    return out


class _Parsed(NamedTuple):
    """A payment that parsed, under a usable CARD-CERT; ``valid``: strict verification's
    answer (computed with the parsing, in a worker or in process)."""

    cert: CardCert
    ser: int
    spec_bytes: bytes
    spec: PaymentSpec
    b: bytes
    r: bytes
    valid: bool


_Pending = tuple[int, CardCert | str, int]
"""A payment sent to be parsed and verified: its place in the results, its CARD-CERT
(or the reason code that makes it unusable) and its ser."""


_BLACKLISTED = CardStatus.BLACKLISTED
_CHEQUE = CardMode.CHEQUE.value
_CREDIT = CardMode.CREDIT.value

_UNSETTLED = PaymentResult("", None, "rejected", "malformed", None)
"""A place in the results for a payment whose chunk is still being verified."""

_BREACH_TEXT = {
    "double_spend": "the same ser was signed over two different specs: the card was cloned "
    "or its state rolled back",
    "overspend": "accepted payments would exceed the card's C_balance",
}


class DepositTimes:
    """Where one deposit's time went on the bank's side, in the order it passes:
    ``session`` (its digest, signature and sequence checked), ``certs`` (the batch's
    CARD-CERTs recognised and its cards listed), ``stream`` (every chunk verified,
    checked and written; of it, ``locks``: the cards' rows locked and their balances
    read, and ``waiting``: this thread idle until the workers' answers came),
    ``book`` (the posting), ``receipt`` (built and signed) and ``commit``; with the
    CPU time of the thread that deposits (a server's request thread, or the main one).
    A deposit whose ``waiting`` is near zero is bound by that thread, one whose
    ``waiting`` is most of ``stream`` by the workers. The bank
    logs them (logger ``jointpay.deposit``, level INFO; operations.md), and
    ``bench/deposit.py`` prints them."""

    __slots__ = ("_at", "_cpu", "phases")

    def __init__(self) -> None:
        self._at = time.perf_counter()
        self._cpu = time.thread_time()
        self.phases: dict[str, float] = {}
        """Milliseconds by phase (``locks`` and ``waiting`` inside ``stream``)."""

    def mark(self, phase: str) -> None:
        """``phase`` ended now (it began when the previous one ended)."""
        now = time.perf_counter()
        self.phases[phase] = (now - self._at) * 1e3
        self._at = now

    def add(self, phase: str, since: float) -> None:
        """Time spent inside a phase since ``since`` (``time.perf_counter()``), added to
        ``phase``."""
        self.phases[phase] = self.phases.get(phase, 0.0) + (time.perf_counter() - since) * 1e3

    def summary(self) -> dict[str, float]:
        """The phases in the order they pass, their total and the depositing thread's
        CPU, in milliseconds."""
        total = sum(v for k, v in self.phases.items() if k not in _NESTED)
        cpu = (time.thread_time() - self._cpu) * 1e3
        out = {k: round(self.phases[k], 1) for k in _PHASES if k in self.phases}
        return {**out, "total": round(total, 1), "thread_cpu": round(cpu, 1)}

    @staticmethod
    def text(figures: dict[str, float]) -> str:
        """``figures`` (:meth:`summary`) in words: ``session 20, certs 3, stream 795
        (locks 16, waiting 323), ...; thread CPU 299``, in ms."""
        parts: list[str] = []
        for k in _PHASES:
            if k not in figures or k in _NESTED:
                continue
            parts.append(f"{k} {figures[k]:.0f}")
            if k == "stream":  # the phases inside it, in brackets
                inner = ", ".join(f"{n} {figures[n]:.0f}" for n in _NESTED if n in figures)
                parts[-1] += f" ({inner})" if inner else ""
        return f"{', '.join(parts)}; thread CPU {figures['thread_cpu']:.0f}"


_PHASES = (
    "session",
    "certs",
    "stream",
    "locks",
    "waiting",
    "clearing",
    "book",
    "receipt",
    "commit",
)
_NESTED = ("locks", "waiting")


CERT_WINDOW: Final = 256
"""Cards whose stored certificates :meth:`DepositRun._read_certs` reads at least in one
query (and a chunk's worth of payments)."""


class DepositRun:
    """One deposit session's payments, checked and booked inside transaction ``tx``."""

    def __init__(
        self,
        bank: Bank,
        tx: UnitOfWork,
        req: DepositRequest,
        deposit_id: str,
        now: int,
        *,
        from_house: str | None = None,
        cleared: ClearedFirst | None = None,
        plan: bool = False,
        times: DepositTimes | None = None,
    ) -> None:
        self.bank = bank
        self.times = times if times is not None else DepositTimes()
        self.from_house = from_house
        """Set when a clearing house brings our cards' payments at another bank's
        merchant (``req.bank_id`` is then that bank): no fee, credit the house."""
        self.cleared = cleared
        """The houses' answers for the other banks' payments, obtained before this
        transaction opened (:meth:`Bank._clear_first`): a deposit never waits for the
        network while it holds its locks."""
        self.plan = plan
        """Judge every payment, and keep the other banks' payments that pass our rules
        in :attr:`planned` instead of clearing them; book nothing."""
        self.planned: list[Candidate] = []
        self._tx = tx
        self._writer: ThreadPoolExecutor | None = None
        """Writes each chunk's payment rows while the next chunk is checked (large
        batches only: see :meth:`_write`)."""
        self._pending: Future[None] | None = None
        self.req = req
        self.deposit_id = deposit_id
        self.now = now
        policy = bank.policy
        self._own = bank.bank_id
        """Our bank's id (the bank's configuration, read once per deposit)."""
        self._latest = now + policy.clock_skew
        """A payment dated after this is ``future_time``."""
        self._oldest = now - policy.deposit_window
        """A payment dated before this is ``stale``."""
        self._certs: dict[bytes, CardCert | str] = {}
        self._by_text: dict[str, CardCert | str] = {}
        """:meth:`_cert`'s answers by the certificate's hex text as received."""
        self._known: set[int] = set()
        """ids of the CardCerts read back from our own stored bytes."""
        self._powers: dict[int, bytes] = {}
        """The comb powers stored with them (modp), by the CardCert's id."""
        self._bytes: dict[int, bytes] = {}
        """Each decoded CardCert's bytes as received, by id (no re-encoding to compare)."""
        self.cards: dict[str, CardRecord] = {}
        self._claimed: set[str] = set()
        """The card numbers that the batch's CARD-CERTs naming our bank claim, judged or
        not: the cards locked at once (:meth:`_lock_cards`)."""
        self._unread: dict[str, tuple[bytes, bytes]] = {}
        """The batch's certificates whose stored records are not read yet, by their hex
        text as received: (cert id, bytes) (:meth:`_read_certs`)."""
        self._stored: dict[str, CertRecord] = {}
        """The batch's certificates whose bytes are those we stored at issue, by their
        hex text as received."""
        self._locked = False
        self.issued: dict[bytes, CertRecord] = {}
        self._issued_ok: dict[tuple[bytes, str], bool] = {}
        self.prior: dict[tuple[str, int], PaymentRecord] = {}
        self.seen: dict[tuple[str, int], bytes] = {}
        self.accepted: list[PaymentRecord] = []
        """Accepted in the chunk being settled (written, then dropped, per chunk)."""
        self.n_accepted = 0
        self.debits: dict[str, int] = {}
        self.available: dict[str, int] = {}
        self.top_ser: dict[str, int] = {}
        self.merchant_credit = 0
        self.clearing_credit = 0
        self.fees = 0
        self._rates: RateTable | None = None
        self.ib_prior: dict[tuple[str, str, int], InterbankRecord] = {}
        self.ib_seen: dict[tuple[str, str, int], bytes] = {}
        """This session's other banks' payments sent to be cleared: their specs."""
        self.foreign: list[tuple[int, _Parsed]] = []
        self.ib_records: list[InterbankRecord] = []
        self.ib_debits: dict[str, int] = {}

    def run(self) -> list[PaymentResult]:
        """Check and book the session's payments, streaming: chunks are sent to be parsed
        and verified (:func:`verify_pool.parse_and_verify`) while earlier chunks are
        checked and their payment rows written, so a payment's state lives only while
        its chunk is in flight."""
        verifier = self.bank.verifier
        size = self.req.batch.count
        if verifier.workers and size >= verifier.min_batch:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="jointpay-deposit-writes")
        try:
            results = self._run(verifier, size)
        except BaseException:
            self._stop_writer(failed=True)
            raise
        self._stop_writer(failed=False)
        return results

    def _run(self, verifier: verify_pool.Verifier, size: int) -> list[PaymentResult]:
        self._list_certs()
        self.times.mark("certs")
        results: list[PaymentResult] = []
        depth = max(1, verifier.workers) + 1  # chunks in flight: every worker busy
        inflight: deque[tuple[list[_Pending], Callable[[], list[Answer]]]] = deque()
        chunk: list[_Pending] = []
        jobs: list[RawJob] = []
        heads: dict[int, JobHead] = {}
        unusable: JobHead = ("", None, None, False, b"")

        def send() -> None:
            inflight.append((chunk, verifier.submit(parse_and_verify, jobs, batch_size=size)))
            while len(inflight) > depth:
                self._settle(*inflight.popleft(), results, behind=True)

        label, head, malformed = "", unusable, False
        for index, (cert_raw, payments) in enumerate(self.req.batch.groups()):
            if isinstance(cert_raw, str) and cert_raw in self._unread:
                self._read_certs(index)
            cert: CardCert | str | None = None
            for ser, spec, b, r, hint in payments:
                if cert is None:  # a group's CARD-CERT, judged at its first payment
                    cert = self._cert(cert_raw)
                    malformed = cert == "malformed"
                    if isinstance(cert, CardCert):
                        label = cert.card_number
                        head = heads.get(id(cert)) or self._job_head(cert)
                        heads[id(cert)] = head
                    else:
                        label, head = "", unusable
                if malformed or type(ser) is not int:  # bool is no ser either
                    results.append(_rejected(label, ser if type(ser) is int else None, "malformed"))
                    continue
                chunk.append((len(results), cert, ser))
                jobs.append((*head, ser, spec, b, r, hint))
                results.append(_UNSETTLED)
                if len(chunk) >= verify_pool.CHUNK:
                    send()
                    chunk, jobs = [], []
        if chunk:
            send()
        if inflight and not self._locked:
            # The whole batch is in flight: its cards are locked once all of it is
            # verified (see _lock_cards), and it is settled as one part: one query of
            # earlier records, one write. A server's deposits are such batches, and
            # each statement under the locks is a round trip the others wait for.
            parts = [(part, self._wait(answers)) for part, answers in inflight]
            inflight.clear()
            self._settle_parts(parts, results, behind=False)
        while inflight:
            part, answers = inflight.popleft()
            # the last chunk's rows are written on this thread (see _write)
            self._settle(part, answers, results, behind=bool(inflight))
        self.times.mark("stream")
        if self.foreign:
            self._clear_foreign(results)
            self.times.mark("clearing")
        if self.plan:
            return results
        self._book()
        self.times.mark("book")
        return results

    def _job_head(self, cert: CardCert) -> JobHead:
        """What a worker needs of a card's CARD-CERT: suite, group, enc(Y), whether we
        issued it (then its Y was validated before we stored it), and the comb powers
        we stored with it (modp)."""
        group, key = cert.group, id(cert)  # _powers holds only read-back (known) certs
        powers = self._powers.get(key, b"")
        return group.suite, modp_params(group), cert.joint_key.encoded, key in self._known, powers

    def _settle(
        self,
        chunk: list[_Pending],
        answers: Callable[[], list[Answer]],
        results: list[PaymentResult],
        *,
        behind: bool,
    ) -> None:
        """One chunk, once its answers are in (:meth:`_settle_parts`)."""
        self._settle_parts([(chunk, self._wait(answers))], results, behind=behind)

    def _wait(self, answers: Callable[[], list[Answer]]) -> list[Answer]:
        """A chunk's answers, the time this thread waited for them counted."""
        since = time.perf_counter()
        got = answers()
        self.times.add("waiting", since)
        return got

    def _settle_parts(
        self,
        parts: list[tuple[list[_Pending], list[Answer]]],
        results: list[PaymentResult],
        *,
        behind: bool,
    ) -> None:
        """Verified chunks, in batch order: their prior deposits in one query, the
        checks, and their accepted payments written in one statement (``behind``: on
        the writer thread, while the next chunk is checked)."""
        if not self._locked:  # once answers are in (see _lock_cards)
            self._lock_cards()
        own, foreign, cards = self._own, [], self.cards
        keys = set()
        for chunk, _ in parts:
            for _, cert, ser in chunk:
                if isinstance(cert, str) or not 0 <= ser <= MAX_SER:
                    continue  # refused before any lookup
                if cert.bank_id == own:
                    card = cards.get(cert.card_number)
                    # a ser above the card's highest deposited one was never deposited
                    # (the audit holds every payment's ser at or below it; the payments
                    # table's key would refuse the deposit should that ever fail)
                    if card is not None and ser <= card.highest_ser:
                        keys.add((cert.card_number, ser))
                else:
                    foreign.append((cert.bank_id, cert.card_number, ser))
        # earlier sessions' records of these payments (this session's own are in
        # self.seen and self.ib_seen); only these chunks' are kept
        self.prior = self.tx.existing_payments(sorted(keys)) if keys else {}
        self.ib_prior = self.tx.existing_interbank(sorted(set(foreign))) if foreign else {}
        for chunk, got in parts:
            self._check_chunk(chunk, got, results)
        if self.accepted:
            rows, self.accepted = self.accepted, []
            self.n_accepted += len(rows)
            self._write(rows, behind=behind)

    def _check_chunk(
        self, chunk: list[_Pending], got: list[Answer], results: list[PaymentResult]
    ) -> None:
        for (pos, cert, ser), answer in zip(chunk, got, strict=True):
            if answer is None:
                label = cert.card_number if isinstance(cert, CardCert) else ""
                results[pos] = _rejected(label, ser, "malformed")
                continue
            if isinstance(cert, str):
                results[pos] = _rejected("", ser, cert)
                continue
            spec, spec_bytes, b, r, valid = answer
            p = _Parsed(cert, ser, spec_bytes, spec, b, r, valid)
            result = self._check(p)
            if result.status == "pending":  # another bank's card: cleared at the end
                self.foreign.append((pos, p))
            results[pos] = result

    # -- the transaction, and the payment rows written behind --------------------------
    @property
    def tx(self) -> UnitOfWork:
        """The deposit's transaction, once the rows being written behind are in: every
        use of it waits for them (a connection runs one statement at a time, and a
        failed write must stop the deposit before anything else is read or written)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()
        return self._tx

    def _write(self, rows: list[PaymentRecord], *, behind: bool) -> None:
        """Accepted payments, in one statement. In a large batch streamed chunk by
        chunk (``behind``) the statement runs on a thread of its own while this one
        checks the next chunk: the database's own work (SQLite's B-tree, PostgreSQL's
        network round trip) runs without the interpreter's lock, and on secp256k1 the
        writes were a quarter of the depositing thread's time. A deposit's last write
        has nothing to run beside it: it runs here, without a hand-over."""
        tx = self.tx  # the previous chunk's rows first
        if self._writer is None or not behind:
            tx.add_payments(rows)
        else:
            self._pending = self._writer.submit(tx.add_payments, rows)

    def _stop_writer(self, *, failed: bool) -> None:
        """Wait for the rows in flight, whatever happened: the transaction is the
        caller's to commit or roll back, never while a statement runs. An error of
        the write is raised here unless the deposit already ``failed`` of another."""
        if self._writer is None:
            return
        pending, self._pending = self._pending, None
        self._writer.shutdown(wait=True)
        self._writer = None
        if pending is not None:
            error = pending.exception()
            if error is not None and not failed:
                raise error

    # -- pass 1: format ---------------------------------------------------------------
    def _list_certs(self) -> None:
        """The batch's CARD-CERTs, hex-decoded once, and the cards those naming our bank
        claim (:func:`claimed_card`), to be locked all at once (:meth:`_lock_cards`).

        Their stored records are read as the stream reaches them (:meth:`_read_certs`),
        not here: a batch of ten thousand cards read them all, 3 KB a card on modp,
        before its first chunk went to the workers (0.2 s with the database in the page
        cache, 1 s without). A claim is only a claim: a certificate that turns out
        forged or foreign locks a card it does not pay from, and is judged in
        :meth:`_cert` like any other."""
        own = self._own
        for card in self.req.batch.cards:
            raw = card.get("cert") if isinstance(card, dict) else None
            if not isinstance(raw, str) or len(raw) > MAX_CERT_HEX or raw in self._unread:
                continue
            try:
                data = bytes.fromhex(raw)
            except ValueError:
                continue
            if len(data) <= 1 + CERT_ID_LEN:
                continue
            cert_id = data[1 : 1 + CERT_ID_LEN]
            self._unread[raw] = (cert_id, data)
            claim = claimed_card(data)
            if claim is not None and claim[0] == own:
                self._claimed.add(claim[1])

    def _read_certs(self, start: int) -> None:
        """The stored records of the certificates of the batch's cards from ``start`` on,
        in one query, before their payments are sent to the workers: :data:`CERT_WINDOW`
        cards and a chunk's worth of payments at least (a batch of 100 cards reads all at
        once).

        Bytes equal to the certificate we signed and stored at issue need neither our
        signature checked again nor, on modp, their keys' subgroup tests (three
        exponentiations a card): both were done before we stored them (:meth:`_cert`
        reads them back). Anything else takes the full path in :meth:`_cert`. The
        records also say whom each certificate was issued to (:meth:`_issued_to`)."""
        window: dict[bytes, list[tuple[str, bytes]]] = {}
        count = 0
        for seen, card in enumerate(islice(self.req.batch.cards, start, None), 1):
            raw = card.get("cert") if isinstance(card, dict) else None
            if isinstance(raw, str) and raw in self._unread:
                cert_id, data = self._unread.pop(raw)
                window.setdefault(cert_id, []).append((raw, data))
            payments = card.get("payments") if isinstance(card, dict) else None
            count += len(payments) if isinstance(payments, list) else 1
            if count >= verify_pool.CHUNK and seen >= CERT_WINDOW:
                break
        if not window:
            return
        found = self.tx.get_certs(sorted(window))
        self.issued.update(found)
        for cert_id, candidates in window.items():
            rec = found.get(cert_id)
            for raw, data in candidates:
                if rec is not None and rec.encoded == data:
                    self._stored[raw] = rec

    def _cert(self, raw: object) -> CardCert | str:
        """Decode and check a CARD-CERT once per batch; a reason code if unusable."""
        if not isinstance(raw, str):
            return "malformed"
        seen = self._by_text.get(raw)  # a card group's payments share its cert string
        if seen is not None:
            return seen
        rec = self._stored.get(raw)
        if rec is not None:  # ours byte for byte (_read_certs compared): no hex decode
            own = self._read_back(rec.encoded)
            if own is not None:
                self._by_text[raw] = own
                if rec.key_powers:
                    self._powers[id(own)] = rec.key_powers
                return own
        try:
            data = bytes.fromhex(raw)
        except ValueError:
            return "malformed"
        found = self._by_text[raw] = self._cert_bytes(data)
        return found

    def _cert_bytes(self, data: bytes) -> CardCert | str:
        """:meth:`_cert` for the certificate's bytes."""
        hit = self._certs.get(data)
        if hit is not None:
            return hit
        cached = self.bank.verified_certs.get(data)
        if cached is not None:
            self._certs[data] = cached
            self._bytes[id(cached)] = data
            return cached
        result: CardCert | str
        try:
            cert = CardCert.decode(data, self.bank.resolve_group)
        except CryptoError:
            result = "malformed"
        else:
            key, unreached = (
                (self.bank.verify_key, False)
                if cert.bank_id == self._own
                else (None, False)
                if self.from_house
                else self.bank.interbank.issuer(cert.bank_id)
            )
            if key is None:  # another bank's, unless a house we could not ask knows it
                result = "clearing_unavailable" if unreached else "unknown_card"
            else:
                try:
                    cert.verify(key)
                    result = cert
                    self.bank.verified_certs.put(data, cert)
                except CryptoError:
                    result = "bad_cert"
        self._certs[data] = result
        if isinstance(result, CardCert):
            self._bytes[id(result)] = data
        return result

    def _read_back(self, data: bytes) -> CardCert | None:
        """A certificate we stored at issue, from its stored bytes (known: no signature
        and no subgroup tests, see :meth:`_read_certs`); None should it not be ours
        after all (the full path then judges it)."""
        seen = self.bank.verified_certs
        cert = seen.get(data)  # read back in an earlier deposit of this process
        if cert is None:
            try:
                cert = CardCert.decode(data, self.bank.resolve_group, known=True)
            except CryptoError:  # pragma: no cover - we stored it after checking it
                return None
            if cert.bank_id == self._own:
                seen.put(data, cert)  # our signature, checked before we stored it
        if cert.bank_id != self._own:  # pragma: no cover - idem
            return None
        self._certs[data] = cert
        self._known.add(id(cert))
        self._bytes[id(cert)] = data
        return cert

    # -- every card of the batch, locked in one sorted query --------------------------------
    def _lock_cards(self) -> None:
        """Taken when the first chunk is settled, once the workers' answers for it are
        in, not before: the first chunks are parsed and verified meanwhile, also while
        another deposit holds the same cards. A batch that is in flight whole (a few
        chunks: a server's deposits from many merchants) takes the locks only once all
        of it is verified. Deposits that share cards queue on their locks, and one
        holding them while its chunks waited in the pool behind the other deposits'
        chunks held up all of them (over HTTP, 8 merchants sharing 100 cards, secure
        group, one run each: the locks held 598 ms in all before, 470 after)."""
        since = time.perf_counter()
        claimed, self._claimed = self._claimed, set()
        self._locked = True
        self.cards = self.tx.lock_cards(sorted(claimed))
        cards = self.cards.values()
        floats = sorted({c.float_account for c in cards if c.float_account})
        # A cheque is paid from the holder's own account, which the card's lock does not
        # cover: a withdrawal to another card of the holder could lower it before the
        # posting, which would then refuse the whole deposit. So it is locked now, and
        # held until the commit. With it, every account the posting can touch, in one
        # sorted query: the posting locks its accounts in id order as every transfer
        # does, and a holder's account held from here while the posting waited for an
        # account that sorts before it (the bank's income, the float of the holder's
        # credit card) deadlocked with a withdrawal or a repayment that holds that one
        # and waits for the holder's (PostgreSQL).
        holders = sorted({c.holder_account for c in cards if c.mode == CardMode.CHEQUE.value})
        if holders:
            posting = {*floats, *holders, *self._other_posting_accounts()}
            self.available = self.tx.get_balances(sorted(posting), lock=True)
        else:
            self.available = self.tx.get_balances(floats)
        for card in self.cards.values():  # what each credit card was granted and has spent
            if card.mode == CardMode.CREDIT.value:
                granted, spent = self.tx.card_totals(card.card_number)
                self.available[card.float_account] = granted - spent
        self.times.add("locks", since)

    def _other_posting_accounts(self) -> set[str]:
        """The accounts besides the cards' that this deposit's posting may credit (those
        that exist yet): the merchant's, its clearing account, the bank's income."""
        from jointpay.service.bank import clearing_account, income_account

        accounts = {income_account(self.bank.currency)}
        if not self.from_house:
            merchant = self.tx.get_merchant(self.req.sid)
            accounts |= {merchant.account_id, clearing_account(merchant.sid)}
        return accounts

    # -- pass 3: the checks, in the contract's order ----------------------------------
    def _check(self, p: _Parsed) -> PaymentResult:
        cert, ser, spec = p.cert, p.ser, p.spec
        label = cert.card_number
        if cert.bank_id != self._own:
            return self._check_foreign(p)
        card = self.cards.get(label)
        if card is None:
            return _rejected(label, ser, "unknown_card")
        if not self._issued_to(cert, card) or spec.card_cert_id != cert.cert_id:
            return _rejected(label, ser, "bad_cert")
        late = self._out_of_time(p)
        if late is not None:
            return late
        # The hot list refuses payments made after the card was listed; those made
        # before it (the merchant could not have known) are honoured.
        if (
            card.status is _BLACKLISTED
            and card.blacklisted_at is not None
            and spec.time > card.blacklisted_at
        ):
            return _rejected(label, ser, "blacklisted")
        if not p.valid:
            return _rejected(label, ser, "bad_signature")
        if spec.sid != self.req.sid or spec.bank_id != self.req.bank_id:
            return _rejected(label, ser, "wrong_merchant")
        key = (card.card_number, ser)
        earlier = self.seen.get(key)
        if earlier is None and key in self.prior:
            earlier = self.prior[key].spec
            if (
                self.from_house
                and earlier == p.spec_bytes
                and self.prior[key].deposit_id == self.deposit_id
            ):  # the house asks again (its answer was lost): the same answer
                self.seen[key] = earlier
                return PaymentResult(card.card_number, ser, "accepted", None, spec.amount)
        if earlier is not None:
            if earlier != p.spec_bytes:
                self._breach(
                    card,
                    "double_spend",
                    {
                        "ser": ser,
                        "first_spec": earlier.hex(),
                        "second_spec": p.spec_bytes.hex(),
                        "second_b": p.b.hex(),
                        "second_r": p.r.hex(),
                        "cert": cert.encode().hex(),
                    },
                )
            return _rejected(label, ser, "duplicate")
        if spec.time < self._oldest:
            return _rejected(label, ser, "stale")
        if spec.currency != card.currency or (
            spec.conversion is not None and not self._rate_ok(spec)
        ):
            return _rejected(label, ser, "currency_mismatch")
        cheque = card.mode == _CHEQUE
        credit = card.mode == _CREDIT
        source = card.holder_account if cheque else card.float_account
        # cash: the card float; credit: the C_balance granted less the payments deposited
        # (the credit account itself goes below zero: what the holder owes); cheque: the
        # holder's own account.
        left = self.available.get(source, 0) - self.debits.get(source, 0)
        if spec.amount > left:
            if cheque:  # a cheque the holder's account cannot cover bounces
                self._bounce(card, ser, spec, left)
                return _rejected(label, ser, "insufficient_funds")
            self._breach(card, "overspend", {"ser": ser, "amount": spec.amount, "available": left})
            return _rejected(label, ser, "insufficient_balance")
        self.debits[source] = self.debits.get(source, 0) + spec.amount
        policy = self.bank.policy
        fee = policy.payment_fee
        if credit:
            fee += policy.basis_points(spec.amount, policy.credit_fee_bp)
        fee = 0 if self.from_house else min(fee, spec.amount)  # the acquirer charges its own
        if credit and policy.credit_clearing_delay and not self.from_house:
            self.clearing_credit += spec.amount - fee  # paid out by `bank settle`, later
        else:
            self.merchant_credit += spec.amount - fee
        self.fees += fee
        self.seen[key] = p.spec_bytes
        if ser > self.top_ser.get(card.card_number, -1):
            self.top_ser[card.card_number] = ser
        self.accepted.append(
            PaymentRecord(
                card.card_number,
                ser,
                cert.cert_id,
                spec.sid,
                spec.amount,
                spec.currency,
                p.spec_bytes,
                p.b,
                p.r,
                self.deposit_id,
                self.now,
                fee,
            )
        )
        return PaymentResult(card.card_number, ser, "accepted", None, spec.amount)

    def _out_of_time(self, p: _Parsed) -> PaymentResult | None:
        """A payment dated in the future, or outside its CARD-CERT's validity."""
        at, cert = p.spec.time, p.cert
        if at > self._latest:
            return _rejected(cert.card_number, p.ser, "future_time")
        if not cert.valid_at(at):
            return _rejected(cert.card_number, p.ser, "expired_cert")
        return None

    def _check_foreign(self, p: _Parsed) -> PaymentResult:
        """Another bank's card at our merchant: our own checks, then its clearing."""
        bank, cert, ser, spec = self.bank, p.cert, p.ser, p.spec
        label = cert.card_number
        if spec.card_cert_id != cert.cert_id:
            return _rejected(label, ser, "bad_cert")
        late = self._out_of_time(p)
        if late is not None:
            return late
        if not p.valid:
            return _rejected(label, ser, "bad_signature")
        if spec.sid != self.req.sid or spec.bank_id != self._own:
            return _rejected(label, ser, "wrong_merchant")
        key = (cert.bank_id, cert.card_number, ser)
        earlier = self.ib_seen.get(key)
        if earlier is None and key in self.ib_prior:
            earlier = self.ib_prior[key].spec
        if earlier == p.spec_bytes:  # the same payment again
            return _rejected(label, ser, "duplicate")
        # The same ser over another spec is a clone's: it goes to its issuer all the
        # same, which refuses it (duplicate) and keeps the evidence (double_spend).
        if spec.time < self._oldest:
            return _rejected(label, ser, "stale")
        if (
            spec.currency != cert.currency
            or spec.currency != bank.currency
            or not self._rate_ok(spec)
        ):
            return _rejected(label, ser, "currency_mismatch")
        self.ib_seen.setdefault(key, p.spec_bytes)
        return PaymentResult(label, ser, "pending", None, spec.amount)

    def _clear_foreign(self, results: list[PaymentResult]) -> None:
        """Clear the foreign payments through the houses; book what their issuers took."""
        candidates = [
            Candidate(
                p.cert.encode(),
                p.cert.bank_id,
                p.cert.card_number,
                p.ser,
                p.spec_bytes,
                p.b,
                p.r,
                p.spec.amount,
            )
            for _, p in self.foreign
        ]
        if self.plan:
            self.planned = candidates
            return
        cleared = self.cleared if self.cleared is not None else ClearedFirst([], [])
        answers = cleared.answers(candidates)  # one not cleared first: clearing_unavailable
        for (pos, p), answer in zip(self.foreign, answers, strict=True):
            label, amount = p.cert.card_number, p.spec.amount
            if answer.status != "accepted":
                results[pos] = _rejected(label, p.ser, answer.reason or "rejected")
                continue
            fee = min(self.bank.policy.payment_fee, amount)
            self.merchant_credit += amount - fee
            self.fees += fee
            ch = answer.clearing_house
            self.ib_debits[ch] = self.ib_debits.get(ch, 0) + amount
            self.ib_records.append(
                InterbankRecord(
                    p.cert.bank_id,
                    label,
                    p.ser,
                    self._own,
                    ch,
                    p.spec.sid,
                    amount,
                    p.spec.currency,
                    p.spec_bytes,
                    self.deposit_id,
                    self.now,
                    fee,
                )
            )
            results[pos] = PaymentResult(label, p.ser, "accepted", None, amount)

    def _rate_ok(self, spec: PaymentSpec) -> bool:
        """A converted payment: the terminal's rate is the bank's (within tolerance) at
        the payment's time, and the amount is the original converted at that rate."""
        c = spec.conversion
        if c is None:
            return True
        if self._rates is None:
            self._rates = load_table(self.tx.config_get(RATES_KEY))
        ref = rate_in(self._rates, c.orig_currency, spec.time)
        if c.orig_currency == spec.currency or ref is None:
            return False
        if abs(c.rate_micro - ref) * RATE_SCALE > ref * self.bank.policy.rate_tolerance_ppm:
            return False
        return spec.amount == convert(c.orig_amount, c.orig_currency, c.rate_micro, spec.currency)

    def _issued_to(self, cert: CardCert, card: CardRecord) -> bool:
        """Whether this bank issued exactly this CARD-CERT to this card (once per cert)."""
        key = (cert.cert_id, card.card_number)
        if key not in self._issued_ok:
            rec = self.issued.get(cert.cert_id)
            self._issued_ok[key] = (
                rec is not None
                and rec.card_number == card.card_number
                and rec.encoded == (self._bytes.get(id(cert)) or cert.encode())
            )
        return self._issued_ok[key]

    def _bounce(self, card: CardRecord, ser: int, spec: PaymentSpec, available: int) -> None:
        """A bounced cheque, recorded on the holder's account (``bank alerts``)."""
        self.tx.add_alert(
            card.card_number,
            "bounced_cheque",
            f"a cheque of {format_amount(spec.amount, spec.currency)} {spec.currency} "
            f"bounced on {card.holder_account}",
            canonical_json(
                {
                    "holder_account": card.holder_account,
                    "ser": ser,
                    "amount": spec.amount,
                    "available": available,
                    "sid": spec.sid,
                    "deposit": self.deposit_id,
                }
            ).decode(),
            self.now,
        )

    def _breach(self, card: CardRecord, kind: str, evidence: dict[str, Any]) -> None:
        """Step 670: keep the evidence, raise an alert, hot-list the card at once."""
        self.tx.add_alert(
            card.card_number, kind, _BREACH_TEXT[kind], canonical_json(evidence).decode(), self.now
        )
        entry = self.bank.hotlist_card(self.tx, card, kind, self.now)
        if card.status is not _BLACKLISTED:  # listed before: payments since stay refused
            self.cards[card.card_number] = replace(
                card, status=CardStatus.BLACKLISTED, blacklisted_at=entry.added_at
            )

    # -- booking (step 690) -----------------------------------------------------------
    def _book(self) -> None:
        """One compound double-entry posting for the whole session."""
        from jointpay.service.bank import income_account

        if not self.debits and not self.ib_records:
            return  # nothing new (a house's retry finds its payments booked already)
        bank, tx = self.bank, self.tx
        legs = [Leg(acc, -amount) for acc, amount in sorted(self.debits.items())]
        legs += [
            Leg(bank.interbank.house_account(tx, ch, self.now), -amount)
            for ch, amount in sorted(self.ib_debits.items())
        ]
        if self.ib_records:
            tx.add_interbank(self.ib_records)
        if self.from_house:  # the issuer owes the house what its cards paid
            legs.append(
                Leg(
                    bank.interbank.house_account(tx, self.from_house, self.now),
                    self.merchant_credit,
                )
            )
            transfer_id = f"interbank:{self.from_house}:{secrets.token_hex(12)}"
        else:
            merchant = tx.get_merchant(self.req.sid)
            if self.merchant_credit or not self.clearing_credit:
                legs.append(Leg(merchant.account_id, self.merchant_credit))
            if self.clearing_credit:
                legs.append(Leg(self._clearing_account(merchant.sid), self.clearing_credit))
            transfer_id = f"deposit:{self.deposit_id}"
        if self.fees:
            legs.append(Leg(income_account(bank.currency), self.fees))
        try:
            tx.post(
                Transfer(
                    transfer_id,
                    "deposit",
                    bank.currency,
                    tuple(legs),
                    f"{self.n_accepted + len(self.ib_records)} payments",
                    self.now,
                )
            )
        except InsufficientFunds as exc:  # pragma: no cover - checked per payment above
            raise Refused("insufficient_balance", str(exc)) from exc
        tx.raise_highest_sers(
            {n: top for n, top in self.top_ser.items() if top > self.cards[n].highest_ser}
        )

    def _clearing_account(self, sid: str) -> str:
        """The merchant's clearing account (credit payments waiting), made on first use."""
        from jointpay.service.bank import clearing_account

        acc = clearing_account(sid)
        if not self.tx.get_accounts([acc]):
            self.tx.create_account(
                Account(acc, AccountKind.MERCHANT, self.bank.currency, sid, 0, self.now)
            )
        return acc


class ClearedFirst:
    """The houses' answers for a deposit's other banks' payments, obtained before the
    deposit's transaction opened (:meth:`Bank._clear_first`), by the payment itself:
    issuer, card, ser and spec (a clone's second spend of a ser is another payment)."""

    def __init__(self, candidates: list[Candidate], answers: list[Cleared]) -> None:
        self._by: dict[tuple[str, str, int, bytes], Cleared] = {}
        for c, answer in zip(candidates, answers, strict=True):
            self._by.setdefault((c.issuer, c.card_number, c.ser, c.spec), answer)

    def answers(self, candidates: list[Candidate]) -> list[Cleared]:
        """One answer per candidate; one that was not asked (judged otherwise before the
        transaction: a rate changed in between) is clearing_unavailable, which the
        terminal sends again with its next deposit."""
        missing = Cleared("rejected", "clearing_unavailable", "")
        return [self._by.get((c.issuer, c.card_number, c.ser, c.spec), missing) for c in candidates]


def _rejected(card: str, ser: int | None, reason: str) -> PaymentResult:
    return PaymentResult(card, ser, "rejected", reason, None)


class VerifiedCerts:
    """CARD-CERTs this bank has decoded and verified, by their exact bytes.

    A shop's batch carries one CARD-CERT per customer, and the same cards come back
    batch after batch; decoding a certificate and checking the bank's Ed25519
    signature on it cost more than the payment's own Schnorr verification. The
    outcome depends only on the bytes (and the bank's key, fixed for the bank), so
    a certificate verified once is taken from here afterwards. Validity *periods*
    are still judged per payment. Bounded (least recently used out) and safe to
    share between the server's threads. Only successes are kept.
    """

    def __init__(self, size: int = 65_536) -> None:
        self._items: OrderedDict[bytes, CardCert] = OrderedDict()
        self._lock = threading.Lock()
        self.size = size

    def get(self, data: bytes) -> CardCert | None:
        with self._lock:
            cert = self._items.get(data)
            if cert is not None:
                self._items.move_to_end(data)
            return cert

    def put(self, data: bytes, cert: CardCert) -> None:
        with self._lock:
            self._items[data] = cert
            self._items.move_to_end(data)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
