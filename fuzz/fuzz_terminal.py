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

from world import NOW, PIN, build, record_payment

WORLD = build()
TERMINAL = WORLD.terminal(Path(tempfile.mkdtemp(prefix="jointpay-fuzz-term-")) / "t.db")


class Scripted:
    """A card that answers from the fuzz input, then falls mute."""

    extended_length = True

    def __init__(self, responses: list[bytes]) -> None:
        self.responses = responses

    def transmit(self, apdu: bytes) -> bytes:  # noqa: ARG002 - the card ignores it
        return self.responses.pop(0) if self.responses else b""


def split(data: bytes) -> tuple[int, list[bytes]]:
    if not data:
        return 0, []
    flags, rest, out = data[0], data[1:], []
    while len(rest) >= 2 and len(out) < 32:
        n = int.from_bytes(rest[:2], "big") % 4096
        out.append(rest[2 : 2 + n])
        rest = rest[2 + n :]
    return flags, out


def join(flags: int, responses: list[bytes]) -> bytes:
    return bytes([flags]) + b"".join(len(r).to_bytes(2, "big") + r for r in responses)


def test_one_input(data: bytes) -> None:
    flags, responses = split(data)
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


def seed_corpus() -> str:
    corpus = tempfile.mkdtemp(prefix="jointpay-fuzz-terminal-")
    responses = [r for _, r in record_payment(WORLD)]
    seeds = [join(12, responses), join(12, responses[:3]), join(0, [b"\x90\x00"] * 6)]
    for i, seed in enumerate(seeds):
        Path(corpus, f"seed-{i}").write_bytes(seed)
    return corpus


def main() -> None:
    argv = list(sys.argv)
    if not any(not a.startswith("-") for a in argv[1:]):
        argv.append(seed_corpus())
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
