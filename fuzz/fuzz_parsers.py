"""Fuzz every parser of outside input (atheris / libFuzzer), one target at a time.

Usage: JOINTPAY_FUZZ_TARGET=NAME python fuzz/fuzz_parsers.py [libFuzzer options] [CORPUS]

Targets and the only exceptions each may raise (anything else is a crash):

===============  ==========================================================  ==================
target           parser                                                      may raise
===============  ==========================================================  ==================
apdu             ``Command.parse``, ``Response.parse``                       ApduFormatError
card_cert        ``CardCert.decode`` (both suites' groups), then ``verify``  CryptoError
merchant_cert    ``MerchantCert.decode``, then ``verify``                    CryptoError
bank_cert        ``BankCert.decode``, then ``verify``                        CryptoError
spec             ``PaymentSpec.decode``                                      DecodeError
payment_cert     ``PaymentCert.parse`` and ``verify`` on both suites         CryptoError
messages         PAY command/response, withdrawal request/ack/refusal        DecodeError
batch            ``loads_strict`` + ``parse_batch`` + every payment          BatchError
deposit          ``loads_strict`` + ``parse_deposit`` + ``verify``           CryptoError
http_bodies      ``loads_strict`` + every HTTP body model, and the scheme's  ValidationError,
                 signed messages (``open_body``)                             SchemeError
===============  ==========================================================  ==================

Whatever decodes must also encode back to the very same bytes (one encoding per
value), and a certificate that decodes must not verify under a key that did not sign
it. The seed corpus of each target is in ``fuzz/corpus/NAME/`` (written by
``--write-corpus [NAME ...]``), honest encodings made by the code itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["jointpay"]):
    from jointpay.adapters.card_file import InProcessChannel
    from jointpay.crypto.certs import (
        BankCert,
        BankRole,
        CardCert,
        MerchantCert,
        SigningKey,
        VerifyKey,
        issue_bank_cert,
    )
    from jointpay.crypto.errors import CryptoError, DecodeError
    from jointpay.crypto.group import get_group
    from jointpay.crypto.schnorr import PaymentCert, SecretScalar, sign, verify
    from jointpay.protocol.apdu import ApduFormatError, Command, Response
    from jointpay.protocol.card import CardState
    from jointpay.protocol.deposit import (
        BatchError,
        build_batch,
        loads_strict,
        make_deposit,
        parse_batch,
        parse_deposit,
    )
    from jointpay.protocol.messages import (
        AuthKind,
        PayCommand,
        PayResponse,
        WithdrawAck,
        WithdrawRefusal,
        WithdrawRequest,
    )
    from jointpay.protocol.spec import PaymentSpec
    from jointpay.protocol.terminal import CardClient
    from jointpay.service.scheme import (
        CLEAR_FORMAT,
        CLEAR_TAG,
        INTERBANK_FORMAT,
        INTERBANK_TAG,
        RELAY_FORMAT,
        RELAY_TAG,
        SETTLEMENT_FORMAT,
        SETTLEMENT_TAG,
        SchemeError,
        open_body,
        sign_body,
    )

from pydantic import ValidationError
from world import NOW, PIN, build, join, record_payment, split

from jointpay.api.clearing_server import MemberBody
from jointpay.api.server import (
    AccountBody,
    BlacklistBody,
    MerchantBody,
    OnlineCheckBody,
    RateBody,
    WithdrawBody,
)

CORPUS = Path(__file__).resolve().parent / "corpus"
SECP = get_group("secp256k1")
MODP = get_group("modp-2048-256")
OTHER_KEY = SigningKey.generate("nobody").verify_key  # signed nothing


def _apdu(data: bytes) -> None:
    for parse in (Command.parse, Response.parse):
        with contextlib.suppress(ApduFormatError):
            parse(data)


def _card_cert(data: bytes) -> None:
    try:
        cert = CardCert.decode(data)
    except CryptoError:
        return
    assert cert.encode() == data, "a CARD-CERT with two encodings"
    try:
        cert.verify(VerifyKey(cert.bank_id, OTHER_KEY.raw))
    except CryptoError:
        return
    raise AssertionError("a CARD-CERT verified under a key that never signed")


def _merchant_cert(data: bytes) -> None:
    try:
        cert = MerchantCert.decode(data)
    except CryptoError:
        return
    assert cert.encode() == data, "a MERCHANT-CERT with two encodings"
    try:
        cert.verify(VerifyKey(cert.bank_id, OTHER_KEY.raw), at=NOW)
    except CryptoError:
        return
    raise AssertionError("a MERCHANT-CERT verified under a key that never signed")


def _bank_cert(data: bytes) -> None:
    try:
        cert = BankCert.decode(data)
    except CryptoError:
        return
    assert cert.encode() == data, "a BANK-CERT with two encodings"
    try:
        cert.verify(OTHER_KEY, at=NOW, role=cert.role)
    except CryptoError:
        return
    raise AssertionError("a BANK-CERT verified under a key that never signed")


def _spec(data: bytes) -> None:
    try:
        spec = PaymentSpec.decode(data)
    except DecodeError:
        return
    assert spec.encode() == data, "a spec with two encodings"


def _payment_cert(data: bytes) -> None:
    flags, items = split(data, 4096)
    group = MODP if flags & 1 else SECP
    while len(items) < 5:
        items.append(b"")
    key, ser, spec, b, r = items[:5]
    try:
        y = group.decode(key)
        cert = PaymentCert.parse(group, int.from_bytes(ser[:9], "big"), spec, b, r)
        verify(group, y, cert)
    except CryptoError:
        return
    # only the seeds' own honest payments get here: they must still verify strictly
    assert cert.b < group.q
    assert 0 < cert.r < group.q


def _messages(data: bytes) -> None:
    _, items = split(data, 8192)
    body = items[0] if items else b""
    for decode in (
        PayCommand.decode,
        PayResponse.decode,
        WithdrawRequest.decode,
        WithdrawAck.decode,
        WithdrawRefusal.decode,
    ):
        try:
            msg = decode(body)
        except DecodeError:
            continue
        assert msg.encode() == body, f"{decode.__qualname__}: two encodings"


def _json(data: bytes) -> object:
    try:
        return loads_strict(data)
    except (BatchError, UnicodeDecodeError, ValueError, RecursionError):
        return None


def _batch(data: bytes) -> None:
    obj = _json(data)
    if obj is None:
        return
    try:
        batch = parse_batch(obj)
    except BatchError:
        return
    assert sum(1 for _ in batch.payments()) == batch.count


def _deposit(data: bytes) -> None:
    obj = _json(data)
    if obj is None:
        return
    try:
        req = parse_deposit(obj)
    except (BatchError, CryptoError):
        return
    try:
        req.verify(OTHER_KEY)
    except CryptoError:
        return
    raise AssertionError("a deposit verified under a key that never signed")


SCHEME_FORMATS = (
    (CLEAR_TAG, CLEAR_FORMAT),
    (INTERBANK_TAG, INTERBANK_FORMAT),
    (RELAY_TAG, RELAY_FORMAT),
    (SETTLEMENT_TAG, SETTLEMENT_FORMAT),
)
BODY_MODELS = (
    WithdrawBody,
    OnlineCheckBody,
    AccountBody,
    MerchantBody,
    BlacklistBody,
    RateBody,
    MemberBody,
)


def _http_bodies(data: bytes) -> None:
    """What the bank's and the clearing house's endpoints parse before any use case."""
    obj = _json(data)
    if obj is None:
        return
    for model in BODY_MODELS:
        with contextlib.suppress(ValidationError):
            model.model_validate(obj)
    for tag, fmt in SCHEME_FORMATS:
        try:
            open_body(OTHER_KEY, tag, obj, fmt)
        except SchemeError:
            continue
        raise AssertionError(f"a {fmt} message verified under a key that never signed")


TARGETS: dict[str, Callable[[bytes], None]] = {
    "apdu": _apdu,
    "card_cert": _card_cert,
    "merchant_cert": _merchant_cert,
    "bank_cert": _bank_cert,
    "spec": _spec,
    "payment_cert": _payment_cert,
    "messages": _messages,
    "batch": _batch,
    "deposit": _deposit,
    "http_bodies": _http_bodies,
}


def seeds() -> dict[str, list[bytes]]:
    """Honest encodings of every kind, from the fuzz world's bank, card and terminal."""
    world = build()
    pairs = record_payment(world)
    applet, _ = world.applet()
    taken = world.terminal(world.root / "seeds.db").pay(
        CardClient(InProcessChannel(applet)), 700, lambda: PIN, NOW
    )
    card_bytes = CardState.from_json(world.card_state).cert
    card = CardCert.decode(card_bytes)
    merchant = MerchantCert.decode(world.terminal_file.merchant_cert)
    bank_cert = issue_bank_cert(
        SigningKey.generate("scheme"),
        bank_id="fuzz-bank",
        public_key=SigningKey.generate("fuzz-bank").verify_key.raw,
        role=BankRole.BANK,
        not_before=NOW - 10,
        not_after=NOW + 10**6,
    )
    spec = taken.spec
    pcs = []
    for flags, group in ((0, SECP), (1, MODP)):
        x = SecretScalar(group.random_scalar())
        y = group.public_key(x.reveal())
        pc, _ = sign(group, x, y, 7, spec)
        pcs.append(join(flags, [y.encoded, (7).to_bytes(8, "big"), spec, pc.b_bytes, pc.r_bytes]))
    request = WithdrawRequest(
        "fuzz-bank", card.card_number, card.cert_id, 1, 0, 5, False, AuthKind.SIGNATURE
    )
    batch = build_batch("fuzz-bank", merchant.sid, [taken])
    key = SigningKey.generate(merchant.sid)
    deposit = make_deposit(key, "fuzz-bank", merchant.sid, 1, NOW, batch)
    return {
        "apdu": [c for c, _ in pairs] + [r for _, r in pairs],
        "card_cert": [card_bytes],
        "merchant_cert": [world.terminal_file.merchant_cert],
        "bank_cert": [bank_cert.encode()],
        "spec": [spec],
        "payment_cert": pcs,
        "messages": [
            join(0, [PayCommand(world.terminal_file.merchant_cert, spec, b"\x01" * 64).encode()]),
            join(0, [PayResponse(taken.ser, taken.b, taken.r).encode()]),
            join(0, [request.encode()]),
        ],
        "batch": [json.dumps(batch).encode()],
        "deposit": [json.dumps(deposit).encode()],
        "http_bodies": [
            json.dumps(b).encode()
            for b in (
                {"request": request.encode().hex()},
                {"card": card.card_number, "amount": 100, "issuer": "bank-b"},
                {"holder": "alice", "balance": 100},
                {"name": "Shop", "public_key": "ab" * 32},
                {"card": card.card_number, "reason": "stolen"},
                {"currency": "USD", "rate": "0.92", "effective_from": NOW},
                {"bank_cert": bank_cert.encode().hex(), "url": "http://127.0.0.1:1"},
                sign_body(
                    SigningKey.generate("ch-1"),
                    RELAY_TAG,
                    {
                        "format": RELAY_FORMAT,
                        "clearing_house": "ch-1",
                        "acquirer": "fuzz-bank",
                        "ref": "r",
                        "deposit": deposit,
                        "results": [],
                    },
                ),
            )
        ],
    }


def write_corpus(only: list[str]) -> None:
    """Write the seed corpora (of the targets named, or all of them)."""
    for name, items in seeds().items():
        if only and name not in only:
            continue
        folder = CORPUS / name
        folder.mkdir(parents=True, exist_ok=True)
        for i, data in enumerate(items):
            (folder / f"seed-{i}").write_bytes(data)


def main() -> None:
    if "--write-corpus" in sys.argv:
        write_corpus(sys.argv[sys.argv.index("--write-corpus") + 1 :])
        return
    name = os.environ.get("JOINTPAY_FUZZ_TARGET", "")
    if name not in TARGETS:
        raise SystemExit(f"set JOINTPAY_FUZZ_TARGET to one of {sorted(TARGETS)}")
    argv = list(sys.argv)
    if not any(not a.startswith("-") for a in argv[1:]):
        # a scratch copy of the checked-in corpus: libFuzzer adds what it finds to it
        scratch = Path(tempfile.mkdtemp(prefix=f"jointpay-fuzz-{name}-"))
        for seed in (CORPUS / name).glob("*"):
            shutil.copy(seed, scratch / seed.name)
        argv.append(str(scratch))
    atheris.Setup(argv, TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
