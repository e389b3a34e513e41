"""One payment through pcscd and the vsmartcard-vpcd reader, beside the same in process.

    python bench/pcsc.py [--payments N] [--json]

Needs pcscd running with the vpcd driver (``pcscd -f &`` as root, or the system
service). For each suite it issues a card in a temporary home, plugs it into the
reader (``VirtualCard`` in a thread of this process: the same code as
``jointpay card insert``), and times N payments, each one as a terminal does it for
a customer: connect to the card, SELECT, GET DATA CARD-CERT, GET DATA status,
VERIFY, PAY, verify the PAYMENT-CERT, store it, disconnect. The in-process figure is
the same terminal code on an ``InProcessChannel``. Target: under 20 ms (secp256k1).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from jointpay.adapters.pcsc import PcscChannel, PcscError, list_readers
from jointpay.adapters.vpcd import Endpoint, VirtualCard
from jointpay.crypto.group import SUITE_MODP, SUITE_SECP256K1
from jointpay.home import Home
from jointpay.protocol.terminal import CardClient, Terminal

PIN = "2468"


def world(suite: str) -> tuple[Home, str]:
    h = Home(Path(tempfile.mkdtemp(prefix="jointpay-bench-")), None)
    h.init_bank(suite=suite, group=None, currency="EUR", bank_id="bench-bank")
    with h.bank() as bank:
        bank.open_account("alice", 10**9)
        card = h.issue_card(
            bank, holder="alice", pin=PIN, load=10**8, mode="cash", limit=0, user_key="card"
        )
        h.open_merchant(bank, "Shop")
    return h, card.card_number


def percentiles(samples: list[float]) -> dict[str, float]:
    qs = statistics.quantiles(samples, n=10)
    return {"median_ms": statistics.median(samples) * 1e3, "p90_ms": qs[8] * 1e3}


def time_payments(h: Home, make_client: Any, n: int) -> list[float]:
    out = []
    with h.terminal("Shop") as (tf, store):
        terminal = Terminal(tf.config(store.hotlist()), store)
        for i in range(n + 3):
            t = time.perf_counter()
            with make_client() as client:
                terminal.pay(client, 100, lambda: PIN, h.clock())
            if i >= 3:  # warm-up
                out.append(time.perf_counter() - t)
    return out


class _InProcess:
    def __init__(self, h: Home, card: str) -> None:
        self.h, self.card = h, card

    def __enter__(self) -> CardClient:
        self._cm = self.h.card_client(self.card)
        return self._cm.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._cm.__exit__(None, None, None)


class _Reader:
    def __init__(self, reader: str) -> None:
        self.reader = reader

    def __enter__(self) -> CardClient:
        self._ch = PcscChannel(self.reader)
        return CardClient(self._ch)

    def __exit__(self, *exc: object) -> None:
        self._ch.close(reset=True)


def run(suite: str, n: int, reader: str, endpoint: Endpoint) -> dict[str, Any]:
    h, card = world(suite)
    in_process = time_payments(h, lambda: _InProcess(h, card), n)
    cf = h.card(card)
    with cf.hold():
        vc = VirtualCard(cf.applet, endpoint)
        vc.connect()
        t = threading.Thread(target=vc.serve, daemon=True)
        t.start()
        deadline = time.monotonic() + 10
        while not any(r.name == reader and r.card_present for r in list_readers()):
            if time.monotonic() > deadline:
                raise SystemExit(f"{reader} never showed the card")
            time.sleep(0.05)
        through = time_payments(h, lambda: _Reader(reader), n)
        apdus_before = vc.apdus
        with _Reader(reader) as client, h.terminal("Shop") as (tf, store):
            Terminal(tf.config(store.hotlist()), store).pay(client, 100, lambda: PIN, h.clock())
        per_payment = vc.apdus - apdus_before
        vc.stop()
        t.join(5)
    pc, ip = percentiles(through), percentiles(in_process)
    return {
        "suite": suite,
        "payments": n,
        "pcsc": pc,
        "in_process": ip,
        "pcsc_over_in_process": pc["median_ms"] / ip["median_ms"],
        "command_apdus_per_payment": per_payment,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--payments", type=int, default=200)
    ap.add_argument("--reader", default="Virtual PCD 00 00")
    ap.add_argument("--vpcd", default="127.0.0.1:35963")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    try:
        if not any(r.name == args.reader for r in list_readers()):
            raise PcscError(f"no reader {args.reader!r}")
    except PcscError as exc:
        sys.exit(f"pcscd with the vpcd reader is needed: {exc}")
    results = [
        run(s, args.payments, args.reader, Endpoint.parse(args.vpcd))
        for s in (SUITE_SECP256K1, SUITE_MODP)
    ]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'suite':<16}{'pcsc median':>13}{'p90':>9}{'in-process':>13}{'ratio':>8}{'APDUs':>7}")
    for r in results:
        print(
            f"{r['suite']:<16}{r['pcsc']['median_ms']:>10.2f} ms{r['pcsc']['p90_ms']:>6.2f} ms"
            f"{r['in_process']['median_ms']:>10.2f} ms{r['pcsc_over_in_process']:>8.2f}"
            f"{r['command_apdus_per_payment']:>7}"
        )
    print("target: secp256k1 through pcscd under 20 ms; 5 command APDUs = SELECT + 4")


if __name__ == "__main__":
    main()
