"""Schnorr signatures of the patent's form (FIG. 7), bit for bit as CONTRACT section 2.

The card signs with the joint secret ``x = S_U + S_C mod q``; everybody else verifies
with the joint key ``Y = g^-x``::

    w  uniform in [1, q-1], hedged        a = g^w
    b  = H(ser, spec, a)                  r = (b·x + w) mod q
    PAYMENT-CERT = {ser, spec, b, r}

    verify: a' = g^r · Y^b  and accept iff H(ser, spec, a') == b

(since ``g^r · Y^b = g^(bx + w) · g^(-xb) = g^w = a``).

The same construction, under other domain tags, signs the card's withdrawal
requests and proves possession of key contributions (:mod:`jointpay.crypto.joint`):
the tag is the first hashed field, so a signature made for one purpose never verifies
for another.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any, Final

from jointpay.crypto.encoding import lp, u64
from jointpay.crypto.errors import DecodeError, InvalidScalarError, InvalidSignature
from jointpay.crypto.group import SCALAR_LEN, Element, Group

PAYMENT_TAG: Final = b"jointpay/v1/payment"
NONCE_TAG: Final = b"jointpay/v1/nonce"
MAX_SER: Final = (1 << 64) - 1
MAX_SPEC: Final = 64 * 1024


class SecretScalar:
    """A secret exponent. It never appears in ``repr``, ``str`` or an exception.

    Python cannot promise to wipe memory; what we can promise is that no code path
    prints, logs or serialises the value by accident. Reading it is explicit
    (:meth:`reveal`), and only the card and the party that made a contribution do.
    """

    __slots__ = ("_value",)

    def __init__(self, value: int) -> None:
        self._value = value

    def reveal(self) -> int:
        return self._value

    def __repr__(self) -> str:
        return "SecretScalar(<hidden>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretScalar):
            return NotImplemented
        return hmac.compare_digest(
            self._value.to_bytes(64, "big"), other._value.to_bytes(64, "big")
        )

    def __hash__(self) -> int:  # equal secrets must not be usable as dict keys by value
        raise TypeError("SecretScalar is not hashable")

    def __reduce__(self) -> str:
        raise TypeError("SecretScalar is not picklable")


def challenge(group: Group, tag: bytes, y_enc: bytes, ser: int, spec: bytes, a_enc: bytes) -> int:
    """``H`` of CONTRACT section 2, under domain ``tag`` (``PAYMENT_TAG`` for payments).

    ``b = int_be(SHA-256(LP(tag) || LP(suite) || LP(enc(Y)) || u64(ser) || LP(spec)
    || LP(enc(a)))) mod q``.
    """
    digest = hashlib.sha256(_card_part(group, tag, y_enc) + _payment_part(ser, spec, a_enc))
    return int.from_bytes(digest.digest(), "big") % group.q


def _card_part(group: Group, tag: bytes, y_enc: bytes) -> bytes:
    return b"".join((lp(tag), lp(group.suite.encode("ascii")), lp(y_enc)))


def _payment_part(ser: int, spec: bytes, a_enc: bytes) -> bytes:
    return b"".join((u64(ser), lp(spec), lp(a_enc)))


def challenge_prefix(group: Group, tag: bytes, y_enc: bytes) -> Any:
    """SHA-256 fed with what :func:`challenge` hashes first, ``LP(tag) || LP(suite) ||
    LP(enc(Y))``: the same for every payment of a card, so a verifier of many hashes it
    once (:func:`challenge_after` takes a copy)."""
    return hashlib.sha256(_card_part(group, tag, y_enc))


def challenge_after(prefix: Any, q: int, ser: int, spec: bytes, a_enc: bytes) -> int:
    """:func:`challenge` from its :func:`challenge_prefix` (left as it was)."""
    h = prefix.copy()
    h.update(_payment_part(ser, spec, a_enc))
    return int.from_bytes(h.digest(), "big") % q


def derive_nonce(
    group: Group,
    secret: SecretScalar,
    tag: bytes,
    y_enc: bytes,
    ser: int,
    spec: bytes,
    aux: bytes,
) -> int:
    """A hedged nonce ``w``, uniform in ``[1, q-1]`` with no modulo bias.

    ``HMAC-SHA256(key = aux || x, msg = LP(NONCE_TAG) || LP(tag) || LP(suite) ||
    LP(enc(Y)) || u64(ser) || LP(SHA-256(spec)) || u32(i))`` for i = 0, 1, ... until the
    256-bit output lies in ``[1, q-1]`` (rejection sampling: exactly uniform given the
    PRF; both suites have a 256-bit q, so each try succeeds with probability > 1/2).

    Hedging, as RFC 9591 and BIP 340 do: ``aux`` is 32 fresh bytes from the OS CSPRNG, so
    a card whose state is restored from an old copy and asked to sign the same ``ser``
    still draws a fresh ``w``; and ``x`` and the message are mixed in, so a broken RNG
    alone does not leak the key through repeated or related nonces either.
    """
    if len(aux) != 32:
        raise ValueError("aux randomness is 32 bytes")
    key = aux + secret.reveal().to_bytes(SCALAR_LEN, "big")
    base = b"".join(
        (
            lp(NONCE_TAG),
            lp(tag),
            lp(group.suite.encode("ascii")),
            lp(y_enc),
            u64(ser),
            lp(hashlib.sha256(spec).digest()),
        )
    )
    q = group.q
    shift = 256 - q.bit_length()
    for i in range(1 << 16):
        out = hmac.new(key, base + i.to_bytes(4, "big"), hashlib.sha256).digest()
        w = int.from_bytes(out, "big") >> shift
        if 0 < w < q:
            return w
    raise AssertionError("nonce rejection sampling did not terminate")  # pragma: no cover


@dataclass(frozen=True, slots=True)
class PaymentCert:
    """PAYMENT-CERT = {ser, spec, b, r} (FIG. 7). ``b`` and ``r`` are integers mod q."""

    ser: int
    spec: bytes
    b: int
    r: int

    @property
    def b_bytes(self) -> bytes:
        return self.b.to_bytes(SCALAR_LEN, "big")

    @property
    def r_bytes(self) -> bytes:
        return self.r.to_bytes(SCALAR_LEN, "big")

    @classmethod
    def parse(cls, group: Group, ser: object, spec: object, b: object, r: object) -> PaymentCert:
        """Build from wire values, applying every range rule of CONTRACT section 2.

        ``b`` and ``r`` are 32-byte big-endian strings; ``0 <= b < q``, ``0 < r < q``,
        ``0 <= ser < 2^64``. Raises :class:`DecodeError` (or its subclass
        :class:`InvalidScalarError`) naming the rule that failed.
        """
        if not isinstance(ser, int) or isinstance(ser, bool) or not 0 <= ser <= MAX_SER:
            raise DecodeError("ser must be an integer in [0, 2^64)")
        if not isinstance(spec, bytes):
            raise DecodeError("spec must be bytes")
        if len(spec) > MAX_SPEC:
            raise DecodeError(f"spec is {len(spec)} bytes, limit {MAX_SPEC}")
        if not isinstance(b, bytes) or not isinstance(r, bytes):
            raise DecodeError("b and r must be bytes")
        try:
            b_int = group.decode_scalar(b)
        except InvalidScalarError as exc:
            raise InvalidScalarError(f"b: {exc}") from exc
        try:
            r_int = group.decode_scalar(r, allow_zero=False)
        except InvalidScalarError as exc:
            raise InvalidScalarError(f"r: {exc}") from exc
        return cls(ser, spec, b_int, r_int)


def sign(
    group: Group,
    secret: SecretScalar,
    y: Element,
    ser: int,
    spec: bytes,
    *,
    tag: bytes = PAYMENT_TAG,
    aux: bytes | None = None,
) -> tuple[PaymentCert, Element]:
    """Sign ``(ser, spec)`` with secret ``x`` whose key is ``y = g^-x`` (FIG. 7 steps 1-5).

    Returns the certificate and ``a = g^w`` (what a verifier recomputes as ``a'``).
    ``aux`` is for tests and vector generation only; production passes None and gets
    fresh OS randomness.
    """
    if not 0 <= ser <= MAX_SER:
        raise ValueError("ser must be in [0, 2^64)")
    if len(spec) > MAX_SPEC:
        raise ValueError(f"spec is longer than {MAX_SPEC} bytes")
    x = secret.reveal()
    if not 0 < x < group.q:
        raise InvalidScalarError("the signing secret is not in [1, q)")
    draw = aux if aux is not None else secrets.token_bytes(32)
    while True:
        w = derive_nonce(group, secret, tag, y.encoded, ser, spec, draw)
        a = group.g_pow_secret(w)
        b = challenge(group, tag, y.encoded, ser, spec, a.encoded)
        r = (b * x + w) % group.q
        if r != 0:  # r = 0 is refused by every verifier; happens with probability 1/q
            return PaymentCert(ser, spec, b, r), a
        draw = hashlib.sha256(b"jointpay/v1/retry" + draw).digest()  # pragma: no cover


def verify(group: Group, y: Element, cert: PaymentCert, *, tag: bytes = PAYMENT_TAG) -> Element:
    """Verify a PAYMENT-CERT under joint key ``y``; return ``a'`` or raise.

    ``y`` is an :class:`Element` and so already a valid non-identity group element.
    The range rules on ``b``, ``r`` and ``ser`` are checked again here so that a
    certificate built by hand cannot slip past them. ``a'`` is returned because the
    terminal keeps it as an (untrusted) hint for the bank's batch verification.
    """
    if y.group is not group:
        raise InvalidSignature("the key belongs to another group")
    if not 0 <= cert.b < group.q:
        raise InvalidSignature("b is not in [0, q)")
    if not 0 < cert.r < group.q:
        raise InvalidSignature("r is not in (0, q)")
    if not 0 <= cert.ser <= MAX_SER:
        raise InvalidSignature("ser is not in [0, 2^64)")
    a = group.combine_rooted(cert.r, y, cert.b)  # the same a'; its hint is cheaper
    if a is None or challenge(group, tag, y.encoded, cert.ser, cert.spec, a.encoded) != cert.b:
        raise InvalidSignature("the signature does not verify under this key")
    return a
