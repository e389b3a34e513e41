"""Fuzz the terminal's side: arbitrary card responses to a payment (atheris / libFuzzer).

Usage: python fuzz/fuzz_terminal.py [libFuzzer options, e.g. -runs=50000] [CORPUS_DIR]

The input is the sequence of response APDUs the "card" gives (each prefixed by a
2-byte length; when they run out the card falls mute). The terminal runs a payment
and then a recovery against them. Only the documented outcome types may come out:
:class:`PaymentDeclined` or a taken payment, and a taken payment must verify on its
own (its CARD-CERT under the bank's key, its PAYMENT-CERT under the joint key).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["jointpay"]):
    from jointpay.protocol.terminal import CardClient, PaymentDeclined, verify_taken

from world import NOW, PIN, build, join, record_payment, run_fuzzer, split

WORLD = build()
TERMINAL = WORLD.terminal(Path(tempfile.mkdtemp(prefix="jointpay-fuzz-term-")) / "t.db")


class Scripted:
    """A card that answers from the fuzz input, then falls mute."""

    extended_length = True

    def __init__(self, responses: list[bytes]) -> None:
        self.responses = responses

    def transmit(self, apdu: bytes) -> bytes:  # noqa: ARG002 - the card ignores it
        return self.responses.pop(0) if self.responses else b""


def test_one_input(data: bytes) -> None:
    flags, responses = split(data, 4096)
    client = CardClient(Scripted(responses))
    amount = 1 + (flags & 0x7F) * 100
    try:
        taken = TERMINAL.pay(client, amount, lambda: PIN, NOW)
    except PaymentDeclined:
        pass
    else:
        verify_taken([taken], TERMINAL.config.groups)
        assert taken.amount == amount
    try:
        recovered = TERMINAL.recover(client, NOW)
    except PaymentDeclined:
        return
    if recovered is not None:
        verify_taken([recovered], TERMINAL.config.groups)


def seeds() -> list[bytes]:
    """An honest payment's APDUs, and a few variations."""
    responses = [r for _, r in record_payment(WORLD)]
    return [join(12, responses), join(12, responses[:3]), join(0, [b"\x90\x00"] * 6)]


if __name__ == "__main__":
    run_fuzzer(test_one_input, seeds, "fuzz-terminal")
