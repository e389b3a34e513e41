"""Deposit throughput through the HTTP API on PostgreSQL.

    python bench/http.py [--payments N] [--merchants M] [--batch B] [--pg URL] [--json]

Sets up a bank on a fresh PostgreSQL schema (default server: the local one), M
merchants and enough cards, takes N payments (secp256k1) at the merchants' terminals
in process, then starts ``jointpay bank serve`` as its own process and lets M
clients deposit at once, each its own payments in batches of B (default 100),
through the real HTTP API. Reports payments per second over the whole run, the
p50/p99 latency of one B-payment deposit, and, in the same run, the raw verify rate
on one core and on all cores of the machine. Target: at least 50 % of the raw rate
on the same cores. The schema is dropped at the end.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the standard library's ``http`` package, which httpx
# imports: run as a script, its folder must not shadow it.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]
sys.path.append(str(Path(__file__).resolve().parent))  # after the stdlib: bench/deposit.py

import argparse
import contextlib
import json
import os
import statistics
import tempfile
import threading
import time
from typing import Any

import httpx

from deposit import database, served  # bench/deposit.py
from jointpay.adapters.card_file import InProcessChannel
from jointpay.crypto.certs import CardCert, SigningKey
from jointpay.crypto.schnorr import PaymentCert, verify
from jointpay.home import Home
from jointpay.protocol.deposit import build_batch, make_deposit
from jointpay.protocol.terminal import CardClient, TakenPayment, Terminal

PIN = "2468"


def raw_rate(payments: list[TakenPayment], seconds: float = 2.0) -> float:
    sample = []
    for p in payments[:200]:
        cert = CardCert.decode(p.card_cert)
        sample.append((cert, PaymentCert.parse(cert.group, p.ser, p.spec, p.b, p.r)))
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        for cert, pc in sample:
            verify(cert.group, cert.joint_key, pc)
        n += len(sample)
    return n / (time.perf_counter() - t)


def setup(
    root: Path, url: str, n: int, merchants: int, cards_n: int
) -> tuple[Home, dict[str, list[Any]]]:
    h = Home(root, url)
    h.init_bank(suite="secp256k1", group=None, currency="EUR", bank_id="bench-bank")
    names = [f"M{i:02d}" for i in range(merchants)]
    with h.bank() as bank:
        bank.open_account("holder", 10**15)
        cards = [
            h.issue_card(
                bank, holder="holder", pin=PIN, load=10**10, mode="cash", limit=0, user_key="card"
            ).card_number
            for _ in range(cards_n)
        ]
        for m in names:
            h.open_merchant(bank, m)
    applets = [h.card(c).applet() for c in cards]
    taken: dict[str, list[Any]] = {}
    for i, m in enumerate(names):
        with h.terminal(m) as (tf, store):
            terminal = Terminal(tf.config(frozenset()), store)
            mine = []
            for k in range(n // merchants):
                client = CardClient(InProcessChannel(applets[(i + k) % len(applets)]))
                mine.append(terminal.pay(client, 100, lambda: PIN, h.clock()))
            taken[m] = mine
    return h, taken


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--payments", type=int, default=10_000)
    ap.add_argument("--merchants", type=int, default=16)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--cards", type=int, default=200, help="cards the payments come from")
    ap.add_argument(
        "--pg",
        default=os.environ.get("JOINTPAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="jointpay-bench-http-"))
    with database("postgres", args.pg) as url, contextlib.ExitStack() as stack:
        assert url is not None  # a PostgreSQL URL, never the embedded default
        t0 = time.perf_counter()
        h, taken = setup(root, url, args.payments, args.merchants, args.cards)
        print(
            f"set up {sum(map(len, taken.values()))} payments in {time.perf_counter() - t0:.0f} s",
            file=sys.stderr,
        )
        everything = [p for ps in taken.values() for p in ps]
        raw1 = raw_rate(everything)
        cores = os.cpu_count() or 1
        _, base = stack.enter_context(served(root, url))

        latencies: list[float] = []
        lock = threading.Lock()
        start = threading.Barrier(len(taken) + 1)
        accepted = [0]

        def merchant(name: str, payments: list[TakenPayment]) -> None:
            tf = h.terminal_file(name)
            key = SigningKey.from_private_bytes(tf.sid, tf.signing_key)
            messages = [
                make_deposit(
                    key,
                    tf.bank_id,
                    tf.sid,
                    seq + 1,
                    int(time.time()),
                    build_batch(tf.bank_id, tf.sid, payments[i : i + args.batch]),
                )
                for seq, i in enumerate(range(0, len(payments), args.batch))
            ]
            with httpx.Client(timeout=300) as client:
                start.wait()
                for msg in messages:
                    t = time.perf_counter()
                    r = client.post(
                        f"{base}/v1/deposits",
                        json=msg,
                        headers={"Idempotency-Key": f"{tf.sid}-{msg['seq']}"},
                    )
                    dt = time.perf_counter() - t
                    r.raise_for_status()
                    with lock:
                        latencies.append(dt)
                        accepted[0] += r.json()["accepted"]

        threads = [threading.Thread(target=merchant, args=kv) for kv in taken.items()]
        for th in threads:
            th.start()
        start.wait()
        t = time.perf_counter()
        for th in threads:
            th.join()
        elapsed = time.perf_counter() - t
        assert accepted[0] == len(everything), (accepted[0], len(everything))
        token = (root / "admin.token").read_text().strip()
        audit = httpx.get(
            f"{base}/v1/admin/audit", headers={"Authorization": f"Bearer {token}"}
        ).json()
        assert audit["ok"], audit["violations"]
        rate = len(everything) / elapsed
        qs = statistics.quantiles(latencies, n=100)
        result = {
            "payments": len(everything),
            "merchants": len(taken),
            "batch": args.batch,
            "seconds": round(elapsed, 2),
            "deposit_per_s": round(rate),
            "raw_verify_per_s_one_core": round(raw1),
            "cores": cores,
            "deposit_over_raw_one_core": round(rate / raw1, 3),
            "deposit_over_raw_all_cores": round(rate / (raw1 * cores), 3),
            "deposit_latency_p50_ms": round(statistics.median(latencies) * 1e3, 1),
            "deposit_latency_p99_ms": round(qs[98] * 1e3, 1),
        }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for k, v in result.items():
            print(f"{k:>28}: {v}")
        print("target: deposit_over_raw_all_cores >= 0.5")


if __name__ == "__main__":
    main()
