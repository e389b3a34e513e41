"""The process-pool verification path accepts exactly what strict verification does."""

from __future__ import annotations

import gc
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from jointpay.crypto.certs import SigningKey
from jointpay.crypto.group import ModpGroup, get_group
from jointpay.crypto.schnorr import PaymentCert, SecretScalar, sign
from jointpay.home import Home
from jointpay.protocol.deposit import make_deposit
from jointpay.service import verify_pool
from jointpay.service.deposit import DepositRun
from jointpay.service.verify_pool import Verifier, job_for, verify_jobs


@pytest.mark.parametrize("suite", ["secp256k1", "modp-2048-256"])
def test_pool_equals_in_process_on_adversarial_jobs(suite: str) -> None:
    group = get_group(suite)
    x = SecretScalar(group.random_scalar())
    y = group.public_key(x.reveal())
    jobs = []
    for i in range(12):
        cert, _ = sign(group, x, y, i, b"spec %d" % i)
        jobs.append(job_for(group, y.encoded, cert))
        jobs.append(job_for(group, y.encoded, PaymentCert(i, cert.spec, cert.b, cert.r ^ 1)))
        jobs.append(job_for(group, y.encoded, PaymentCert(i + 1, cert.spec, cert.b, cert.r)))
        jobs.append(job_for(group, y.encoded, PaymentCert(i, cert.spec + b"!", cert.b, cert.r)))
    jobs.append((suite, jobs[0][1], b"\x00" * len(y.encoded), 0, b"", 1, 1, b"", False))
    verifier = Verifier(workers=1)
    try:
        pooled = verifier.submit(verify_jobs, jobs, batch_size=10**6)()
    finally:
        verifier.close()
    assert pooled == verify_jobs(jobs)
    assert pooled.count(True) == 12


def test_deposit_through_the_pool_matches_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    receipts = []
    for label, min_batch in (("pool", 1), ("inline", 10**9)):
        monkeypatch.setattr(verify_pool, "CHUNK", 7)
        h, batch = _one_card_batch(tmp_path / label, "secp256k1", 30)
        pays = batch["cards"][0]["payments"]
        for k in (3, 11, 20):  # tampered r: bad_signature whichever path verifies
            r = bytearray.fromhex(pays[k]["r"])
            r[-1] ^= 1
            pays[k]["r"] = r.hex()
        pays.append(json.loads(json.dumps(pays[0])))  # a duplicate in the same batch
        with h.bank() as bank:
            bank.verifier.workers = 1
            bank.verifier.min_batch = min_batch
            r = h.deposit("Shop", bank, batch)
            assert (bank.verifier._pool is not None) == (label == "pool")
            receipts.append([(x["ser"], x["status"], x["reason"]) for x in r["results"]])
            assert bank.audit().ok
    assert receipts[0] == receipts[1]
    reasons = [x[2] for x in receipts[0]]
    assert reasons.count("bad_signature") == 3
    assert reasons.count("duplicate") == 1


