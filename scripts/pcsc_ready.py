"""Exit 0 when pcscd answers and shows the vsmartcard-vpcd reader, 1 otherwise."""

from __future__ import annotations

import os
import sys

from jointpay.adapters.pcsc import PcscError, list_readers

READER = os.environ.get("JOINTPAY_TEST_READER", "Virtual PCD 00 00")


def main() -> int:
    verbose = "--verbose" in sys.argv
    try:
        names = [r.name for r in list_readers()]
    except PcscError as exc:
        if verbose:
            print(f"pcscd: {exc}", file=sys.stderr)
        return 1
    if READER not in names:
        if verbose:
            print(f"pcscd shows {names or 'no readers'}, not {READER!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
