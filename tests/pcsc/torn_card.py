"""A card that is pulled out (its process dies) at one chosen point of one command.

Usage: torn_card.py CARD_FILE K WHERE HOST:PORT

It serves the card file to the vpcd reader like ``jointpay card insert`` and dies with
``os._exit`` (no cleanup, no flush: as abrupt as SIGKILL or a pulled card) at the K-th
command APDU (SELECT counts):

* ``before``: the command has arrived; nothing of it ran;
* ``during``: the command ran and is writing the card's new state: the new file is
  fully written and fsynced but not yet renamed over the old one (only commands that
  write state reach this point; for the others the card never dies);
* ``after``: the command ran and its state is committed; the response is lost.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

import jointpay.adapters.card_file as card_file
from jointpay.adapters.vpcd import Endpoint, VirtualCard
from jointpay.protocol.card import CardApplet

DIED = 9


def main() -> None:
    path, k, where, endpoint = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    assert where in ("before", "during", "after")
    card = card_file.CardFile(path)
    count = 0

    def on_apdu(kind: str, _apdu: bytes) -> None:
        nonlocal count
        if kind == "command":
            count += 1
            if count == k and where == "before":
                os._exit(DIED)
        elif count == k and where == "after":
            os._exit(DIED)

    real_replace = os.replace

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if count == k and where == "during":
            os._exit(DIED)  # the temp file is written and fsynced; the rename never happens
        real_replace(src, dst)

    card_file.os.replace = replace  # type: ignore[assignment]

    def applet() -> CardApplet:
        return CardApplet(card.load(), card.save, secrets.token_bytes)

    with card.hold():
        vc = VirtualCard(applet, Endpoint.parse(endpoint), on_apdu=on_apdu)
        vc.connect()
        print("connected", flush=True)
        vc.serve()


if __name__ == "__main__":
    main()
