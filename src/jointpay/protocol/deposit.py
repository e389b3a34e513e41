"""Deposit messages (FIG. 9): the merchant's batch, its signed deposit, the bank's receipt.

* A **batch** is what ``merchant export`` writes: the payments a terminal took, grouped
  by CARD-CERT so each certificate travels once (step 640), each payment with the
  terminal's ``a'`` as an untrusted hint. It is plain data; every payment in it is
  self-authenticating (bank-signed CARD-CERT, card-signed PAYMENT-CERT).
* A **deposit request** wraps a batch for one deposit session: the bank, the S_id,
  a per-merchant sequence number and a timestamp (freshness, "protected by using
  freshness identifier, such as time stamp and sequence number, and integrity check
  value, such as digital signature"), signed with the merchant's key.
* A **receipt** is the bank's signed answer: the batch digest (the patent's
  "checksum" receipt) and the status of every payment (step 710).
* An **on-line check** (FIG. 8's optional clearance) is the merchant's signed
  question about one card and amount, fresh by its timestamp: the bank answers
  only its own service providers.

Digests and signatures are over the canonical JSON of the object (keys sorted, no
whitespace, integers and strings only; floats are refused on parse), so the JSON a
party received is exactly what it can check.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import orjson

from jointpay.crypto.certs import SigningKey, VerifyKey, check_card_number, check_ident
from jointpay.crypto.errors import DecodeError, InvalidSignature
from jointpay.protocol.terminal import TakenPayment

BATCH_FORMAT: Final = "jointpay-batch/1"
DEPOSIT_FORMAT: Final = "jointpay-deposit/1"
RECEIPT_FORMAT: Final = "jointpay-receipt/1"
ONLINE_CHECK_FORMAT: Final = "jointpay-online-check/1"
DEPOSIT_TAG: Final = b"jointpay/v1/deposit"
ONLINE_CHECK_TAG: Final = b"jointpay/v1/online-check"
RECEIPT_TAG: Final = b"jointpay/v1/receipt"
MAX_BATCH_PAYMENTS: Final = 200_000
MAX_BATCH_CARDS: Final = 200_000
MAX_CERT_HEX: Final = 64 * 1024
"""A CARD-CERT in a batch is at most 32 KiB (the largest real one is under 2 KiB)."""

REASONS: Final = (
    "malformed",
    "unknown_card",
    "bad_cert",
    "expired_cert",
    "blacklisted",
    "bad_signature",
    "wrong_merchant",
    "duplicate",
    "stale",
    "insufficient_balance",
    "currency_mismatch",
    "future_time",
    "clearing_unavailable",
)

RETRYABLE_REASONS: Final = frozenset({"clearing_unavailable"})
"""Rejections that are not final (another bank's card whose clearing house or issuer
did not answer): the terminal keeps the payment for its next deposit."""


class BatchError(DecodeError):
    """A batch or deposit message is unusable as a whole (not a per-payment problem)."""


_ORJSON_OPTS: Final = (
    orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
)


def canonical_json(obj: object) -> bytes:
    """The one byte encoding of a JSON value that jointpay digests and signs.

    It is the standard library's ``json.dumps(obj, sort_keys=True, separators=(",",
    ":"), ensure_ascii=True)``, byte for byte. ``orjson`` computes it about seven
    times as fast (a 10,000-payment batch in 9 ms instead of 64), and its answer is
    taken when it cannot differ: every byte printable ASCII or an escape, that is no
    byte above 0x7e (``json`` escapes those, ``orjson`` writes them raw), and no
    integer beyond 64 bits nor a key that is not a string (``orjson`` refuses those).
    Anything else goes to ``json``. The values are those of jointpay's messages:
    strings, integers, booleans, null, lists and objects, never floats (``orjson``
    and ``json`` print exponents differently; :func:`loads_strict` refuses floats,
    and no message we build has one). A property test holds the two to the same
    bytes.
    """
    try:
        out = orjson.dumps(obj, option=_ORJSON_OPTS)
    except TypeError:  # orjson.JSONEncodeError: a big integer, a non-string key, ...
        return _canonical_json_std(obj)
    if out.isascii() and b"\x7f" not in out:
        return out
    return _canonical_json_std(obj)


def _canonical_json_std(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _no_floats(value: str) -> Any:
    raise BatchError(f"numbers must be integers, got {value!r}")


def loads_strict(text: str | bytes) -> Any:
    """Parse JSON refusing floats, NaN, duplicate keys, and absurd nesting."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise BatchError(f"duplicate key {k!r}")
            out[k] = v
        return out

    try:
        return json.loads(
            text, parse_float=_no_floats, parse_constant=_no_floats, object_pairs_hook=pairs
        )
    except BatchError:
        raise
    except RecursionError as exc:
        raise BatchError("JSON nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an int of 4,301 digits
        raise BatchError(f"not valid JSON: {exc}") from exc


def digest(obj: object) -> bytes:
    return hashlib.sha256(canonical_json(obj)).digest()


def _field(obj: dict[str, Any], key: str, kind: type, what: str) -> Any:
    if key not in obj:
        raise BatchError(f"{what}: missing {key!r}")
    v = obj[key]
    if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
        raise BatchError(f"{what}: {key!r} must be {kind.__name__}")
    return v


# --------------------------------------------------------------------------------------
# batch
# --------------------------------------------------------------------------------------


def build_batch(bank_id: str, sid: str, payments: Iterable[TakenPayment]) -> dict[str, Any]:
    """The batch file of ``merchant export``: payments grouped by CARD-CERT."""
    groups: dict[bytes, dict[str, Any]] = {}
    for p in payments:
        g = groups.setdefault(p.cert_id, {"cert": p.card_cert.hex(), "payments": []})
        g["payments"].append(
            {
                "ser": p.ser,
                "spec": p.spec.hex(),
                "b": p.b.hex(),
                "r": p.r.hex(),
                "hint": p.hint.hex(),
            }
        )
    return {"format": BATCH_FORMAT, "bank_id": bank_id, "sid": sid, "cards": list(groups.values())}


@dataclass(frozen=True, slots=True)
class RawPayment:
    """One payment of a batch, as received: checked field by field by the bank."""

    index: int
    cert: object
    ser: object
    spec: object
    b: object
    r: object
    hint: object


_Row = tuple[object, object, object, object, object]
"""A payment of a card group as received: ``(ser, spec, b, r, hint)``."""


@dataclass(frozen=True, slots=True)
class Batch:
    bank_id: str
    sid: str
    cards: list[dict[str, Any]]
    count: int

    def payments(self) -> Iterator[RawPayment]:
        for i, (cert, ser, spec, b, r, hint) in enumerate(self.rows()):
            yield RawPayment(i, cert, ser, spec, b, r, hint)

    def rows(self) -> Iterator[tuple[object, object, object, object, object, object]]:
        """Each payment as ``(cert, ser, spec, b, r, hint)``, the values as received
        (None where missing), in batch order: :meth:`payments` without an object per
        payment."""
        for cert, payments in self.groups():
            for row in payments:
                yield (cert, *row)

    def groups(self) -> Iterator[tuple[object, Iterator[_Row]]]:
        """Each card group as ``(cert, its payments)``, each payment as ``(ser, spec,
        b, r, hint)``, the values as received (None where missing), in batch order: for
        the bank's deposit of many thousands, which judges a group's CARD-CERT once."""
        for card in self.cards:
            yield card.get("cert"), _group_rows(card.get("payments", []))


def _group_rows(payments: list[Any]) -> Iterator[_Row]:
    missing: _Row = (None, None, None, None, None)
    for p in payments:
        if isinstance(p, dict):
            get = p.get
            yield get("ser"), get("spec"), get("b"), get("r"), get("hint")
        else:
            yield missing


def _ident(value: str, what: str) -> str:
    """An identifier of the envelope; a bad one makes the whole message unusable."""
    try:
        return check_ident(value, what)
    except DecodeError as exc:
        raise BatchError(str(exc)) from exc


def parse_batch(obj: object) -> Batch:
    """Check a batch's envelope. Per-payment defects are left for the bank to report."""
    if not isinstance(obj, dict):
        raise BatchError("a batch is a JSON object")
    if obj.get("format") != BATCH_FORMAT:
        raise BatchError(f"not a jointpay batch (format must be {BATCH_FORMAT!r})")
    bank_id = _ident(_field(obj, "bank_id", str, "batch"), "bank id")
    sid = _ident(_field(obj, "sid", str, "batch"), "S_id")
    cards = _field(obj, "cards", list, "batch")
    if len(cards) > MAX_BATCH_CARDS:
        raise BatchError(f"batch has {len(cards)} card groups (limit {MAX_BATCH_CARDS})")
    count = 0
    for card in cards:
        if not isinstance(card, dict) or not isinstance(card.get("payments"), list):
            raise BatchError("each card group is an object with a 'payments' list")
        cert = card.get("cert")
        if isinstance(cert, str) and len(cert) > MAX_CERT_HEX:
            raise BatchError(f"a CARD-CERT is at most {MAX_CERT_HEX // 2} bytes")
        count += len(card["payments"])
    if count > MAX_BATCH_PAYMENTS:
        raise BatchError(f"batch has {count} payments (limit {MAX_BATCH_PAYMENTS})")
    return Batch(bank_id, sid, cards, count)


# --------------------------------------------------------------------------------------
# deposit request
# --------------------------------------------------------------------------------------


def _deposit_tbs(bank_id: str, sid: str, seq: int, time: int, batch_digest: bytes) -> bytes:
    return canonical_json(
        {
            "bank_id": bank_id,
            "sid": sid,
            "seq": seq,
            "time": time,
            "batch_digest": batch_digest.hex(),
            "format": DEPOSIT_FORMAT,
        }
    )


def make_deposit(
    key: SigningKey, bank_id: str, sid: str, seq: int, time: int, batch: dict[str, Any]
) -> dict[str, Any]:
    """The merchant's signed deposit message for one session (FIG. 9 steps 600-640)."""
    d = digest(batch)
    sig = key.sign(DEPOSIT_TAG, _deposit_tbs(bank_id, sid, seq, time, d))
    return {
        "format": DEPOSIT_FORMAT,
        "bank_id": bank_id,
        "sid": sid,
        "seq": seq,
        "time": time,
        "batch": batch,
        "signature": sig.hex(),
    }


@dataclass(frozen=True, slots=True)
class DepositRequest:
    bank_id: str
    sid: str
    seq: int
    time: int
    batch: Batch
    batch_digest: bytes
    signature: bytes

    def verify(self, merchant_key: VerifyKey) -> None:
        merchant_key.verify(
            DEPOSIT_TAG,
            _deposit_tbs(self.bank_id, self.sid, self.seq, self.time, self.batch_digest),
            self.signature,
        )


def parse_deposit(obj: object) -> DepositRequest:
    if not isinstance(obj, dict):
        raise BatchError("a deposit is a JSON object")
    if obj.get("format") != DEPOSIT_FORMAT:
        raise BatchError(f"not a jointpay deposit (format must be {DEPOSIT_FORMAT!r})")
    bank_id = _ident(_field(obj, "bank_id", str, "deposit"), "bank id")
    sid = _ident(_field(obj, "sid", str, "deposit"), "S_id")
    seq = _field(obj, "seq", int, "deposit")
    time = _field(obj, "time", int, "deposit")
    if not 0 < seq < 1 << 63 or not 0 <= time < 1 << 63:
        raise BatchError("deposit: seq or time out of range")
    raw_batch = obj.get("batch")
    batch = parse_batch(raw_batch)
    if batch.bank_id != bank_id or batch.sid != sid:
        raise BatchError("deposit: the batch names another bank or service provider")
    try:
        sig = bytes.fromhex(_field(obj, "signature", str, "deposit"))
    except ValueError as exc:
        raise BatchError("deposit: signature is not hex") from exc
    return DepositRequest(bank_id, sid, seq, time, batch, digest(raw_batch), sig)


# --------------------------------------------------------------------------------------
# on-line check (FIG. 8, optional)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OnlineCheck:
    """A service provider's signed question: would the bank clear ``amount`` on
    ``card`` now? ``issuer`` names the card's bank when it is another bank of the
    scheme (the merchant's bank asks it through a clearing house)."""

    bank_id: str
    sid: str
    card: str
    amount: int
    issuer: str | None
    time: int
    signature: bytes = b""
    tbs: bytes = b""
    """The signed bytes of a parsed message: the canonical JSON of its fields as they
    came, the signature's aside (``issuer`` absent, or null, as the signer sent it)."""

    def body(self) -> dict[str, Any]:
        """The message without its signature, as we sign it (no ``issuer`` for a card
        of the asked bank)."""
        body: dict[str, Any] = {
            "format": ONLINE_CHECK_FORMAT,
            "bank_id": self.bank_id,
            "sid": self.sid,
            "card": self.card,
            "amount": self.amount,
            "time": self.time,
        }
        if self.issuer is not None:
            body["issuer"] = self.issuer
        return body

    def signed(self, key: SigningKey) -> dict[str, Any]:
        sig = key.sign(ONLINE_CHECK_TAG, canonical_json(self.body()))
        return {**self.body(), "signature": sig.hex()}

    def verify(self, merchant_key: VerifyKey) -> None:
        signed = self.tbs or canonical_json(self.body())
        merchant_key.verify(ONLINE_CHECK_TAG, signed, self.signature)


def parse_online_check(obj: object) -> OnlineCheck:
    """Check an on-line check's form (not its signature: the bank holds the key)."""
    what = "online check"
    if not isinstance(obj, dict):
        raise BatchError("an online check is a JSON object")
    if obj.get("format") != ONLINE_CHECK_FORMAT:
        raise BatchError(f"not a jointpay online check (format must be {ONLINE_CHECK_FORMAT!r})")
    known = {"format", "bank_id", "sid", "card", "amount", "issuer", "time", "signature"}
    if unknown := sorted(set(obj) - known):
        raise BatchError(f"{what}: unknown field {unknown[0]!r}")
    bank_id = _ident(_field(obj, "bank_id", str, what), "bank id")
    sid = _ident(_field(obj, "sid", str, what), "S_id")
    try:
        card = check_card_number(_field(obj, "card", str, what))
    except DecodeError as exc:
        raise BatchError(f"{what}: {exc}") from exc
    amount = _field(obj, "amount", int, what)
    time = _field(obj, "time", int, what)
    if not 0 < amount < 1 << 63 or not 0 <= time < 1 << 63:
        raise BatchError(f"{what}: amount or time out of range")
    issuer = obj.get("issuer")
    if issuer is not None:
        issuer = _ident(_field(obj, "issuer", str, what), "issuer")
    try:
        sig = bytes.fromhex(_field(obj, "signature", str, what))
    except ValueError as exc:
        raise BatchError(f"{what}: signature is not hex") from exc
    tbs = canonical_json({k: v for k, v in obj.items() if k != "signature"})
    return OnlineCheck(bank_id, sid, card, amount, issuer, time, sig, tbs)


# --------------------------------------------------------------------------------------
# receipt
# --------------------------------------------------------------------------------------


def sign_receipt(key: SigningKey, body: dict[str, Any]) -> dict[str, Any]:
    body = {**body, "format": RECEIPT_FORMAT}
    return {**body, "signature": key.sign(RECEIPT_TAG, canonical_json(body)).hex()}


def verify_receipt(bank_key: VerifyKey, receipt: dict[str, Any]) -> None:
    """Raise :class:`InvalidSignature` unless the bank signed this receipt."""
    body = {k: v for k, v in receipt.items() if k != "signature"}
    sig = receipt.get("signature")
    if not isinstance(sig, str):
        raise InvalidSignature("receipt has no signature")
    try:
        raw = bytes.fromhex(sig)
    except ValueError as exc:
        raise InvalidSignature("receipt signature is not hex") from exc
    bank_key.verify(RECEIPT_TAG, canonical_json(body), raw)
