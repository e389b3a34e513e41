"""PAYMENT-CERT parsing and verification on the machine's other cores, for large deposits.

The deposit path submits chunks of payments as the batch carries them (hex strings,
unchecked) and goes on reading the batch; worker processes parse each payment
(:func:`parse_and_verify`: its spec, ``b`` and ``r``, every rule of CONTRACT section
2) and verify it, and return what the bank's checks need: the spec's fields, its
bytes, ``b`` and ``r``, and the strict per-payment rule's answer, computed by
:func:`verify_jobs` (strict :func:`jointpay.crypto.schnorr.verify`, or the exact batch
test on a secure modp group and for secp256k1 cards that repeat). Small batches, and
machines with one core, do the same in process.

The pool is created on first use (or by :meth:`Verifier.start`, as a server does) and
closed with :meth:`Verifier.close`. It starts by ``fork`` when the process runs no
other thread (cheap, and safe then), and by ``forkserver`` otherwise (an HTTP
server's thread pool). Its workers die with the process that started them.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import suppress
from typing import Final, Protocol, TypeVar

from jointpay.crypto.batch import (
    Item,
    secure_cofactor,
    verify_batch,
    verify_batch_secp256k1,
    verify_strict,
    verify_with_card_tables,
)
from jointpay.crypto.errors import CryptoError
from jointpay.crypto.group import (
    Group,
    ModpGroup,
    ModpParams,
    Secp256k1Group,
    get_group,
    modp_group,
)
from jointpay.crypto.schnorr import PaymentCert
from jointpay.protocol.spec import PaymentSpec
from jointpay.service import gcpause

Job = tuple[str, ModpParams | None, bytes, int, bytes, int, int, bytes, bool]
"""(suite, modp parameters or None, enc(Y), ser, spec, b, r, hint a' or b"", known):
``known`` says Y comes from a CARD-CERT the bank issued and stored (validated then)."""

JobHead = tuple[str, ModpParams | None, bytes | None, bool, bytes]
"""What the payments under one CARD-CERT share: suite, modp parameters or None, enc(Y)
(None: the certificate is unusable), ``known`` as in :data:`Job`, and the comb powers
the bank stored with the certificate (:meth:`ModpGroup.key_powers`; b"" if none)."""

RawJob = tuple[
    str, ModpParams | None, bytes | None, bool, bytes, int, object, object, object, object
]
"""(:data:`JobHead`, then ser, spec, b, r, hint): a payment as the batch carries it, under
a CARD-CERT the bank decoded and checked. enc(Y) None: the certificate is unusable (its
reason code is the answer), and the payment is only parsed, since a malformed payment is
reported as such first."""

Answer = tuple[PaymentSpec, bytes, bytes, bytes, bool] | None
"""(spec, spec bytes, b, r, strict answer); None for a malformed payment."""

_R = TypeVar("_R")
_J = TypeVar("_J")


class Task(Protocol[_J, _R]):
    """What :meth:`Verifier.submit` runs: a module-level function (it is pickled by
    name for the pool) of a chunk's jobs and the deposit's size."""

    def __call__(self, jobs: list[_J], /, *, deposit: int | None = ...) -> list[_R]: ...


CHUNK: Final = 512
MIN_POOL_BATCH: Final = 2048
SERVER_MIN_POOL_BATCH: Final = 256
"""In a server, deposits run side by side in threads that share one interpreter lock:
from this size their verification goes to the pool (measured with 8 merchants of 1,250
payments on PostgreSQL: secp256k1 from 60 % to 82 % of the in-process rate, the secure
modp group from 47 % to 55 %)."""
CARD_TABLE_MIN: Final = 16
"""A card with this many payments in one chunk gets a window table for its Y (modp)."""
SECP_BATCH_MIN: Final = 3
"""A secp256k1 card with this many hinted payments in one chunk joins the batch test:
its one ``r·G + b·Y`` then costs less than the verifications it replaces (measured per
payment against strict verification: 1.1 times as fast at 2 payments a card, 1.2 to
1.3 at 3, 1.6 to 2.2 at 8 and more)."""


def modp_params(group: object) -> ModpParams | None:
    """The parameters of a modp group (what a worker needs to rebuild it); None for
    secp256k1."""
    return group.params if isinstance(group, ModpGroup) else None


def job_for(
    group: object, y_enc: bytes, cert: PaymentCert, hint: bytes = b"", known: bool = False
) -> Job:
    params = modp_params(group)
    suite = "modp-2048-256" if params is not None else "secp256k1"
    return (suite, params, y_enc, cert.ser, cert.spec, cert.b, cert.r, hint, known)


def verify_jobs(jobs: Sequence[Job], *, deposit: int | None = None) -> list[bool]:
    """Each job's answer under the strict rule (runs in a worker or in process).

    modp jobs on a secure group with the terminal's hints go through the exact batch
    test (:mod:`jointpay.crypto.batch`); on other modp groups a card with many
    payments gets a window table for its Y. secp256k1 cards with several hinted
    payments in the chunk go through the batch test too; the rest are verified one by
    one.

    ``deposit``: the number of payments in the whole deposit these jobs are a chunk
    of (:meth:`Verifier.submit` passes it); the batch test's exponents widen with it
    so that the deposit, not each chunk, meets CONTRACT section 2's 2^-64
    (:func:`jointpay.crypto.batch.z_widths`). Left out: these jobs are the deposit.
    """
    return _verify_items([(job[1], _item(job)) for job in jobs], deposit)


def _verify_items(
    entries: Sequence[tuple[ModpParams | None, Item]], deposit: int | None = None
) -> list[bool]:
    """:func:`verify_jobs` for payments already read: (modp parameters or None for
    secp256k1, the payment). Each batch call (one for secp256k1, one per secure modp
    group) covers its own payments of the chunk, out of ``deposit`` in all."""
    n = max(len(entries), deposit or 0)
    out: list[bool | None] = [None] * len(entries)
    modp: dict[ModpParams, list[int]] = {}
    secp: list[int] = []
    for i, (params, _) in enumerate(entries):
        if params is not None:
            modp.setdefault(params, []).append(i)
        else:
            secp.append(i)
    if secp:
        group = get_group("secp256k1")
        if not isinstance(group, Secp256k1Group):  # pragma: no cover - the registry's own
            raise TypeError("the secp256k1 suite is not a Secp256k1Group")
        items = {i: entries[i][1] for i in secp}
        hinted: dict[bytes, int] = {}
        for i in secp:
            if items[i].hint:
                hinted[items[i].y_enc] = hinted.get(items[i].y_enc, 0) + 1
        batch = [i for i in secp if hinted.get(items[i].y_enc, 0) >= SECP_BATCH_MIN]
        answers = verify_batch_secp256k1(group, [items[i] for i in batch], deposit=n)
        for i, ok in zip(batch, answers, strict=True):
            out[i] = ok
        for i in secp:
            if out[i] is None:
                out[i] = verify_strict(group, items[i])
    for params, idx in modp.items():
        modp_grp = modp_group(params)
        modp_items = [entries[i][1] for i in idx]
        if secure_cofactor(params) is not None:
            answers = verify_batch(modp_grp, modp_items, deposit=n)
        else:
            answers = verify_with_card_tables(modp_grp, modp_items, CARD_TABLE_MIN)
        for i, ok in zip(idx, answers, strict=True):
            out[i] = ok
    return [bool(v) for v in out]


def parse_and_verify(jobs: Sequence[RawJob], *, deposit: int | None = None) -> list[Answer]:
    """Each payment parsed, then verified (:func:`verify_jobs`, ``deposit`` as there):
    runs in a worker or in process. The same rules, in the same order, as a payment
    read on its own: ``spec``, ``b`` and ``r`` must be hex strings, the spec must
    decode, then ``b`` and ``r`` must be 32-byte scalars in range; a hint that is no
    hex string of at most 1,024 characters is dropped (it is untrusted and optional)."""
    with gcpause.paused():
        return _parse_and_verify(jobs, deposit)


def _parse_and_verify(jobs: Sequence[RawJob], deposit: int | None) -> list[Answer]:
    parsed: list[tuple[PaymentSpec, bytes, bytes, bytes] | None] = []
    todo: list[tuple[ModpParams | None, Item]] = []
    where: list[int] = []
    for suite, params, y_enc, known, powers, ser, spec, b, r, hint in jobs:
        try:
            if type(spec) is not str or type(b) is not str or type(r) is not str:
                raise ValueError("spec, b and r are hex strings")
            spec_bytes, b_bytes, r_bytes = bytes.fromhex(spec), bytes.fromhex(b), bytes.fromhex(r)
            s = PaymentSpec.decode(spec_bytes)
            if y_enc is None:  # the certificate's reason code decides
                parsed.append((s, spec_bytes, b_bytes, r_bytes))
                continue
            group = _group(suite, params)
            cert = PaymentCert.parse(group, ser, spec_bytes, b_bytes, r_bytes)
        except (ValueError, CryptoError):
            parsed.append(None)
            continue
        hint_bytes = b""
        if isinstance(hint, str) and len(hint) <= 1024:  # untrusted; unusable is empty
            with suppress(ValueError):
                hint_bytes = bytes.fromhex(hint)
        where.append(len(parsed))
        todo.append((modp_params(group), Item(y_enc, cert, hint_bytes, known, powers)))
        parsed.append((s, spec_bytes, b_bytes, r_bytes))
    valid = dict(zip(where, _verify_items(todo, max(len(jobs), deposit or 0)), strict=True))
    return [None if p is None else (*p, valid.get(i, False)) for i, p in enumerate(parsed)]


def _group(suite: str, params: ModpParams | None) -> Group:
    return modp_group(params) if params is not None else get_group(suite)


def _item(job: Job) -> Item:
    _, _, y_enc, ser, spec, b, r, hint, known = job
    return Item(y_enc, PaymentCert(ser, spec, b, r), hint, known)


_PR_SET_PDEATHSIG: Final = 1


def _start_worker(parent: int | None, groups: Sequence[ModpParams]) -> None:
    """A worker's first acts: die with its parent, then build the modp groups.

    A worker started by ``fork`` holds copies of the parent's open files, among them
    its database connections. Were it to outlive a bank killed mid-deposit, the
    database would keep that deposit's transaction, and its row locks on the cards,
    open for as long as the orphan lives. So on Linux the kernel kills the worker
    when the process that started it dies (``PR_SET_PDEATHSIG``); ``parent`` is that
    process for ``fork`` (None for ``forkserver``, whose server dies with the bank).
    """
    gcpause.freeze_inherited()
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if parent is not None and os.getppid() != parent:
            os._exit(0)  # the parent died before the signal was set up
    _build_groups(groups)


def _build_groups(groups: Sequence[ModpParams]) -> None:
    """Build (and cache) the modp groups a worker will verify in: parameters
    validated, the secure-cofactor test made, and on a group verified payment by
    payment the comb of ``g`` that every payment's ``g^r`` rides on. Not ``g``'s
    window table: the batch test needs one ``g^e`` a chunk, and the cards' combs
    carry ``g^r``, so only strict verification (a payment without a usable hint, a
    card without stored powers) and a card with many payments in a chunk (its own
    window table, beside ``g``'s) use it, and a worker builds it on first use (28 ms,
    which a deposit's first chunk used to wait for in the parent before the fork)."""
    for params in groups:
        group = modp_group(params)
        if secure_cofactor(params) is None:  # a primality test of h, cached
            group.g_comb  # noqa: B018 - payment by payment there: g^r on the key's comb


def _ready() -> bool:
    return True


class Verifier:
    """Runs chunks of jobs (parsing and verification), in a process pool when the
    batch is large enough."""

    def __init__(
        self,
        workers: int | None = None,
        min_batch: int = MIN_POOL_BATCH,
        groups: Sequence[ModpParams] = (),
    ) -> None:
        self.min_batch = min_batch
        """Smaller batches are verified in the calling thread."""
        cores = os.cpu_count() or 1
        # as many workers as cores: the parent parses and books while they verify, and
        # is idle much of the time (measured on 2 cores: +33 % modp, +15 % secp256k1
        # over cores - 1)
        self.workers = workers if workers is not None else (cores if cores > 1 else 0)
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._warm: tuple[ModpParams, ...] = tuple(groups)
        """The modp groups every worker verifies in, built before it takes work
        (:func:`_build_groups`): by the parent before a ``fork`` (its children inherit
        the secure-cofactor test and ``g``'s comb; each worker used to redo the test,
        0.17 s, before its first chunk), by each worker when started by
        ``forkserver``."""

    def start(self, groups: Sequence[ModpParams] = ()) -> None:
        """Start every worker now, each with these modp groups (default: the ones
        given at construction) built (:func:`_build_groups`),
        instead of on the first large deposit.

        A server calls this before it takes requests: a worker started by
        ``forkserver`` inherits nothing and would otherwise validate the group's
        primes and build its tables while the first deposits wait. Call it before
        the first deposit: a pool already running keeps the workers it has.
        """
        if self.workers == 0:
            return
        self._warm = tuple(groups) or self._warm
        pool = self._get_pool()
        # one task per worker: the pool starts a process for each while none is idle
        for done in [pool.submit(_ready) for _ in range(self.workers)]:
            done.result()

    def submit(
        self, task: Task[_J, _R], jobs: Sequence[_J], *, batch_size: int
    ) -> Callable[[], list[_R]]:
        """Start ``task(jobs, deposit=batch_size)`` (:func:`parse_and_verify` or
        :func:`verify_jobs`, a module-level function); call the result to wait for its
        answers. ``batch_size`` is the number of payments in the whole deposit these
        jobs are a chunk of: it decides where they run, and the width of the batch
        test's exponents (:func:`jointpay.crypto.batch.z_widths`)."""
        if self.workers == 0 or batch_size < self.min_batch:
            done = task(list(jobs), deposit=batch_size)
            return lambda: done
        pool = self._get_pool()
        try:
            future: Future[list[_R]] = pool.submit(task, list(jobs), deposit=batch_size)
        except BrokenProcessPool:
            # A worker died (the OOM killer, a crash in native code): the pool refuses
            # all work from then on. The deposit it died under failed, rolled back; a
            # new pool takes this one and the next.
            self._drop(pool)
            future = self._get_pool().submit(task, list(jobs), deposit=batch_size)
        return future.result

    def _drop(self, pool: ProcessPoolExecutor) -> None:
        """Forget a broken pool (once, should several threads find it broken)."""
        with self._lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)

    def _get_pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                method = "fork" if threading.active_count() == 1 else "forkserver"
                if method == "fork":
                    _build_groups(self._warm)  # once, here: the workers inherit them
                self._pool = ProcessPoolExecutor(
                    max_workers=self.workers,
                    mp_context=multiprocessing.get_context(method),
                    initializer=_start_worker,
                    initargs=(os.getpid() if method == "fork" else None, self._warm),
                )
            return self._pool

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
