"""Joint keys (claims 1, 8, 9, 16): contributions, proofs of possession, aggregation.

Each contributor ``i`` (the holder's side, the bank, optionally a scheme or a
guarantor) has a secret ``S_i`` and public key ``P_i = g^-S_i``. The card's joint
secret is ``x = sum(S_i) mod q`` and its joint key ``Y = prod(P_i) = g^-x``.

The point of the patent (claim 9(c)) is that *no single party other than the card*
knows ``x``. This module keeps that rule by construction:

* A :class:`Contribution` is public: a role, ``P_i`` and a proof that its maker knows
  ``S_i``. The secret stays with whoever made it (and is written into the card).
* Nothing here adds secrets together. The only place that does is the card
  (:class:`jointpay.protocol.card` ``KeyStore``), which receives each share through its
  own command and never exports one.

Rogue keys. Summing public keys lets a party that speaks last choose
``P_rogue = g^-s · prod(P_others)^-1`` and so know the joint secret ``s`` alone. Each
contribution therefore carries a Schnorr proof of knowledge of its secret (a proof of
possession, PoP), under its own domain tag and bound to the suite, the card number and
the contributor's role; the bank verifies every proof before it signs a CARD-CERT.
A rogue contributor cannot prove knowledge of the discrete log of ``P_rogue`` without
knowing the others' secrets (the knowledge-of-secret-key model of Ristenpart and
Yilek, 2007). docs/crypto.md gives the argument and why we did not take MuSig2-style
coefficients.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from jointpay.crypto.encoding import Reader, Writer
from jointpay.crypto.errors import (
    CryptoError,
    DecodeError,
    InvalidElementError,
    InvalidProofError,
)
from jointpay.crypto.group import SCALAR_LEN, Element, Group
from jointpay.crypto.schnorr import PaymentCert, SecretScalar, derive_nonce, sign, verify

POP_TAG: Final = b"jointpay/v1/proof-of-possession"
MAX_CONTRIBUTIONS: Final = 8


class Role(StrEnum):
    """Who made a key contribution."""

    USER = "user"
    """The holder's side: made by the card, chosen by the holder, set by the
    manufacturer, or combined from shares of these (FIG. 4 step 240, claims 17-24)."""
    BANK = "bank"
    """The issuing bank's ``S_C`` (FIG. 4 step 250)."""
    SCHEME = "scheme"
    GUARANTOR = "guarantor"


_ROLES: Final = frozenset(r.value for r in Role)


def _pop_message(card_number: str, role: str) -> bytes:
    return Writer().text(card_number).text(role).finish()


@dataclass(frozen=True, slots=True)
class Contribution:
    """One public key contribution ``P_i = g^-S_i`` with its proof of possession."""

    role: str
    public: Element
    proof_c: int
    proof_s: int

    def encode(self) -> bytes:
        g = self.public.group
        return (
            Writer()
            .text(self.role)
            .blob(self.public.encoded)
            .raw(g.encode_scalar(self.proof_c))
            .raw(g.encode_scalar(self.proof_s))
            .finish()
        )

    @classmethod
    def read(cls, group: Group, reader: Reader, *, known: bool = False) -> Contribution:
        role = reader.text("contribution role", max_len=32)
        if role not in _ROLES:
            raise DecodeError(f"unknown contribution role {role!r}")
        public = group.decode(
            reader.blob("contribution key", max_len=group.element_len), known=known
        )
        c = group.decode_scalar(reader.raw(SCALAR_LEN, "proof c"))
        s = group.decode_scalar(reader.raw(SCALAR_LEN, "proof s"), allow_zero=False)
        return cls(role, public, c, s)


def prove_possession(
    group: Group,
    secret: SecretScalar,
    card_number: str,
    role: Role | str,
    *,
    aux: bytes | None = None,
) -> Contribution:
    """The contributor's side: ``P = g^-S`` and a Schnorr proof of knowledge of ``S``.

    The proof is a signature of the patent's form, under :data:`POP_TAG`, on the card
    number and role: ``t = g^k``, ``c = H(P, card, role, t)``, ``s = c·S + k``; it
    verifies as ``g^s · P^c = t``. Binding the card number and role stops a proof
    from being replayed into another card or another slot.
    """
    public = group.public_key(secret.reveal())
    cert, _ = sign(
        group,
        secret,
        public,
        0,
        _pop_message(card_number, str(role)),
        tag=POP_TAG,
        aux=aux if aux is not None else secrets.token_bytes(32),
    )
    return Contribution(str(role), public, cert.b, cert.r)


def verify_possession(group: Group, contribution: Contribution, card_number: str) -> None:
    """Raise :class:`InvalidProofError` unless the proof of possession holds."""
    cert = PaymentCert(
        0, _pop_message(card_number, contribution.role), contribution.proof_c, contribution.proof_s
    )
    try:
        verify(group, contribution.public, cert, tag=POP_TAG)
    except CryptoError as exc:
        raise InvalidProofError(
            f"the {contribution.role} contribution's proof of possession does not verify "
            f"for card {card_number}"
        ) from exc


def aggregate(
    group: Group,
    contributions: Sequence[Contribution],
    card_number: str,
    *,
    required_roles: Iterable[str] = (Role.USER, Role.BANK),
) -> Element:
    """Check every contribution and return the joint key ``Y = prod(P_i)``.

    Refuses: fewer than two contributions, more than :data:`MAX_CONTRIBUTIONS`, a role
    given twice, a missing required role, the same key twice, a bad proof, or a
    product that is the identity.
    """
    if not 2 <= len(contributions) <= MAX_CONTRIBUTIONS:
        raise InvalidProofError(
            f"a joint key needs 2 to {MAX_CONTRIBUTIONS} contributions, got {len(contributions)}"
        )
    roles = [c.role for c in contributions]
    if len(set(roles)) != len(roles):
        raise InvalidProofError("a role contributed more than once")
    missing = {str(r) for r in required_roles} - set(roles)
    if missing:
        raise InvalidProofError(f"missing contribution from {', '.join(sorted(missing))}")
    keys = [c.public.encoded for c in contributions]
    if len(set(keys)) != len(keys):
        raise InvalidProofError("two contributions have the same public key")
    for c in contributions:
        if c.public.group is not group:
            raise InvalidProofError(f"the {c.role} contribution is in another group")
        verify_possession(group, c, card_number)
    joint = group.product(c.public for c in contributions)
    if joint is None:
        raise InvalidElementError("the contributions multiply to the identity")
    return joint


def combine_shares(group: Group, shares: Iterable[SecretScalar]) -> SecretScalar:
    """Sum secret shares mod q *inside one holder*.

    Used by the card for its joint secret and for a user key made in part from
    several sources (claims 17, 19, 21, 23: e.g. the card's generator and the holder's
    choice). A party outside the card only ever sums shares it made itself.
    """
    total = sum(s.reveal() for s in shares) % group.q
    if total == 0:
        raise InvalidProofError("the shares sum to zero")
    return SecretScalar(total)


def derive_secret(group: Group, seed: bytes, label: bytes) -> SecretScalar:
    """A deterministic secret in ``[1, q)`` from a seed (tests and vectors only)."""
    value = derive_nonce(
        group,
        SecretScalar(1),
        b"jointpay/v1/derive-secret",
        b"",
        0,
        label,
        hashlib.sha256(seed).digest(),
    )
    return SecretScalar(value)
