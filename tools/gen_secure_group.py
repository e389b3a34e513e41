"""Derive jointpay's secure modp group from its published seed, or re-check one.

    python tools/gen_secure_group.py            # derive and write the JSON file
    python tools/gen_secure_group.py --check [FILE] [--first]

The seed is SHA-256 of a fixed public phrase (nothing up our sleeve); the search takes
the first acceptable q and then the first acceptable h, so the counters are not free
choices either. ``--check`` re-derives everything from the seed and counters
(``--first`` also proves no earlier counter was acceptable; that takes minutes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

from jointpay.crypto.errors import InvalidGroupError
from jointpay.crypto.fips186 import generate_secure_group, validate_secure_group

NAME = "jointpay-secure-2048-256"
PHRASE = b"jointpay/v1/secure-modp-2048-256/seed-0"
OUT = Path(__file__).resolve().parents[1] / "src/jointpay/crypto/groups" / f"{NAME}.json"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", nargs="?", const=str(OUT), metavar="FILE")
    ap.add_argument("--first", action="store_true", help="with --check: also prove minimality")
    args = ap.parse_args()
    if args.check:
        obj = json.loads(Path(args.check).read_text(encoding="utf-8"))
        try:
            grp = validate_secure_group(obj, check_first=args.first)
        except InvalidGroupError as exc:
            print(f"INVALID: {exc}")
            return 1
        expected_seed = hashlib.sha256(PHRASE).digest()
        if grp.name == NAME and grp.seed != expected_seed:
            print("INVALID: the seed is not SHA-256 of the published phrase")
            return 1
        print(f"OK: {grp.name} (q_counter {grp.q_counter}, h_counter {grp.h_counter})")
        return 0
    seed = hashlib.sha256(PHRASE).digest()
    t = time.time()
    grp = generate_secure_group(
        NAME,
        seed,
        progress=lambda c: print(f"h candidate {c} ({time.time() - t:.0f} s)", file=sys.stderr),
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(grp.to_json(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(
        f"wrote {OUT}: q_counter {grp.q_counter}, h_counter {grp.h_counter}, "
        f"{time.time() - t:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