def test_a_modp_bank_keeps_comb_powers_and_deposits_the_same_without_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each CARD-CERT a modp bank stores carries its key's comb powers; a deposit
    verifies its payments with them (the pool runs the same code), and gives every
    payment the answer it gets when they are gone (a certificate stored before
    migration 0005)."""
    from jointpay.crypto.certs import CardCert
    from jointpay.crypto.group import Comb
    from jointpay.storage.sql import SqlStore

    monkeypatch.setattr(verify_pool, "CHUNK", 5)
    combed: list[int] = []  # by Comb.pow, or by pow_with once the group has g's comb
    comb_pow, comb_pow_with = Comb.pow, Comb.pow_with
    monkeypatch.setattr(Comb, "pow", lambda self, e: combed.append(e) or comb_pow(self, e))
    monkeypatch.setattr(
        Comb, "pow_with", lambda self, e, g, r: combed.append(e) or comb_pow_with(self, e, g, r)
    )
    receipts = []
    for label in ("powers", "none", "backfilled"):
        h, batch = _one_card_batch(tmp_path / label, "modp-2048-256", 12)
        pays = batch["cards"][0]["payments"]
        for k in (2, 9):
            r = bytearray.fromhex(pays[k]["r"])
            r[-1] ^= 1
            pays[k]["r"] = r.hex()
        card = CardCert.decode(bytes.fromhex(batch["cards"][0]["cert"])).card_number
        with h.bank() as bank:
            assert isinstance(bank.store, SqlStore)
            with bank.store.transaction() as tx:
                stored = tx.certs_for(card)
                assert stored
                assert all(len(c.key_powers or b"") == 7 * 256 for c in stored)
                if label != "powers":  # certificates stored before migration 0005
                    tx.c.exec_driver_sql("UPDATE certs SET key_powers = NULL")
            if label == "backfilled":  # a page at a time: one certificate a transaction
                assert bank.backfill_key_powers(batch=1) == len(stored)
                assert bank.backfill_key_powers() == 0  # each once
                with bank.store.transaction() as tx:
                    assert [c.key_powers for c in tx.certs_for(card)] == [
                        c.key_powers for c in stored
                    ]
            bank.verifier.workers = 0  # in process, where the comb's calls are counted
            combed.clear()
            r = h.deposit("Shop", bank, batch)
            receipts.append([(x["ser"], x["status"], x["reason"]) for x in r["results"]])
            assert len(combed) == (0 if label == "none" else 12)
            assert bank.audit().ok
    assert receipts[0] == receipts[1] == receipts[2]
    assert [x[2] for x in receipts[0]].count("bad_signature") == 2
    assert [x[1] for x in receipts[0]].count("accepted") == 10
    h, batch = _one_card_batch(tmp_path / "secp", "secp256k1", 0)
    with h.bank() as bank:
        with bank.store.transaction() as tx:
            assert all(c.key_powers is None for c in tx.certs_for(bank_card(tx)))
        assert bank.backfill_key_powers() == 0  # nothing to do on secp256k1
        with pytest.raises(ValueError, match="at least one"):
            bank.backfill_key_powers(batch=0)


def bank_card(tx: Any) -> str:
    """The one card of a bank made by :func:`_one_card_batch`."""
    [card] = tx.list_cards()
    return str(card.card_number)


def test_the_collector_is_paused_for_the_deposit_and_back_on_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deposit's objects form no cycles; the collector would only walk the heap
    (gcpause). It is off while the payments are checked, and on again afterwards."""
    seen: list[bool] = []
    run = DepositRun.run

    def spy(self: DepositRun) -> list[Any]:
        seen.append(gc.isenabled())
        return run(self)

    monkeypatch.setattr(DepositRun, "run", spy)
    h, batch = _one_card_batch(tmp_path, "secp256k1", 3)
    assert gc.isenabled()
    with h.bank() as bank:
        receipt = h.deposit("Shop", bank, batch)
    assert receipt["accepted"] == 3
    assert seen == [False]
    assert gc.isenabled()


@pytest.mark.parametrize(
    ("suite", "group", "form"),
    [("secp256k1", None, (65, 4)), ("modp-2048-256", "jointpay-secure-2048-256", (257, 1))],
)
def test_terminals_hand_over_the_hint_the_bank_checks_cheapest_and_it_batches_them(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    suite: str,
    group: str | None,
    form: tuple[int, int],
) -> None:
    """secp256k1: the point uncompressed (no square root to read it); the secure modp
    group: a square root of a' (a residue by construction, no Legendre symbol). With
    the terminal's hints right, no payment of a card that repeats is verified one by
    one."""
    from jointpay.crypto import batch as batch_mod

    h, batch = _one_card_batch(tmp_path, suite, 12, group)
    hints = [bytes.fromhex(p["hint"]) for p in batch["cards"][0]["payments"]]
    assert {(len(x), x[0]) for x in hints} == {form}
    strict: list[object] = []
    real = batch_mod.verify_strict
    monkeypatch.setattr(batch_mod, "verify_strict", lambda g, it: strict.append(it) or real(g, it))
    with h.bank() as bank:
        assert h.deposit("Shop", bank, batch)["accepted"] == 12
    assert strict == []


def test_a_bank_process_reads_each_of_its_certificates_back_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server sees the same cards night after night: a CARD-CERT read back from the
    bank's own store is decoded by its first deposit only."""
    from jointpay.crypto.certs import CardCert

    h, batch = _one_card_batch(tmp_path, "secp256k1", 4)
    decoded: list[bytes] = []
    real = CardCert.decode.__func__  # type: ignore[attr-defined]

    def spy(cls: type[CardCert], data: bytes, *args: Any, **kwargs: Any) -> CardCert:
        decoded.append(data)
        return real(cls, data, *args, **kwargs)  # type: ignore[no-any-return]

    monkeypatch.setattr(CardCert, "decode", classmethod(spy))
    with h.bank() as bank:
        assert h.deposit("Shop", bank, batch)["accepted"] == 4
        assert len(decoded) == 1
        again = h.deposit("Shop", bank, batch)
    assert {r["reason"] for r in again["results"]} == {"duplicate"}
    assert len(decoded) == 1


