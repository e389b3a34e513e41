"""The HTTP bank under a bounded load: 16 merchants depositing for 60 s (loopback).

    python bench/load.py [--merchants 16] [--seconds 60] [--batch 50] [--db postgres]
                         [--suite secp256k1] [--json]

A bank on a fresh PostgreSQL schema (or SQLite) with 100 cards; each merchant's
payments are signed beforehand, as cards sign them. ``jointpay bank serve`` runs as
its own process; from this second process, every merchant sends one signed deposit
of ``--batch`` payments after another, for ``--seconds``. Reported: payments and
deposits per second, p50/p99/max latency of one deposit, errors (any answer but 200,
any transport failure: must be 0), and the server's resident memory sampled every
second (start, peak, end). The audit must be clean at the end, and every payment
credited once.
"""

from __future__ import annotations

import sys
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]  # bench/http.py must not shadow the standard library's http
sys.path.append(str(Path(__file__).resolve().parent))  # after the stdlib: bench/deposit.py

import argparse
import contextlib
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from typing import Any

import httpx

from deposit import AMOUNT, database, open_card, proc_kb, served, sign_batch  # bench/deposit.py
from jointpay.crypto.certs import SigningKey
from jointpay.home import Home
from jointpay.protocol.deposit import make_deposit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--merchants", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--per-merchant", type=int, default=6000, help="payments signed beforehand")
    ap.add_argument("--db", default="postgres", choices=["postgres", "sqlite"])
    ap.add_argument("--suite", default="secp256k1", choices=["secp256k1", "modp-2048-256"])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="jointpay-load-"))
    try:
        with database(args.db) as url, contextlib.ExitStack() as stack:
            h = Home(root, url)
            h.init_bank(suite=args.suite, group=None, currency="EUR", bank_id="load-bank")
            now = int(time.time())
            names = [f"M{i:02d}" for i in range(args.merchants)]
            total = args.per_merchant * args.merchants
            with h.bank() as bank:
                load = AMOUNT * (total // 100 + 1)
                bank.open_account("holder", load * 100 + 10**6)
                cards = [open_card(bank, now, load) for _ in range(100)]
                tfs = [h.open_merchant(bank, m) for m in names]
                batches: dict[str, list[dict[str, Any]]] = {}
                for k, tf in enumerate(tfs):
                    base = k * args.per_merchant
                    batches[tf.name] = [
                        sign_batch(bank, tf.sid, cards, args.batch, base + i, now)
                        for i in range(0, args.per_merchant, args.batch)
                    ]
            pid, base_url = stack.enter_context(served(root, url))
            latencies: list[float] = []
            errors: list[str] = []
            credited: dict[str, int] = {}
            lock = threading.Lock()
            start = threading.Barrier(args.merchants + 1)
            stop = threading.Event()
            memory: list[tuple[float, int]] = []
            finished: list[float] = []

            def merchant(name: str) -> None:
                tf = h.terminal_file(name)
                key = SigningKey.from_private_bytes(tf.sid, tf.signing_key)
                mine = 0
                with httpx.Client(base_url=base_url, timeout=120) as client:
                    start.wait()
                    for seq, batch in enumerate(batches[name], start=1):
                        if stop.is_set():
                            break
                        msg = make_deposit(key, tf.bank_id, tf.sid, seq, int(time.time()), batch)
                        t = time.perf_counter()
                        try:
                            r = client.post("/v1/deposits", json=msg)
                        except httpx.TransportError as exc:
                            with lock:
                                errors.append(f"{name}: {exc}")
                            break
                        dt = time.perf_counter() - t
                        with lock:
                            if r.status_code != 200 or r.json()["rejected"]:
                                errors.append(f"{name} seq {seq}: {r.status_code} {r.text[:200]}")
                            else:
                                latencies.append(dt)
                                mine += int(r.json()["accepted"])
                with lock:
                    credited[name] = mine
                    finished.append(time.perf_counter())

            def sampler(t0: float) -> None:
                while not stop.is_set():
                    memory.append((time.perf_counter() - t0, proc_kb(pid, "VmRSS")))
                    time.sleep(1.0)

            threads = [threading.Thread(target=merchant, args=(n,)) for n in names]
            for th in threads:
                th.start()
            start.wait()
            t0 = time.perf_counter()
            sampling = threading.Thread(target=sampler, args=(t0,))
            sampling.start()
            time.sleep(args.seconds)
            stop.set()
            for th in threads:
                th.join()
            # a merchant that ran out of payments before the end stops the clock early
            elapsed = min(time.perf_counter(), max(finished)) - t0
            exhausted = any(t - t0 < args.seconds for t in finished)
            sampling.join()
            token = (root / "admin.token").read_text().strip()
            audit = httpx.get(
                f"{base_url}/v1/admin/audit", headers={"Authorization": f"Bearer {token}"}
            ).json()
            with h.bank() as bank:
                for tf in tfs:
                    bal = bank.account(bank.merchant(tf.name).account_id).balance
                    if bal != credited[tf.name] * AMOUNT:
                        errors.append(
                            f"{tf.name}: credited {bal}, receipts say {credited[tf.name]}"
                        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    paid = sum(credited.values())
    qs = (
        statistics.quantiles(latencies, n=100, method="inclusive")
        if len(latencies) > 1
        else [0.0] * 99
    )
    result = {
        "suite": args.suite,
        "db": args.db,
        "merchants": args.merchants,
        "batch": args.batch,
        "seconds": round(elapsed, 1),
        "payments": paid,
        "payments_per_s": round(paid / elapsed),
        "deposits_per_s": round(len(latencies) / elapsed, 1),
        "latency_p50_ms": round(statistics.median(latencies) * 1e3, 1) if latencies else None,
        "latency_p99_ms": round(qs[98] * 1e3, 1),
        "latency_max_ms": round(max(latencies) * 1e3, 1) if latencies else None,
        "errors": len(errors),
        "ran_out_of_payments": exhausted,
        "audit_ok": bool(audit.get("ok")),
        "server_rss_mb": {
            "start": round(memory[0][1] / 1024, 1) if memory else None,
            "peak": round(max(m for _, m in memory) / 1024, 1) if memory else None,
            "end": round(memory[-1][1] / 1024, 1) if memory else None,
            "every_10s": [round(m / 1024, 1) for t, m in memory[::10]],
        },
        "cores": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for k, v in result.items():
            print(f"{k:>16}: {v}")
        for e in errors[:10]:
            print("error:", e)
    if errors or not result["audit_ok"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
