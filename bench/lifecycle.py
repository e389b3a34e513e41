"""Lifecycle speed: one offline payment in process, and a 10,000-payment deposit.

    python bench/lifecycle.py [--suite S] [--payments N] [--json]

* Payment: terminal + card in process, including the card's durable state write
  (write, fsync, rename) and the terminal's SQLite insert. Median of many payments.
  Target: under 5 ms for secp256k1.
* Deposit: N payments (100 cards) deposited into the embedded SQLite bank in one
  batch, in payments per second, beside the suite's raw single-core verify rate
  measured in the same run. Target: at least 60 % of it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from jointpay.adapters.card_file import InProcessChannel
from jointpay.crypto.certs import CardCert, SigningKey
from jointpay.crypto.schnorr import PaymentCert, verify
from jointpay.home import Home
from jointpay.protocol.deposit import make_deposit
from jointpay.protocol.terminal import CardClient, Terminal


def setup(root: Path, suite: str, cards: int) -> tuple[Home, list[str]]:
    h = Home(root, None)
    h.init_bank(suite=suite, group=None, currency="EUR", bank_id="bench-bank")
    numbers = []
    with h.bank() as bank:
        bank.open_account("holder", 10**12)
        for _ in range(cards):
            numbers.append(
                h.issue_card(
                    bank,
                    holder="holder",
                    pin="2468",
                    load=10**9,
                    mode="cash",
                    limit=0,
                    user_key="card",
                ).card_number
            )
        h.open_merchant(bank, "bench")
    return h, numbers


def bench(suite: str, n_payments: int, n_pay_timed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        n_cards = min(100, n_payments)
        h, cards = setup(Path(tmp), suite, n_cards)
        # one payment, in process: an open terminal, the card in its reader; durable
        # (the card's atomic fsync'd writes and the terminal's SQLite commit included)
        times = []
        with h.terminal("bench") as (tf, store):
            terminal = Terminal(tf.config(store.hotlist()), store)
            clients = [CardClient(InProcessChannel(h.card(c).applet())) for c in cards[:10]]
            for i in range(n_pay_timed):
                t = time.perf_counter()
                terminal.pay(clients[i % 10], 100, lambda: "2468", h.clock())
                times.append(time.perf_counter() - t)
        cold = []
        for i in range(20):  # the same through Home.pay, which reopens everything
            t = time.perf_counter()
            h.pay(cards[i % n_cards], "bench", 100, "2468")
            cold.append(time.perf_counter() - t)
        n_pay_timed += 20
        for i in range(n_payments - n_pay_timed):
            h.pay(cards[i % n_cards], "bench", 100, "2468")
        batch = h.export_batch("bench")
        # raw verify rate on one core, same payments
        sample = []
        for group in batch["cards"][:20]:
            cert = CardCert.decode(bytes.fromhex(group["cert"]))
            for p in group["payments"][:5]:
                sample.append(
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
        reps = max(1, 2000 // len(sample)) if suite == "secp256k1" else max(1, 300 // len(sample))
        t = time.perf_counter()
        for _ in range(reps):
            for cert, pc in sample:
                verify(cert.group, cert.joint_key, pc)
        raw = reps * len(sample) / (time.perf_counter() - t)
        with h.bank() as bank:
            # the bank's side alone: the signed deposit message in, the receipt out
            with h.terminal("bench") as (tf, store):
                key = SigningKey.from_private_bytes(tf.sid, tf.signing_key)
                message = make_deposit(
                    key, tf.bank_id, tf.sid, store.next_deposit_seq(), bank.clock(), batch
                )
            t = time.perf_counter()
            receipt = bank.deposit(message)
            dt = time.perf_counter() - t
            assert receipt["accepted"] == n_payments, receipt["rejected"]
            assert bank.audit().ok
    rate = n_payments / dt
    return {
        "suite": suite,
        "payment_median_ms": round(statistics.median(times) * 1000, 3),
        "payment_p90_ms": round(statistics.quantiles(times, n=10)[-1] * 1000, 3),
        "deposit_payments": n_payments,
        "deposit_seconds": round(dt, 3),
        "deposit_per_s": round(rate),
        "raw_verify_per_s": round(raw),
        "deposit_over_raw": round(rate / raw, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", action="append", help="suite(s) to run (default: both)")
    ap.add_argument("--payments", type=int, default=10_000)
    ap.add_argument("--timed", type=int, default=200, help="payments timed one by one")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results = [
        bench(s, args.payments, min(args.timed, args.payments))
        for s in (args.suite or ["secp256k1", "modp-2048-256"])
    ]
    if args.json:
        print(json.dumps(results))
        return
    for r in results:
        print(
            f"{r['suite']}: payment median {r['payment_median_ms']} ms "
            f"(p90 {r['payment_p90_ms']} ms); deposit of {r['deposit_payments']} payments "
            f"in {r['deposit_seconds']} s = {r['deposit_per_s']}/s, raw verify "
            f"{r['raw_verify_per_s']}/s, ratio {r['deposit_over_raw']:.2f}"
        )


if __name__ == "__main__":
    main()