# Each defect of a payment's fields, and the reason code CONTRACT's rules give it: a
# payment that does not parse is malformed before anything else is said of it.
_DEFECTS: list[tuple[str, str | None]] = [
    ("valid", None),
    ("ser_bool", "malformed"),
    ("ser_negative", "malformed"),
    ("ser_2_64", "malformed"),
    ("spec_not_str", "malformed"),
    ("spec_not_hex", "malformed"),
    ("spec_undecodable", "malformed"),
    ("b_short", "malformed"),
    ("b_not_below_n", "malformed"),
    ("r_zero", "malformed"),
    ("hint_not_hex", None),  # the hint is untrusted and optional: verified strictly
    ("hint_missing", None),
    ("hint_too_long", None),
    ("r_changed", "bad_signature"),
    ("not_an_object", "malformed"),
    ("valid", None),
]


def _damage(p: dict[str, Any], kind: str) -> object:
    p = dict(p)
    changes: dict[str, object] = {
        "ser_bool": {"ser": True},
        "ser_negative": {"ser": -1},
        "ser_2_64": {"ser": 1 << 64},
        "spec_not_str": {"spec": 5},
        "spec_not_hex": {"spec": "zz" + p["spec"][2:]},
        "spec_undecodable": {"spec": "00"},
        "b_short": {"b": p["b"][:-2]},
        "b_not_below_n": {"b": "ff" * 32},
        "r_zero": {"r": "00" * 32},
        "hint_not_hex": {"hint": "zz"},
        "hint_too_long": {"hint": "00" * 513},
        "r_changed": {"r": p["r"][:-2] + ("00" if p["r"][-2:] != "00" else "01")},
    }
    if kind == "not_an_object":
        return 7
    if kind == "hint_missing":
        del p["hint"]
    p.update(changes.get(kind, {}))  # type: ignore[arg-type]
    return p


@pytest.mark.parametrize("suite", ["secp256k1", "modp-2048-256"])
def test_each_defect_gets_its_reason_in_the_pool_and_in_process(
    suite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Payments are parsed where they are verified (a worker, or in process for small
    batches): every defect of their fields, under our card, under a CARD-CERT that
    fails its bank signature, and under one that is no hex, gets the same reason."""
    monkeypatch.setattr(verify_pool, "CHUNK", 5)
    h, batch = _one_card_batch(tmp_path, suite, len(_DEFECTS) + 3)
    [group] = batch["cards"]
    pays = group["payments"]
    ours = [_damage(p, kind) for p, (kind, _) in zip(pays, _DEFECTS, strict=False)]
    cert = bytearray.fromhex(group["cert"])
    cert[-1] ^= 1  # the bank's signature no longer holds
    rest = pays[len(_DEFECTS) :]
    forged = [rest[0], _damage(rest[1], "spec_undecodable"), _damage(rest[2], "ser_bool")]
    batch["cards"] = [
        {"cert": group["cert"], "payments": ours},
        {"cert": cert.hex(), "payments": forged},
        {"cert": "zz", "payments": [rest[0]]},
    ]
    want = [r for _, r in _DEFECTS] + ["bad_cert", "malformed", "malformed", "malformed"]
    got = []
    for min_batch in (1, 10**9):  # the pool, then in process
        with h.bank() as bank:
            bank.verifier.workers = 1
            bank.verifier.min_batch = min_batch
            receipt = bank.deposit(_signed(h, batch, seq=len(got) + 1))
            assert (bank.verifier._pool is not None) == (min_batch == 1)
            got.append([x["reason"] for x in receipt["results"]])
            assert bank.audit().ok
    assert got[0] == want
    # the second deposit finds the first one's accepted payments: duplicates, no credit
    assert got[1] == ["duplicate" if r is None else r for r in want]


def _signed(h: Home, batch: dict[str, Any], seq: int) -> dict[str, Any]:
    with h.terminal("Shop") as (tf, _):
        key = SigningKey.from_private_bytes(tf.sid, tf.signing_key)
        return make_deposit(key, tf.bank_id, tf.sid, seq, 1_800_000_000, batch)


def _group_built(params: object) -> tuple[int, bool]:
    """In a worker: whether the group's secure-cofactor test was made before (a cache
    hit), and g's window table left unbuilt (the batch test does without it)."""
    from jointpay.crypto.batch import secure_cofactor
    from jointpay.crypto.group import ModpParams, modp_group

    assert isinstance(params, ModpParams)
    hits = secure_cofactor.cache_info().hits
    unbuilt = not modp_group(params).has_g_table
    secure_cofactor(params)
    return os.getpid(), unbuilt and secure_cofactor.cache_info().hits > hits


