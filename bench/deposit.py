"""The nightly deposit: payments per second against the raw verification limit.

    python bench/deposit.py [--suite S,...] [--cards distinct,100] [--sizes 100,1000]
                            [--db sqlite,postgres] [--via inproc,http] [--json]
    python bench/deposit.py --smoke
    python bench/deposit.py --emit-batch FILE --home DIR --n N --suite S --cards distinct|100

For each configuration it sets up a fresh bank (SQLite file, or a fresh PostgreSQL
schema), opens the cards through the bank's own FIG. 10 load, signs the payments
offline exactly as a card does (with the terminal's hint a' kept, as a terminal
keeps it), and then times only the bank's side of the deposit:

* ``inproc``: one merchant, one batch of N payments, deposited by a separate Python
  process that loads the batch file and calls the bank (its peak RSS is reported).
* ``http``: 8 merchants depositing their own N/8 payments at once through
  ``jointpay bank serve`` (the server's peak RSS is reported).

Beside each figure, measured in the same run on the same payments: ``raw``, strict
per-payment verification (``schnorr.verify``) on one core, and ``naive``, the textbook
verification of a modp payment (two full exponentiations and the hash) on one core,
each the mean of a measure just before and one just after the deposit (a shared host's
speed drifts; the line shows raw's two, ``before->after``). Also strict verification
in one process per core at once, before the deposit, as a multiple of the one-core rate
(``cores_over_one``): what the machine's cores deliver together at that moment, which
on a shared host moves between runs (1.2 to 2.2 on 2 vCPUs here).

Suites: ``secp256k1``, ``modp-rfc5114`` (RFC 5114 section 2.3, the default modp
group) and ``modp-secure`` (jointpay-secure-2048-256, where the exact batch test
runs). ``--cards distinct`` makes every payment come from its own card; ``100`` spreads
them over 100 cards. ``--smoke`` runs a tiny configuration of each and checks the
results (every payment accepted once, the merchant credited, the books balanced, a
second deposit all duplicates), not the speed. ``--json`` prints one JSON object:
``{"machine": {...}, "runs": [...]}`` (and ``"smoke": "ok"`` with ``--smoke``).
With ``--via inproc,http`` the two alternate, and each pair's HTTP rate over its
in-process rate is printed, then their median (``"http_over_inproc"`` in the JSON).
"""

from __future__ import annotations

import sys
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]  # a script named like stdlib modules must not shadow them

import argparse
import json
import multiprocessing
import os
import platform
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from typing import Any

import gmpy2
import psycopg

from jointpay.api.client import HttpBank, wait_until_serving
from jointpay.crypto.certs import CardCert, CardMode, issue_card_cert, mac
from jointpay.crypto.group import ModpGroup
from jointpay.crypto.joint import Role, prove_possession
from jointpay.crypto.schnorr import PAYMENT_TAG, PaymentCert, SecretScalar, challenge, sign, verify
from jointpay.home import Home
from jointpay.protocol.deposit import BATCH_FORMAT
from jointpay.protocol.messages import WITHDRAW_REQUEST_TAG, AuthKind, WithdrawRequest
from jointpay.protocol.spec import PaymentSpec
from jointpay.service.bank import Bank, luhn_complete
from jointpay.service.deposit import DepositTimes

