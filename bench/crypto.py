"""Sign and verify rates per suite, beside the raw library rate they are built on.

    python bench/crypto.py [--seconds S] [--json]

Raw rates, measured in the same run on one core:
* modp: a bare gmpy2 ``powmod`` pair ``g^r · Y^b mod p`` (what verification costs);
* secp256k1: ``r·G + b·Y`` through coincurve's public API (``from_secret`` +
  ``multiply`` + ``combine_keys``).
Our verify includes the challenge hash, range checks and encoding; the target is at
least 90 % of the raw rate.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import time
from collections.abc import Callable

import gmpy2
from coincurve import PrivateKey, PublicKey

from jointpay.crypto.group import ModpGroup, get_group
from jointpay.crypto.schnorr import SecretScalar, sign, verify


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Operations per second: the median of five timed rounds."""
    n = 1
    while True:  # calibrate a round to ~seconds/5
        t = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t
        if dt > seconds / 10:
            break
        n *= 2
    per_round = max(1, int(n * (seconds / 5) / dt))
    rates = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(per_round):
            fn()
        rates.append(per_round / (time.perf_counter() - t))
    return statistics.median(rates)


def bench_suite(suite: str, seconds: float) -> dict[str, float]:
    group = get_group(suite)
    x = SecretScalar(group.random_scalar())
    y = group.public_key(x.reveal())
    spec = secrets.token_bytes(120)
    cert, _ = sign(group, x, y, 7, spec)
    ours_sign = rate(lambda: sign(group, x, y, 7, spec), seconds)
    ours_verify = rate(lambda: verify(group, y, cert), seconds)
    r, b = secrets.randbelow(group.q), secrets.randbelow(group.q)
    if isinstance(group, ModpGroup):
        p, g, yy = gmpy2.mpz(group.p), gmpy2.mpz(group.g), y.native
        raw = rate(lambda: gmpy2.powmod(g, r, p) * gmpy2.powmod(yy, b, p) % p, seconds)
        raw_name = "gmpy2 powmod pair"
    else:
        yk = PrivateKey().public_key
        rb, bb = r.to_bytes(32, "big"), b.to_bytes(32, "big")
        raw = rate(
            lambda: PublicKey.combine_keys([PublicKey.from_secret(rb), yk.multiply(bb)]), seconds
        )
        raw_name = "coincurve from_secret+multiply+combine"
    return {
        "sign_per_s": round(ours_sign),
        "verify_per_s": round(ours_verify),
        "raw_per_s": round(raw),
        "raw": raw_name,
        "verify_over_raw": round(ours_verify / raw, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out = {suite: bench_suite(suite, args.seconds) for suite in ("secp256k1", "modp-2048-256")}
    if args.json:
        print(json.dumps(out, sort_keys=True))
        return
    print(f"{'suite':<15} {'sign/s':>9} {'verify/s':>9} {'raw/s':>9} {'verify/raw':>10}  raw")
    for suite, f in out.items():
        print(
            f"{suite:<15} {f['sign_per_s']:>9} {f['verify_per_s']:>9} {f['raw_per_s']:>9} "
            f"{f['verify_over_raw']:>10.2f}  {f['raw']}"
        )


if __name__ == "__main__":
    main()
