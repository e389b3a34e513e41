"""Fuzz the card applet with arbitrary APDU sequences (atheris / libFuzzer).

Usage: python fuzz/fuzz_card.py [libFuzzer options, e.g. -runs=50000] [CORPUS_DIR]

Each input is a flags byte and a sequence of APDUs, each prefixed by a 2-byte length.
Flags bit 0 sends a correct SELECT first and bit 1 a correct PIN, so mutations reach
the commands behind them. After every input:

* ``process`` never raised (the applet answers everything with a status word);
* every response is at least a status word, and a 9000 only to well-formed commands;
* the card's money did not move: balance, next ser, seq, CARD-CERT, keys and phase
  are what the bank issued (no input can carry a valid terminal signature or bank
  acknowledgement), and what was persisted is what the applet holds.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["jointpay"]):
    from jointpay.crypto.certs import CardCert
    from jointpay.crypto.group import get_group
    from jointpay.crypto.schnorr import PaymentCert, verify
    from jointpay.protocol.apdu import Response
    from jointpay.protocol.card import AID, CardState, payment_from_last
    from jointpay.protocol.spec import PaymentSpec

from world import PIN, build, join, record_payment, run_fuzzer, split

WORLD = build()
SELECT = bytes([0x00, 0xA4, 0x04, 0x00, len(AID)]) + AID
VERIFY = bytes([0x00, 0x20, 0x00, 0x80, len(PIN)]) + PIN.encode()
FROZEN = (
    "seq",
    "cert",
    "bank_key",
    "master_key",
    "pin_key",
    "pin_hash",
    "phase",
    "user_secret",
    "other_secrets",
    "card_number",
    "currency",
    "mode",
)


def check_payment(before: CardState, after: CardState, apdu: bytes, sw: int) -> None:
    """A change of balance or ser is one PAY that succeeded, and it checks independently."""
    assert len(apdu) >= 2, "money moved on a stub of a command"
    assert apdu[1] == 0x50, "money moved outside PAY"
    assert sw == 0x9000 or sw >> 8 == 0x61, "money moved on a refused PAY"
    assert after.next_ser == before.next_ser + 1, "ser not advanced by exactly one"
    spec_bytes, paid = payment_from_last(after.last_payment)
    assert paid.ser == before.next_ser, "the payment did not use the next ser"
    spec = PaymentSpec.decode(spec_bytes)
    assert before.balance - after.balance == spec.amount, "debit is not the signed amount"
    cert = CardCert.decode(after.cert, get_group)
    pc = PaymentCert.parse(cert.group, paid.ser, spec_bytes, paid.b, paid.r)
    verify(cert.group, cert.joint_key, pc)  # raises if the PAYMENT-CERT is not valid


def test_one_input(data: bytes) -> None:
    flags, apdus = split(data, 1024)
    applet, saved = WORLD.applet()
    issued = {k: getattr(applet.state, k) for k in FROZEN}
    prefix = ([SELECT] if flags & 1 else []) + ([VERIFY] if flags & 2 else [])
    for apdu in prefix + apdus:
        before = applet.state
        raw = applet.process(apdu)
        response = Response.parse(raw)  # at least a status word
        if len(apdu) < 4:
            assert not response.ok, "a command shorter than a header was accepted"
        after = applet.state
        if (after.balance, after.next_ser) != (before.balance, before.next_ser):
            check_payment(before, after, apdu, response.sw)
    now = {k: getattr(applet.state, k) for k in FROZEN}
    changed = sorted(k for k in FROZEN if now[k] != issued[k])
    assert not changed, f"fields changed by garbage: {changed}"  # names only: no secrets
    if saved:
        assert saved[-1] == applet.state, "what was persisted is not what the card holds"


def seeds() -> list[bytes]:
    """An honest payment's APDUs, and a few variations."""
    commands = [c for c, _ in record_payment(WORLD)]
    return [join(0, commands), join(3, commands[1:]), join(1, commands[1:3])]


if __name__ == "__main__":
    run_fuzzer(test_one_input, seeds, "fuzz-card")