SUITES: dict[str, tuple[str, str | None]] = {
    "secp256k1": ("secp256k1", None),
    "modp-rfc5114": ("modp-2048-256", None),
    "modp-secure": ("modp-2048-256", "jointpay-secure-2048-256"),
}
PG = os.environ.get("JOINTPAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
HTTP_MERCHANTS = 8
AMOUNT = 100


@dataclass(frozen=True)
class BenchCard:
    number: str
    secret: SecretScalar
    cert: CardCert


def open_card(bank: Bank, now: int, load: int) -> BenchCard:
    """FIG. 4 with the bench holding both shares, and the load through FIG. 10 (MAC)."""
    group = bank.group
    number = luhn_complete("4" + "".join(str(secrets.randbelow(10)) for _ in range(14)))
    s_u = SecretScalar(group.random_scalar())
    s_c = SecretScalar(group.random_scalar())
    cert = issue_card_cert(
        bank.signing_key,
        group=group,
        card_number=number,
        contributions=[
            prove_possession(group, s_u, number, Role.USER),
            prove_possession(group, s_c, number, Role.BANK),
        ],
        currency=bank.currency,
        mode=CardMode.CASH,
        not_before=now - 3600,
        not_after=now + 30 * 86400,
        max_amount=bank.policy.max_amount,
    )
    master = secrets.token_bytes(32)
    bank._open_card_account(number, "holder", CardMode.CASH, 0, cert, master, now)
    req = WithdrawRequest(bank.bank_id, number, cert.cert_id, 1, 0, load, False, AuthKind.MAC)
    bank.withdraw(replace(req, auth=mac(master, WITHDRAW_REQUEST_TAG, req.tbs())).encode())
    joint = SecretScalar((s_u.reveal() + s_c.reveal()) % group.q)
    assert group.public_key(joint.reveal()) == cert.joint_key
    return BenchCard(number, joint, cert)


def sign_batch(
    bank: Bank, sid: str, cards: list[BenchCard], n: int, start: int, now: int
) -> dict[str, Any]:
    """n payments to merchant ``sid``, as cards sign them and a terminal keeps them."""
    group = bank.group
    per_card: dict[str, dict[str, Any]] = {}
    for i in range(start, start + n):
        card = cards[i % len(cards)]
        ser = i // len(cards)
        spec = PaymentSpec(
            bank.bank_id, sid, AMOUNT, bank.currency, now - 60, i, card.cert.cert_id
        ).encode()
        pc, _ = sign(group, card.secret, card.cert.joint_key, ser, spec)
        a = verify(group, card.cert.joint_key, pc)  # as the terminal computes its hint
        entry = per_card.setdefault(card.number, {"cert": card.cert.encode().hex(), "payments": []})
        entry["payments"].append(
            {
                "ser": ser,
                "spec": spec.hex(),
                "b": pc.b_bytes.hex(),
                "r": pc.r_bytes.hex(),
                "hint": group.hint_of(a).hex(),
            }
        )
    return {
        "format": BATCH_FORMAT,
        "bank_id": bank.bank_id,
        "sid": sid,
        "cards": list(per_card.values()),
    }


@dataclass
class World:
    home: Home
    db_url: str | None
    batches: dict[str, dict[str, Any]]  # merchant name -> batch
    samples: list[tuple[CardCert, PaymentCert]]


def build_world(
    root: Path, db_url: str | None, suite: str, n: int, cards_mode: str, merchants: list[str]
) -> World:
    s, group_name = SUITES[suite]
    h = Home(root, db_url)
    h.init_bank(suite=s, group=group_name, currency="EUR", bank_id="bench-bank")
    now = int(time.time())
    n_cards = n if cards_mode == "distinct" else min(int(cards_mode), n)
    with h.bank() as bank:
        per_card_load = AMOUNT * (-(-n // n_cards)) + AMOUNT
        bank.open_account("holder", per_card_load * n_cards + 10**6)
        cards = [open_card(bank, now, per_card_load) for _ in range(n_cards)]
        tfs = [h.open_merchant(bank, m) for m in merchants]
        share = n // len(merchants)
        batches = {
            tf.name: sign_batch(bank, tf.sid, cards, share, k * share, now)
            for k, tf in enumerate(tfs)
        }
    samples = []
    for batch in batches.values():
        for entry in batch["cards"][:200]:
            cert = CardCert.decode(bytes.fromhex(entry["cert"]))
            for p in entry["payments"][:2]:
                samples.append(
                    (
                        cert,
                        PaymentCert.parse(
                            cert.group,
                            p["ser"],
                            bytes.fromhex(p["spec"]),
                            bytes.fromhex(p["b"]),
                            bytes.fromhex(p["r"]),
                        ),
                    )
                )
    return World(h, db_url, batches, samples[:200])


def _strict_rate(samples: list[tuple[CardCert, PaymentCert]], seconds: float) -> float:
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        for cert, pc in samples:
            verify(cert.group, cert.joint_key, pc)
        n += len(samples)
    return n / (time.perf_counter() - t)


def _strict_rate_child(
    samples: list[tuple[CardCert, PaymentCert]], seconds: float, start: Any, out: Any
) -> None:
    start.wait()
    out.put(_strict_rate(samples, seconds))


def raw_rates(
    samples: list[tuple[CardCert, PaymentCert]], seconds: float = 1.5, *, all_cores: bool = True
) -> dict[str, float]:
    """Strict verify, and (modp) the textbook two-exponentiation verify, on one core;
    and (``all_cores``) strict verify in as many processes as cores at once
    (``raw_all_per_s``: what the machine's cores deliver together, which on a shared or
    SMT host is well below cores × one core)."""
    out = {"raw_per_s": _strict_rate(samples, seconds)}
    if all_cores:
        out["raw_all_per_s"] = _all_cores_rate(samples, seconds)
    naive = _naive_rate(samples, seconds)
    out["naive_per_s"] = out["raw_per_s"] if naive is None else naive
    return out


def _all_cores_rate(samples: list[tuple[CardCert, PaymentCert]], seconds: float) -> float:
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_strict_rate_child, args=(samples, seconds, start, results))
        for _ in range(os.cpu_count() or 1)
    ]
    for proc in procs:
        proc.start()
    start.set()
    total = sum(results.get() for _ in procs)
    for proc in procs:
        proc.join()
    return float(total)


def _naive_rate(samples: list[tuple[CardCert, PaymentCert]], seconds: float) -> float | None:
    """The textbook modp verification (two full exponentiations and the hash) on one
    core; None for secp256k1, whose baseline is strict verification."""
    group = samples[0][0].group
    if not isinstance(group, ModpGroup):
        return None
    p, g = gmpy2.mpz(group.p), gmpy2.mpz(group.g)
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        for cert, pc in samples:
            a = gmpy2.powmod(g, pc.r, p) * gmpy2.powmod(cert.joint_key.native, pc.b, p) % p
            enc = int(a).to_bytes(group.element_len, "big")
            assert (
                challenge(group, PAYMENT_TAG, cert.joint_key.encoded, pc.ser, pc.spec, enc) == pc.b
            )
        n += len(samples)
    return n / (time.perf_counter() - t)


_CHILD = r"""
import json, logging, resource, sys, time
from pathlib import Path
from jointpay.home import Home
from jointpay.protocol.deposit import loads_strict
root, db, merchant, path = sys.argv[1], sys.argv[2] or None, sys.argv[3], sys.argv[4]
phases = {}
class Keep(logging.Handler):
    def emit(self, record):
        phases.update(getattr(record, "deposit_times", {}))
log = logging.getLogger("jointpay.deposit")
log.setLevel(logging.INFO)
log.addHandler(Keep())
log.propagate = False
def cpu(who):
    u = resource.getrusage(who)
    return u.ru_utime + u.ru_stime
h = Home(Path(root), db)
with h.bank() as bank:
    c = cpu(resource.RUSAGE_SELF)
    t = time.perf_counter()
    text = Path(path).read_bytes()
    batch = loads_strict(text)
    read = time.perf_counter() - t
    receipt = h.deposit(merchant, bank, batch)
    dt = time.perf_counter() - t
    parent = cpu(resource.RUSAGE_SELF) - c
# the pool's workers, reaped when the bank closed
workers = cpu(resource.RUSAGE_CHILDREN)
# VmHWM, not ru_maxrss: after fork+exec ru_maxrss starts from the parent's size
hwm = next(int(line.split()[1]) for line in open("/proc/self/status")
           if line.startswith("VmHWM"))
print(json.dumps({"seconds": dt, "accepted": receipt["accepted"],
                  "rejected": receipt["rejected"], "rss_mb": hwm / 1024,
                  "breakdown": {"batch_read_ms": round(read * 1e3, 1),
                                "bank_ms": phases,
                                "parent_cpu_s": round(parent, 3),
                                "workers_cpu_s": round(workers, 3)}}))
"""


def deposit_inproc(w: World, root: Path) -> dict[str, Any]:
    """Parse the batch file and deposit it, in a fresh process (its peak RSS is real)."""
    [(name, batch)] = w.batches.items()
    path = root / "batch.json"
    path.write_text(json.dumps(batch))
    run = subprocess.run(
        [sys.executable, "-c", _CHILD, str(root), w.db_url or "", name, str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode:
        raise RuntimeError(run.stderr[-2000:])
    out: dict[str, Any] = json.loads(run.stdout)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_kb(pid: int, field: str) -> int:
    """A process's memory figure from /proc (VmRSS now, VmHWM its peak), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


@contextmanager
def served(root: Path, db_url: str | None, log: Path | None = None) -> Iterator[tuple[int, str]]:
    """``jointpay bank serve`` on the bank in ``root`` as its own process: (pid, URL).
    With ``log``, the server runs at ``--log-level info`` and its standard error goes
    there: one line a deposit, saying where its time went (:func:`server_deposits`)."""
    port = free_port()
    env = {**os.environ}
    env.pop("JOINTPAY_DB", None)
    if db_url:
        env["JOINTPAY_DB"] = db_url
    command = [sys.executable, "-m", "jointpay", "--home", str(root), "bank", "serve"]
    if log is not None:
        command += ["--log-level", "info"]
    with ExitStack() as stack:
        err = stack.enter_context(log.open("wb")) if log is not None else subprocess.DEVNULL
        proc = subprocess.Popen(
            [*command, "--port", str(port)], env=env, stderr=err, stdout=subprocess.DEVNULL
        )
        base = f"http://127.0.0.1:{port}"
        try:
            if not wait_until_serving(base, alive=lambda: proc.poll() is None):
                raise RuntimeError(f"jointpay bank serve did not start (exit {proc.poll()})")
            yield proc.pid, base
        finally:
            proc.terminate()
            proc.wait(10)


_DEPOSIT_LINE = re.compile(
    r"jointpay\.deposit: deposit (?P<id>\S+): (?P<n>\d+) payments, (?P<accepted>\d+) accepted, "
    r"(?P<total>\d+) ms: (?P<phases>.*) ms$"
)
_PHASE = re.compile(r"([A-Za-z][A-Za-z ]*?) (\d+(?:\.\d+)?)(?=[,;) ]|$)")


def server_deposits(log: Path) -> list[dict[str, Any]]:
    """The deposits a server at ``--log-level info`` logged (operations.md, "Where a
    deposit's time goes"): for each its id, payments, accepted, and the phases'
    milliseconds as :meth:`DepositTimes.summary` names them (``thread CPU`` as
    ``thread_cpu``)."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        m = _DEPOSIT_LINE.search(line)
        if m is None:
            continue
        phases = {k.lower().replace(" ", "_"): float(v) for k, v in _PHASE.findall(m["phases"])}
        phases["total"] = float(m["total"])
        out.append(
            {"id": m["id"], "payments": int(m["n"]), "accepted": int(m["accepted"]), "ms": phases}
        )
    return out


def tree_cpu(pid: int) -> tuple[float, float, float]:
    """CPU seconds (user and system) used so far by process ``pid``; apart, by its
    living descendants (a server's pool workers, and the forkserver that starts them);
    and by the processes named ``postgres`` (the local PostgreSQL server's backends,
    which share the cores: 0 when the bank is on SQLite)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}  # pid -> (parent, cpu)
    postgres = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
        used = (int(fields[11]) + int(fields[12])) / tick
        stats[int(entry.name)] = (int(fields[1]), used)
        if text[text.index("(") + 1 : text.rindex(")")] == "postgres":
            postgres += used
    own = stats.get(pid, (0, 0.0))[1]
    family, below = {pid}, 0.0
    changed = True
    while changed:
        changed = False
        for child, (parent, used) in stats.items():
            if parent in family and child not in family:
                family.add(child)
                below += used
                changed = True
    return own, below, postgres


def deposit_http(w: World, root: Path) -> dict[str, Any]:
    log = root / "serve.err"
    with served(root, w.db_url, log) as (pid, base):
        receipts: dict[str, dict[str, Any]] = {}
        barrier = threading.Barrier(len(w.batches) + 1)

        def merchant(name: str, batch: dict[str, Any]) -> None:
            port_ = HttpBank(base, timeout=600)
            try:
                barrier.wait()
                receipts[name] = w.home.deposit(name, port_, batch)
            finally:
                port_.close()

        threads = [threading.Thread(target=merchant, args=kv) for kv in w.batches.items()]
        for th in threads:
            th.start()
        server0, workers0, postgres0 = tree_cpu(pid)
        barrier.wait()  # each merchant has made its client (an SSL context: CPU)
        merchants0 = time.process_time()  # this process: the merchants' threads
        t = time.perf_counter()
        for th in threads:
            th.join()
        dt = time.perf_counter() - t
        merchants1 = time.process_time()
        server1, workers1, postgres1 = tree_cpu(pid)
        hwm = proc_kb(pid, "VmHWM")
    return {
        "seconds": dt,
        "accepted": sum(int(r["accepted"]) for r in receipts.values()),
        "rejected": sum(int(r["rejected"]) for r in receipts.values()),
        "rss_mb": hwm / 1024,
        "breakdown": {
            "deposits": server_deposits(log),
            "server_cpu_s": round(server1 - server0, 2),
            "workers_cpu_s": round(workers1 - workers0, 2),
            "merchants_cpu_s": round(merchants1 - merchants0, 2),
            "postgres_cpu_s": round(postgres1 - postgres0, 2),
        },
    }


@contextmanager
def database(kind: str, pg: str = PG) -> Iterator[str | None]:
    """None for the home's SQLite file; else a fresh schema on ``pg``, dropped after."""
    if kind == "sqlite":
        yield None
        return
    schema = f"jp_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in pg else "?"
    try:
        yield f"{pg}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(pg, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def one(
    suite: str, cards: str, n: int, db: str, via: str, *, check: bool = False
) -> dict[str, Any]:
    merchants = ["bench"] if via == "inproc" else [f"M{i}" for i in range(HTTP_MERCHANTS)]
    n = n - n % len(merchants)
    root = Path(tempfile.mkdtemp(prefix="jointpay-bench-deposit-"))
    try:
        with database(db) as url:
            t = time.perf_counter()
            w = build_world(root, url, suite, n, cards, merchants)
            setup = time.perf_counter() - t
            before = raw_rates(w.samples)
            got = deposit_inproc(w, root) if via == "inproc" else deposit_http(w, root)
            after = raw_rates(w.samples, all_cores=False)
            if got["accepted"] != n or got["rejected"]:
                raise AssertionError(f"{suite}/{cards}/{n}: {got}")
            if via == "http":  # the server said where each deposit's time went
                logged = got["breakdown"]["deposits"]
                if len(logged) != len(merchants) or sum(d["accepted"] for d in logged) != n:
                    raise AssertionError(f"{suite}/{cards}/{n}: the server logged {logged}")
            if check:
                verify_books(w, n)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rate = n / got["seconds"]
    # the one-core rates just before and just after the deposit, and their mean: a
    # shared host's speed drifts, and the deposit ran between the two
    rates = {key: (before[key] + after[key]) / 2 for key in ("raw_per_s", "naive_per_s")}
    rates["raw_all_per_s"] = before["raw_all_per_s"]
    return {
        "suite": suite,
        "cards": cards,
        "payments": n,
        "db": db,
        "via": via,
        "merchants": len(merchants),
        "cores": os.cpu_count() or 1,
        "setup_s": round(setup, 1),
        "seconds": round(got["seconds"], 3),
        "per_s": round(rate),
        "raw_per_s": round(rates["raw_per_s"]),
        "raw_before_after": [round(before["raw_per_s"]), round(after["raw_per_s"])],
        "naive_per_s": round(rates["naive_per_s"]),
        "over_raw": round(rate / rates["raw_per_s"], 2),
        "over_naive": round(rate / rates["naive_per_s"], 2),
        "raw_all_per_s": round(rates["raw_all_per_s"]),
        "cores_over_one": round(rates["raw_all_per_s"] / before["raw_per_s"], 2),
        "peak_rss_mb": round(got["rss_mb"], 1),
        **({"breakdown": got["breakdown"]} if "breakdown" in got else {}),
    }


def verify_books(w: World, n: int) -> None:
    """--smoke: credited once, books balanced, a second deposit changes nothing."""
    with w.home.bank() as bank:
        credited = sum(bank.account(bank.merchant(m).account_id).balance for m in w.batches)
        assert credited == n * AMOUNT, (credited, n * AMOUNT)
        report = bank.audit()
        assert report.ok, report.violations
        for name, batch in w.batches.items():
            again = w.home.deposit(name, bank, batch)
            assert again["accepted"] == 0, again
            assert {r["reason"] for r in again["results"]} == {"duplicate"}
        assert bank.audit().ok


def emit_batch(path: Path, home: Path, n: int, suite: str, cards: str) -> None:
    if home.exists() and any(home.iterdir()):
        raise SystemExit(f"{home} is not empty")
    w = build_world(home, None, suite, n, cards, ["bench"])
    path.write_text(json.dumps(w.batches["bench"]))
    print(
        f"wrote {n} payments to {path}; time it with:\n"
        f"  jointpay --home {home} deposit --merchant bench --batch {path}"
    )


def _listed(values: list[str] | None, default: list[str]) -> list[str]:
    """An option's values, each of which may list several, comma-separated."""
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()] or default


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", action="append", help=f"one or more of {', '.join(sorted(SUITES))}")
    ap.add_argument(
        "--cards", action="append", help="distinct, or a number of cards (100); or both"
    )
    ap.add_argument("--sizes", default="100,1000,10000", help="comma-separated batch sizes")
    ap.add_argument("--db", default="sqlite", help="sqlite,postgres")
    ap.add_argument("--via", default="inproc", help="inproc,http")
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--breakdown",
        action="store_true",
        help="after each run, where its time went: the bank's phases and the CPU of each "
        "process (over HTTP as the server logged them; also in --json, always)",
    )
    ap.add_argument("--smoke", action="store_true", help="tiny runs; checks results, not speed")
    ap.add_argument("--emit-batch", type=Path, metavar="FILE")
    ap.add_argument("--home", type=Path)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of each configuration, each on a fresh bank, and their median (a shared "
        "machine's speed moves by half within minutes)",
    )
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error("--repeat is at least 1")
    # each list option takes comma-separated values, --suite and --cards also repeated
    suites = _listed(args.suite, list(SUITES))
    cards_modes = _listed(args.cards, ["distinct", "100"])
    dbs, vias = _listed([args.db], []), _listed([args.via], [])
    if bad := [x for x in suites if x not in SUITES]:
        ap.error(f"unknown suite {bad[0]!r}: one of {', '.join(sorted(SUITES))}")
    if bad := [x for x in cards_modes if x != "distinct" and not (x.isdigit() and int(x) > 0)]:
        ap.error(f"--cards {bad[0]!r}: distinct, or a number of cards")
    sizes = _listed([args.sizes], [])
    if not sizes or not all(x.isdigit() and int(x) > 0 for x in sizes):
        ap.error(f"--sizes {args.sizes!r}: batch sizes, comma-separated")
    for name, given, allowed in (
        ("--db", dbs, ("sqlite", "postgres")),
        ("--via", vias, ("inproc", "http")),
    ):
        if not given or any(x not in allowed for x in given):
            ap.error(f"{name} takes {' or '.join(allowed)}, or both comma-separated")
    if args.emit_batch:
        if args.home is None:
            ap.error("--emit-batch needs --home DIR")
        emit_batch(
            args.emit_batch,
            args.home,
            args.n,
            _listed(args.suite, ["secp256k1"])[0],
            _listed(args.cards, ["distinct"])[0],
        )
        return
    if args.smoke:
        plan = [(s, "distinct", 24, "sqlite", "inproc") for s in SUITES]
        plan += [
            ("modp-secure", "4", 24, "postgres", "http"),
            ("secp256k1", "4", 48, "sqlite", "http"),
        ]
        results = [one(*cfg, check=True) for cfg in plan]
    else:
        results = []
        medians = []
        ratios = []
        for suite in suites:
            for cards in cards_modes:
                for n in (int(x) for x in sizes):
                    for db in dbs:
                        got = configuration(
                            suite, cards, n, db, vias, args.repeat, args.json, args.breakdown
                        )
                        results += got["runs"]
                        medians += got["medians"]
                        if got["ratio"] is not None:
                            ratios.append(got["ratio"])
    if args.json:
        out: dict[str, Any] = {"machine": machine(), "runs": results}
        if not args.smoke and args.repeat > 1:
            out["medians"] = medians
        if not args.smoke and ratios:
            out["http_over_inproc"] = ratios
        if args.smoke:
            out["smoke"] = "ok"
        print(json.dumps(out))
    elif args.smoke:
        for r in results:
            show(r)
        print("smoke: every run accepted each payment once, credited it, and balanced")


def configuration(
    suite: str,
    cards: str,
    n: int,
    db: str,
    vias: list[str],
    repeat: int,
    quiet: bool,
    breakdown: bool = False,
) -> dict[str, Any]:
    """One configuration's runs, ``repeat`` times each way. With both ``inproc`` and
    ``http`` asked for, the two alternate, and each pair's HTTP rate is taken over
    its in-process rate: the two runs of a pair see the same machine, where a shared
    host's speed moves by half between a series of one and a series of the other.
    Their median is the figure the issue's 60 % target is about."""
    runs: dict[str, list[dict[str, Any]]] = {via: [] for via in vias}
    pairs: list[float] = []
    for _ in range(repeat):
        for via in vias:
            runs[via].append(one(suite, cards, n, db, via))
            if not quiet:
                show(runs[via][-1])
                if breakdown and "breakdown" in runs[via][-1]:
                    show_breakdown(runs[via][-1])
        if "inproc" in runs and "http" in runs:
            pairs.append(round(runs["http"][-1]["per_s"] / runs["inproc"][-1]["per_s"], 2))
            if not quiet:
                print(f"    http / inproc, this pair: {pairs[-1]}", flush=True)
    medians = []
    if repeat > 1:
        for via in vias:
            medians.append(median_of(runs[via]))
            if not quiet:
                show(medians[-1], label="median")
    ratio = None
    if pairs:
        ratio = {
            "suite": suite,
            "cards": cards,
            "payments": n,
            "db": db,
            "http_over_inproc": round(statistics.median(pairs), 2),
            "pairs": pairs,
        }
        if not quiet:
            print(
                f"http / inproc: median {ratio['http_over_inproc']} of {len(pairs)} pairs {pairs}",
                flush=True,
            )
    return {"runs": [r for via in vias for r in runs[via]], "medians": medians, "ratio": ratio}


def machine() -> dict[str, Any]:
    """What the figures came from: compare ratios across machines, not rates."""
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "gmpy2": gmpy2.version(),
        "platform": platform.platform(),
    }


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One configuration's runs summed up: the median of each figure, each ratio taken
    within its own run (a run's raw rate and its deposit see the same machine)."""
    out = dict(runs[0])
    for key in ("per_s", "raw_per_s", "naive_per_s", "raw_all_per_s"):
        out[key] = round(statistics.median(r[key] for r in runs))
    for key, digits in (("seconds", 3), ("over_raw", 2), ("over_naive", 2), ("cores_over_one", 2)):
        out[key] = round(statistics.median(r[key] for r in runs), digits)
    out.pop("raw_before_after", None)  # one run's, not the median's
    out.pop("breakdown", None)  # idem
    out["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    out["runs"] = len(runs)
    return out


def drift(r: dict[str, Any]) -> str:
    """A run's one-core raw rate just before and just after its deposit."""
    if "raw_before_after" not in r:
        return ""
    before, after = r["raw_before_after"]
    return f" ({before}->{after})"


def show(r: dict[str, Any], label: str = "") -> None:
    print(
        (f"{label} of {r['runs']}: " if label else "")
        + f"{r['suite']:>13} cards={r['cards']:<8} n={r['payments']:<6} {r['db']:<8} "
        f"{r['via']:<6} {r['per_s']:>7}/s  raw {r['raw_per_s']:>6}/s{drift(r)} "
        f" x{r['over_raw']:<5} "
        f"naive {r['naive_per_s']:>6}/s  x{r['over_naive']:<5} rss {r['peak_rss_mb']} MB  "
        f"(raw on all {r['cores']} cores x{r['cores_over_one']} of one)",
        flush=True,
    )


def show_breakdown(r: dict[str, Any]) -> None:
    """Where a run's time went. In process: the batch file's parse, the bank's phases
    (the deposit's log line, :class:`jointpay.service.deposit.DepositTimes`), the
    merchant's side (its signature of the session, its check and record of the
    receipt), and the CPU of the depositing process (all its threads) and of the
    pool's workers. Over HTTP: the server's deposits as it logged them (the median of
    each phase, and the longest), and the CPU of the server (all its threads), of its
    workers, of the merchants (this process's threads, which sign the sessions and
    check the receipts on the same cores) and, on PostgreSQL, of its backends. While
    ``waiting`` is a small part of ``stream`` the depositing thread is the limit; while
    it is most of it, the workers are."""
    b = r["breakdown"]
    if "deposits" in b:
        deposits = [d["ms"] for d in b["deposits"]]
        medians = {k: statistics.median(d.get(k, 0.0) for d in deposits) for k in deposits[0]}
        print(
            f"    server: {len(deposits)} deposits, each (medians) {medians['total']:.0f} ms: "
            f"{DepositTimes.text(medians)} ms; the longest "
            f"{max(d['total'] for d in deposits):.0f} ms; "
            f"CPU: server {b['server_cpu_s']:.2f} s, workers {b['workers_cpu_s']:.2f} s, "
            f"merchants {b['merchants_cpu_s']:.2f} s"
            + (f", PostgreSQL {b['postgres_cpu_s']:.2f} s" if r["db"] == "postgres" else ""),
            flush=True,
        )
        return
    bank = b["bank_ms"]
    merchant = r["seconds"] * 1e3 - b["batch_read_ms"] - bank.get("total", 0.0)
    print(
        f"    batch read {b['batch_read_ms']:.0f} ms; bank {bank.get('total', 0):.0f} ms: "
        f"{DepositTimes.text(bank) if bank else '?'} ms; merchant's side {merchant:.0f} ms; "
        f"CPU: this process {b['parent_cpu_s']:.2f} s, workers {b['workers_cpu_s']:.2f} s",
        flush=True,
    )


if __name__ == "__main__":
    main()