def test_start_builds_the_groups_in_every_worker_before_any_deposit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server's workers come from forkserver and inherit nothing: start() has each one
    validate the group and make its secure-cofactor test before the first deposit
    needs them."""
    group = get_group("modp-2048-256", "jointpay-secure-2048-256")
    assert isinstance(group, ModpGroup)
    monkeypatch.setattr(verify_pool.threading, "active_count", lambda: 2)  # as in a server
    verifier = Verifier(workers=2)
    try:
        verifier.start([group.params])
        pool = verifier._get_pool()
        answers = [pool.submit(_group_built, group.params) for _ in range(8)]
        got = [f.result() for f in answers]
    finally:
        verifier.close()
    assert all(built for _, built in got)
    assert len({pid for pid, _ in got}) <= 2


def test_a_forked_pool_inherits_the_groups_the_parent_built_for_it() -> None:
    """By fork, the workers inherit the parent's secure-cofactor test (0.17 s each):
    the parent makes it once, before forking, not every worker. g's window table is
    built by neither: one g^e a chunk costs less than the table."""
    from jointpay.crypto.batch import secure_cofactor

    group = get_group("modp-2048-256", "jointpay-secure-2048-256")
    assert isinstance(group, ModpGroup)
    secure_cofactor.cache_clear()
    group._g_table = None
    verifier = Verifier(workers=1, groups=[group.params])
    try:
        assert threading.active_count() == 1  # the pool forks
        pool = verifier._get_pool()
        assert not group.has_g_table
        assert secure_cofactor.cache_info().currsize == 1  # made here, in the parent
        _, built = pool.submit(_group_built, group.params).result(timeout=60)
    finally:
        verifier.close()
    assert built


def test_start_without_groups_and_without_workers() -> None:
    Verifier(workers=0).start()  # nothing to start: deposits verify in process
    verifier = Verifier(workers=1)
    try:
        verifier.start()
        assert verifier.submit(verify_jobs, [], batch_size=10**6)() == []
    finally:
        verifier.close()


_HOLDER = """
import sys, time
from jointpay.service.verify_pool import Verifier
verifier = Verifier(workers=2)
verifier.start()
print(" ".join(str(pid) for pid in verifier._get_pool()._processes), flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            state = next(line for line in f if line.startswith("State:"))
    except FileNotFoundError:
        return False
    return " Z " not in state and "zombie" not in state


def test_workers_die_with_a_killed_bank() -> None:
    """A bank killed mid-deposit leaves no worker behind: a forked worker holds copies
    of the bank's database connections, and an orphan would keep the deposit's
    transaction and its card locks open."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2
        assert all(_alive(p) for p in pids)
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids)


def _one_card_batch(
    root: Path, suite: str, n: int, group: str | None = None
) -> tuple[Home, dict[str, Any]]:
    """A bank, one card, merchant Shop, and the batch of ``n`` payments Shop took."""
    h = Home(root, None, lambda: 1_800_000_000)
    h.init_bank(suite=suite, group=group, currency="EUR", bank_id="b")
    with h.bank() as bank:
        bank.open_account("a", 100_000)
        card = h.issue_card(
            bank, holder="a", pin="2468", load=50_000, mode="cash", limit=0, user_key="card"
        ).card_number
        h.open_merchant(bank, "Shop")
    for i in range(n):
        h.pay(card, "Shop", 10 + i, "2468")
    return h, h.export_batch("Shop")


def _g_comb_built(params: object) -> bool:
    from jointpay.crypto.group import ModpParams, modp_group

    assert isinstance(params, ModpParams)
    return modp_group(params).has_g_comb


def test_a_payment_by_payment_group_gets_g_comb_before_the_fork() -> None:
    """On a group without the batch test (RFC 5114) each payment is verified on its own
    with g^r on its key's comb: the parent builds g's comb before it forks, and every
    worker has it without building it. The secure group, batch-tested, gets none."""
    rfc = get_group("modp-2048-256")
    secure = get_group("modp-2048-256", "jointpay-secure-2048-256")
    assert isinstance(rfc, ModpGroup)
    assert isinstance(secure, ModpGroup)
    rfc._g_comb = secure._g_comb = None
    verifier = Verifier(workers=1, groups=[rfc.params, secure.params])
    try:
        assert threading.active_count() == 1  # the pool forks
        pool = verifier._get_pool()
        assert rfc.has_g_comb  # built here, in the parent
        assert not secure.has_g_comb
        got = [pool.submit(_g_comb_built, g.params).result(timeout=60) for g in (rfc, secure)]
    finally:
        verifier.close()
    assert got == [True, False]


@pytest.mark.parametrize("pooled", [True, False])
def test_a_deposit_logs_where_its_time_went(
    pooled: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """One INFO line a deposit on ``jointpay.deposit``, its phases also as the record's
    ``deposit_times``: they pass in order and add up to the total, the time spent
    locking and waiting for the workers lies inside the stream, and a retried session
    (answered from its stored receipt) logs nothing."""
    monkeypatch.setattr(verify_pool, "CHUNK", 4)
    h, batch = _one_card_batch(tmp_path, "secp256k1", 10)
    with h.bank() as bank:
        bank.verifier.workers = 1 if pooled else 0
        bank.verifier.min_batch = 1
        message = _signed(h, batch, seq=1)
        with caplog.at_level(logging.INFO, logger="jointpay.deposit"):
            t = time.perf_counter()
            receipt = bank.deposit(message)
            elapsed = (time.perf_counter() - t) * 1e3
            bank.deposit(message)  # the same session again: its stored receipt
        assert (bank.verifier._pool is not None) == pooled
    [record] = [r for r in caplog.records if r.name == "jointpay.deposit"]
    assert record.levelno == logging.INFO
    times: dict[str, float] = record.deposit_times  # type: ignore[attr-defined]
    phases = ["session", "certs", "stream", "locks", "waiting", "book", "receipt", "commit"]
    assert list(times) == [*phases, "total", "thread_cpu"]
    assert all(v >= 0 for v in times.values())
    outer = sum(times[k] for k in phases if k not in ("locks", "waiting"))
    assert times["total"] == pytest.approx(outer, abs=0.5)
    assert times["total"] <= elapsed
    assert times["locks"] + times["waiting"] <= times["stream"] + 0.2
    assert times["thread_cpu"] > 0
    text = record.getMessage()
    assert text.startswith(f"deposit {receipt['deposit_id']}: 10 payments, 10 accepted, ")
    for part in ("session ", "stream ", "(locks ", ", waiting ", "commit ", "; thread CPU "):
        assert part in text


def test_certificates_are_read_as_the_stream_reaches_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deposit reads its cards' stored certificates window by window, the first chunk
    going to the workers before the last window is read; the answers are those of one
    read of all. A forged certificate (a genuine one with another card's number written
    in, in a later window) is refused as such, having locked only a card of the batch."""
    from jointpay.crypto.certs import claimed_card
    from jointpay.service import deposit as deposit_module
    from jointpay.storage.sql import SqlUnitOfWork

    h = Home(tmp_path, None, lambda: 1_800_000_000)
    h.init_bank(suite="secp256k1", group=None, currency="EUR", bank_id="b")
    with h.bank() as bank:
        bank.open_account("a", 100_000)
        cards = [
            h.issue_card(
                bank, holder="a", pin="2468", load=5_000, mode="cash", limit=0, user_key="card"
            ).card_number
            for _ in range(3)
        ]
        h.open_merchant(bank, "Shop")
    for k, card in enumerate(cards):
        for i in range(2):
            h.pay(card, "Shop", 10 + 10 * k + i, "2468")
    batch = h.export_batch("Shop")
    genuine = bytes.fromhex(batch["cards"][-1]["cert"])
    claim = claimed_card(genuine)
    assert claim is not None
    other = next(c for c in cards if c != claim[1])
    forged = genuine.replace(claim[1].encode(), other.encode())
    assert claimed_card(forged) == ("b", other)
    batch["cards"].append({"cert": forged.hex(), "payments": batch["cards"][-1]["payments"]})

    events: list[str] = []
    real_get, real_submit = SqlUnitOfWork.get_certs, Verifier.submit

    def get_certs(self: SqlUnitOfWork, ids: Any) -> Any:
        events.append(f"read {len(ids)}")
        return real_get(self, ids)

    def submit(self: Verifier, *args: Any, **kwargs: Any) -> Any:
        events.append("send")
        return real_submit(self, *args, **kwargs)

    monkeypatch.setattr(SqlUnitOfWork, "get_certs", get_certs)
    monkeypatch.setattr(Verifier, "submit", submit)
    got = []
    for window, chunk in ((1, 2), (10_000, 512)):
        monkeypatch.setattr(deposit_module, "CERT_WINDOW", window)
        monkeypatch.setattr(verify_pool, "CHUNK", chunk)
        events.clear()
        with h.bank() as bank:
            bank.verifier.workers = 1
            bank.verifier.min_batch = 1
            receipt = bank.deposit(_signed(h, batch, seq=len(got) + 1))
            assert bank.audit().ok
        answers = [r["reason"] or r["status"] for r in receipt["results"]]
        got.append((answers, list(events)))
    (answers, order), (again, order_all) = got
    assert answers == ["accepted"] * 6 + ["bad_cert"] * 2
    assert order.count("send") == 4
    assert [e for e in order if e != "send"] == ["read 1"] * 4  # one window a card
    assert order.index("send") < max(i for i, e in enumerate(order) if e != "send")
    # the same payments again, their certificates read in one window: the same answers
    assert again == ["duplicate"] * 6 + ["bad_cert"] * 2
    assert [e for e in order_all if e != "send"] == ["read 3"]


def test_a_pool_whose_worker_died_is_replaced() -> None:
    """A worker killed (the OOM killer, a crash in native code) breaks its pool for
    good; the chunk it held fails, and the next chunk goes to a new pool."""
    group = get_group("secp256k1")
    x = SecretScalar(group.random_scalar())
    y = group.public_key(x.reveal())
    jobs = [job_for(group, y.encoded, sign(group, x, y, i, b"spec %d" % i)[0]) for i in range(4)]
    verifier = Verifier(workers=1, min_batch=1)
    try:
        assert verifier.submit(verify_jobs, jobs, batch_size=4)() == [True] * 4
        first = verifier._pool
        assert first is not None
        for pid in list(first._processes):  # the test kills the worker
            os.kill(pid, 9)
        deadline = time.monotonic() + 10
        while not first._broken and time.monotonic() < deadline:
            time.sleep(0.01)
        assert first._broken  # the executor noticed
        assert verifier.submit(verify_jobs, jobs, batch_size=4)() == [True] * 4
        assert verifier._pool is not first
    finally:
        verifier.close()


def _deposit_seen(jobs: list[object], *, deposit: int | None = None) -> list[int | None]:
    """A task for :meth:`Verifier.submit` that answers, per job, the deposit size it was
    given (module-level: the pool pickles it by name)."""
    return [deposit] * len(jobs)


def test_submit_tells_the_task_the_deposits_size_in_process_and_in_the_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The batch test's exponents widen with the whole deposit's size (CONTRACT section
    2 bounds the error per deposit, not per chunk): ``batch_size`` reaches the task, in
    a worker as in process, and through :func:`verify_jobs` the batch call."""
    import jointpay.service.verify_pool as pool_mod

    inline, pooled = Verifier(workers=0), Verifier(workers=1, min_batch=1)
    try:
        assert inline.submit(_deposit_seen, [1, 2], batch_size=70_000)() == [70_000] * 2
        assert pooled.submit(_deposit_seen, [1, 2, 3], batch_size=9_000)() == [9_000] * 3
    finally:
        pooled.close()
    group = get_group("secp256k1")
    x = SecretScalar(group.random_scalar())
    y = group.public_key(x.reveal())
    jobs = []
    for i in range(4):
        cert, a = sign(group, x, y, i, b"spec %d" % i)
        jobs.append(job_for(group, y.encoded, cert, a.encoded))
    seen: list[int | None] = []
    real = pool_mod.verify_batch_secp256k1

    def spy(g: Any, items: Any, *, deposit: int | None = None) -> list[bool]:
        seen.append(deposit)
        return real(g, items, deposit=deposit)

    monkeypatch.setattr(pool_mod, "verify_batch_secp256k1", spy)
    assert inline.submit(verify_jobs, jobs, batch_size=100_000)() == [True] * 4
    assert seen == [100_000]
