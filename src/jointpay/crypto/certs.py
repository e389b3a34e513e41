"""Bank keys and the certificates the bank signs: CARD-CERT and MERCHANT-CERT.

CARD-CERT is the patent's ``cert_B(inter, info, P_C, P_U)`` (FIG. 4 step 260): the
validity interval ``inter``, the ``info`` that identifies the bank and the card with
its currency and usage constraints, every key contribution ``P_i`` (with its proof of
possession) and the joint key they multiply to, signed with the bank's key ``S_B``.

As the patent allows ("not necessarily generated with the same digital signature
scheme"), the bank's certificates use Ed25519 (pyca/cryptography) while payments use
the Schnorr suites of CONTRACT section 2. Every signed structure is prefixed with its
own domain tag, so a signature over one kind of object never verifies as another.

Encodings are canonical (:mod:`jointpay.crypto.encoding`): decode then encode gives
back the same bytes, or decoding fails.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Final

from cryptography.exceptions import InvalidSignature as _LibInvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from jointpay.crypto.encoding import Reader, Writer, lp
from jointpay.crypto.errors import (
    CryptoError,
    DecodeError,
    ExpiredCertificateError,
    InvalidCertificateError,
    InvalidSignature,
)
from jointpay.crypto.group import (
    SCALAR_LEN,
    Element,
    Group,
    GroupResolver,
    get_group,
    params_digest,
)
from jointpay.crypto.joint import MAX_CONTRIBUTIONS, Contribution, Role, aggregate

CARD_CERT_TAG: Final = b"jointpay/v1/card-cert"
MERCHANT_CERT_TAG: Final = b"jointpay/v1/merchant-cert"
BANK_CERT_TAG: Final = b"jointpay/v1/bank-cert"
CERT_VERSION: Final = 1
CERT_ID_LEN: Final = 16
_ROLE_NAMES: Final = frozenset(r.value for r in Role)
"""The contribution roles a CARD-CERT may name (as :class:`~jointpay.crypto.joint.Role`)."""
ED25519_SIG_LEN: Final = 64
ED25519_KEY_LEN: Final = 32
MAX_SERVICES: Final = 16

_CARD_NUMBER = re.compile(r"^[0-9]{8,19}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_IDENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")


class CardMode(StrEnum):
    """The three kinds of card of the patent: stored value, credit, cheque."""

    CASH = "cash"
    CREDIT = "credit"
    CHEQUE = "cheque"


def check_ident(value: str, what: str) -> str:
    if not isinstance(value, str) or not _IDENT.fullmatch(value):
        raise DecodeError(
            f"{what} {value!r} is not 1-64 of A-Z a-z 0-9 . _ : - (no leading symbol)"
        )
    return value


def check_card_number(value: str) -> str:
    if not isinstance(value, str) or not _CARD_NUMBER.fullmatch(value):
        raise DecodeError(f"card number {value!r} is not 8 to 19 digits")
    return value


def check_currency(value: str) -> str:
    if not isinstance(value, str) or not _CURRENCY.fullmatch(value):
        raise DecodeError(f"currency {value!r} is not a three-letter ISO 4217 code")
    return value


# --------------------------------------------------------------------------------------
# Ed25519 keys with domain separation
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerifyKey:
    """An Ed25519 public key with the identity of its owner (a bank or a merchant)."""

    owner: str
    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != ED25519_KEY_LEN:
            raise DecodeError(f"an Ed25519 public key is {ED25519_KEY_LEN} bytes")

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()[:16]

    def verify(self, tag: bytes, message: bytes, signature: bytes) -> None:
        """Raise :class:`InvalidSignature` unless ``signature`` is ours over (tag, message)."""
        if len(signature) != ED25519_SIG_LEN:
            raise InvalidSignature(f"an Ed25519 signature is {ED25519_SIG_LEN} bytes")
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, lp(tag) + message)
        except (_LibInvalidSignature, ValueError) as exc:
            raise InvalidSignature(f"signature by {self.owner} does not verify") from exc


class SigningKey:
    """An Ed25519 private key; its bytes never appear in repr or str."""

    __slots__ = ("_key", "owner")

    def __init__(self, owner: str, key: Ed25519PrivateKey) -> None:
        self.owner = owner
        self._key = key

    @classmethod
    def generate(cls, owner: str) -> SigningKey:
        return cls(owner, Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, owner: str, raw: bytes) -> SigningKey:
        if len(raw) != 32:
            raise DecodeError("an Ed25519 private key is 32 bytes")
        return cls(owner, Ed25519PrivateKey.from_private_bytes(raw))

    def private_bytes(self) -> bytes:
        """The raw secret, for the owner's own key store only."""
        from cryptography.hazmat.primitives import serialization

        return self._key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    @property
    def verify_key(self) -> VerifyKey:
        from cryptography.hazmat.primitives import serialization

        raw = self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return VerifyKey(self.owner, raw)

    def sign(self, tag: bytes, message: bytes) -> bytes:
        return self._key.sign(lp(tag) + message)

    def __repr__(self) -> str:
        return f"SigningKey({self.owner!r}, <hidden>)"

    __str__ = __repr__


# --------------------------------------------------------------------------------------
# master-key MAC (FIG. 10's "secret keyed one-way hash")
# --------------------------------------------------------------------------------------

MAC_LEN: Final = 32


def mac(key: bytes, tag: bytes, message: bytes) -> bytes:
    """HMAC-SHA256 under ``key`` over ``LP(tag) || message``."""
    if len(key) < 32:
        raise ValueError("a MAC key is at least 32 bytes")
    return hmac.new(key, lp(tag) + message, hashlib.sha256).digest()


def verify_mac(key: bytes, tag: bytes, message: bytes, tag_value: bytes) -> None:
    """Constant-time MAC check; raises :class:`InvalidSignature`."""
    if not hmac.compare_digest(mac(key, tag, message), tag_value):
        raise InvalidSignature("the MAC does not verify")


# --------------------------------------------------------------------------------------
# CARD-CERT
# --------------------------------------------------------------------------------------


def _signed_encoding(tbs: bytes, signature: bytes) -> bytes:
    """A certificate's bytes: what was signed, then the signature."""
    if len(signature) != ED25519_SIG_LEN:
        raise ValueError("the certificate is not signed")
    return tbs + signature


def _check_issued(
    what: str,
    key: VerifyKey,
    issuer: str,
    signer: str,
    tag: bytes,
    tbs: bytes,
    signature: bytes,
    *,
    issuer_id: str,
) -> None:
    """The certificate names ``key``'s owner as its issuer, and that key signed it."""
    if key.owner != issuer_id:
        raise InvalidCertificateError(f"{what} is issued by {issuer}, not by {key.owner!r}")
    try:
        key.verify(tag, tbs, signature)
    except InvalidSignature as exc:
        raise InvalidCertificateError(f"the {signer}'s signature on the {what} is invalid") from exc


def _check_period(what: str, subject: str, not_before: int, not_after: int, at: int | None) -> None:
    if at is not None and not not_before <= at < not_after:
        raise ExpiredCertificateError(f"{what} of {subject} is not valid at {at}")


def _read_key_tail(rd: Reader, what: str, key_field: str) -> tuple[bytes, int, int, bytes]:
    """The end of a MERCHANT-CERT or BANK-CERT: an Ed25519 key, the validity interval,
    the signature, and nothing after it."""
    public_key = rd.blob(key_field, max_len=ED25519_KEY_LEN)
    if len(public_key) != ED25519_KEY_LEN:
        raise DecodeError(f"{what} key is not a 32-byte Ed25519 key")
    not_before, not_after = rd.u64("not before"), rd.u64("not after")
    if not_after <= not_before:
        raise DecodeError(f"{what} validity interval is empty")
    signature = rd.raw(ED25519_SIG_LEN, "signature")
    rd.finish()
    return public_key, not_before, not_after, signature


@dataclass(frozen=True, slots=True)
class CardCert:
    """CARD-CERT = cert_B(inter, info, P_i..., Y).

    ``info`` is the issuing bank, the card number, the currency, the card's mode and
    its usage constraints (``max_amount`` per payment in minor units, 0 meaning none;
    ``services``, the kinds of service it may pay for, empty meaning any).
    ``inter`` is ``[not_before, not_after)`` in Unix seconds.
    """

    cert_id: bytes
    bank_id: str
    card_number: str
    group: Group
    contributions: tuple[Contribution, ...]
    joint_key: Element
    currency: str
    mode: CardMode
    not_before: int
    not_after: int
    max_amount: int = 0
    services: tuple[str, ...] = ()
    signature: bytes = field(default=b"", compare=False)

    @property
    def suite(self) -> str:
        return self.group.suite

    @property
    def id_hex(self) -> str:
        return self.cert_id.hex()

    def tbs(self) -> bytes:
        """The to-be-signed bytes (everything but the signature)."""
        w = (
            Writer()
            .u8(CERT_VERSION)
            .raw(self.cert_id)
            .text(self.bank_id)
            .text(self.card_number)
            .text(self.group.suite)
            .text(self.group.name or "")
            .raw(params_digest(self.group))
            .u8(len(self.contributions))
        )
        for c in self.contributions:
            w.raw(c.encode())
        w.blob(self.joint_key.encoded).text(self.currency).text(self.mode.value)
        w.u64(self.not_before).u64(self.not_after).u64(self.max_amount)
        w.u8(len(self.services))
        for s in self.services:
            w.text(s)
        return w.finish()

    def encode(self) -> bytes:
        return _signed_encoding(self.tbs(), self.signature)

    @property
    def digest(self) -> bytes:
        """SHA-256 of the encoded certificate: how batches and receipts name it."""
        return hashlib.sha256(self.encode()).digest()

    def signed(self, key: SigningKey) -> CardCert:
        return replace(self, signature=key.sign(CARD_CERT_TAG, self.tbs()))

    @classmethod
    def decode(
        cls, data: bytes, groups: GroupResolver = get_group, *, known: bool = False
    ) -> CardCert:
        """Parse a CARD-CERT; raise :class:`DecodeError` for any malformed input.

        Structural rules are checked here (lengths, ranges, identifiers, that every
        contribution key and the joint key are valid group elements, that the group
        parameters match the digest). The bank's signature, the proofs and the joint
        key's value are checked by :meth:`verify`.

        ``known``: these are the exact bytes of a certificate the caller issued and
        stored, so its keys were validated then; the modp subgroup tests are skipped,
        and the fields are read by their offsets (:meth:`_decode_known`).
        """
        if known and type(data) is bytes:
            fast = cls._decode_known(data, groups)
            if fast is not None:
                return fast
        return cls._read(data, groups, known=known)

    @classmethod
    def _read(cls, data: bytes, groups: GroupResolver, *, known: bool) -> CardCert:
        """:meth:`decode` field by field, each with its specific error."""
        rd = Reader(data, "CARD-CERT")
        version = rd.u8("version")
        if version != CERT_VERSION:
            raise DecodeError(f"CARD-CERT version {version} is not supported (need {CERT_VERSION})")
        cert_id = rd.raw(CERT_ID_LEN, "cert id")
        bank_id = check_ident(rd.text("bank id", max_len=64), "bank id")
        card_number = check_card_number(rd.text("card number", max_len=19))
        suite = rd.text("suite", max_len=32)
        group_name = rd.text("group", max_len=64) or None
        digest = rd.raw(32, "group digest")
        try:
            group = groups(suite, group_name)
        except CryptoError as exc:
            raise DecodeError(f"CARD-CERT names an unusable group: {exc}") from exc
        if not hmac.compare_digest(params_digest(group), digest):
            raise DecodeError("CARD-CERT group parameters differ from the named group's")
        n = rd.u8("contribution count")
        if not 2 <= n <= MAX_CONTRIBUTIONS:
            raise DecodeError(f"CARD-CERT has {n} contributions (need 2 to {MAX_CONTRIBUTIONS})")
        contributions = tuple(Contribution.read(group, rd, known=known) for _ in range(n))
        joint = group.decode(rd.blob("joint key", max_len=group.element_len), known=known)
        currency = check_currency(rd.text("currency", max_len=3))
        mode_s = rd.text("mode", max_len=16)
        try:
            mode = CardMode(mode_s)
        except ValueError as exc:
            raise DecodeError(f"unknown card mode {mode_s!r}") from exc
        not_before, not_after = rd.u64("not before"), rd.u64("not after")
        if not_after <= not_before:
            raise DecodeError("CARD-CERT validity interval is empty")
        max_amount = rd.u64("max amount")
        n_services = rd.u8("service count")
        if n_services > MAX_SERVICES:
            raise DecodeError(f"CARD-CERT lists {n_services} services (limit {MAX_SERVICES})")
        services = tuple(
            check_ident(rd.text("service", max_len=64), "service") for _ in range(n_services)
        )
        signature = rd.raw(ED25519_SIG_LEN, "signature")
        rd.finish()
        cert = cls(
            cert_id,
            bank_id,
            card_number,
            group,
            contributions,
            joint,
            currency,
            mode,
            not_before,
            not_after,
            max_amount,
            services,
            signature,
        )
        # bytes we stored after checking them were canonical then: no re-encoding
        if not known and cert.encode() != bytes(data):  # pragma: no cover - no slack
            raise DecodeError("CARD-CERT is not in canonical form")
        return cert

    @classmethod
    def _decode_known(cls, data: bytes, groups: GroupResolver) -> CardCert | None:
        """:meth:`decode` of bytes the caller issued and stored, read by their offsets:
        the same certificate, at a third of the cost (a bank reads back one per card
        of a deposit; a batch from ten thousand cards spent 0.3 s of the depositing
        thread in the field-by-field reader). Its identifiers and text fields were
        checked when it was issued, but every rule of the reader but the subgroup
        tests is checked again, so that it accepts exactly what the reader accepts
        with ``known`` (``tests/property/test_cert_props.py`` holds the two to the
        same answers on mutated certificates). None for anything it does not
        accept: the reader then judges, with its specific error."""
        try:
            if data[0] != CERT_VERSION:
                return None
            end = len(data) - ED25519_SIG_LEN
            cert_id, pos = data[1 : 1 + CERT_ID_LEN], 1 + CERT_ID_LEN
            # bank id, card number, suite, group name
            named = _texts_at(data, pos, (64, 19, 32, 64))
            if named is None:
                return None
            (bank_id, card_number, suite, group_name), pos = named
            check_ident(bank_id, "bank id")
            check_card_number(card_number)
            group = groups(suite, group_name or None)
            if data[pos : pos + 32] != params_digest(group):
                return None
            count, pos = data[pos + 32], pos + 33
            if not 2 <= count <= MAX_CONTRIBUTIONS:
                return None
            contributions = []
            element_len, q = group.element_len, group.q
            for _ in range(count):
                n = int.from_bytes(data[pos : pos + 4], "big")
                role = data[pos + 4 : pos + 4 + n].decode()
                pos += 4 + n
                n = int.from_bytes(data[pos : pos + 4], "big")
                if role not in _ROLE_NAMES or n > element_len:
                    return None
                public = group.decode(data[pos + 4 : pos + 4 + n], known=True)
                pos += 4 + n
                c = int.from_bytes(data[pos : pos + SCALAR_LEN], "big")
                s = int.from_bytes(data[pos + SCALAR_LEN : pos + 2 * SCALAR_LEN], "big")
                pos += 2 * SCALAR_LEN
                if not (c < q and 0 < s < q):
                    return None
                contributions.append(Contribution(role, public, c, s))
            n = int.from_bytes(data[pos : pos + 4], "big")
            if n > element_len:
                return None
            joint = group.decode(data[pos + 4 : pos + 4 + n], known=True)
            pos += 4 + n
            terms = _texts_at(data, pos, (3, 16))  # currency, mode
            if terms is None:
                return None
            (currency_text, mode_text), pos = terms
            currency, mode = check_currency(currency_text), CardMode(mode_text)
            not_before = int.from_bytes(data[pos : pos + 8], "big")
            not_after = int.from_bytes(data[pos + 8 : pos + 16], "big")
            max_amount = int.from_bytes(data[pos + 16 : pos + 24], "big")
            n_services, pos = data[pos + 24], pos + 25
            services = []
            for _ in range(n_services):
                n = int.from_bytes(data[pos : pos + 4], "big")
                services.append(check_ident(data[pos + 4 : pos + 4 + n].decode(), "service"))
                pos += 4 + n
            if pos != end or not_after <= not_before or n_services > MAX_SERVICES:
                return None
        except (IndexError, ValueError, CryptoError):  # short, not UTF-8, a bad field
            return None
        return cls(
            cert_id,
            bank_id,
            card_number,
            group,
            tuple(contributions),
            joint,
            currency,
            mode,
            not_before,
            not_after,
            max_amount,
            tuple(services),
            data[end:],
        )

    def verify(
        self, bank_key: VerifyKey, *, at: int | None = None, check_proofs: bool = False
    ) -> None:
        """Check the bank's signature and that ``Y = prod(P_i)``; optionally validity at ``at``.

        ``check_proofs`` re-verifies every proof of possession (the bank does this at
        issue; an auditor may do it any time; a terminal relies on the bank's signature).
        Raises :class:`InvalidCertificateError` (or :class:`ExpiredCertificateError`).
        """
        _check_issued(
            "CARD-CERT",
            bank_key,
            repr(self.bank_id),
            "bank",
            CARD_CERT_TAG,
            self.tbs(),
            self.signature,
            issuer_id=self.bank_id,
        )
        joint: Element | None
        if check_proofs:
            try:
                joint = aggregate(self.group, self.contributions, self.card_number)
            except CryptoError as exc:
                raise InvalidCertificateError(f"CARD-CERT key contributions: {exc}") from exc
        else:
            joint = self.group.product(c.public for c in self.contributions)
        if joint is None or joint != self.joint_key:
            raise InvalidCertificateError(
                "CARD-CERT joint key is not the product of its contributions"
            )
        if at is not None:
            self.check_validity(at)

    def valid_at(self, at: int) -> bool:
        """Whether ``at`` (Unix seconds) lies in the validity interval ``inter``."""
        return self.not_before <= at < self.not_after

    def check_validity(self, at: int) -> None:
        if not self.valid_at(at):
            raise ExpiredCertificateError(
                f"CARD-CERT {self.id_hex} is valid from {self.not_before} to {self.not_after}, "
                f"not at {at}"
            )


def new_cert_id() -> bytes:
    return secrets.token_bytes(CERT_ID_LEN)


def claimed_card(data: bytes) -> tuple[str, str] | None:
    """The bank id and card number that a CARD-CERT's bytes claim, read at their offsets
    and checked for nothing else, not even the signature: what a bank may lock before it
    has judged the certificate (a deposit locks every card its batch names at once).
    None if the bytes cannot hold them."""
    if not data or data[0] != CERT_VERSION:
        return None
    named = _texts_at(data, 1 + CERT_ID_LEN, (64, 19))  # bank id, card number
    return None if named is None else (named[0][0], named[0][1])


def _texts_at(data: bytes, pos: int, limits: tuple[int, ...]) -> tuple[list[str], int] | None:
    """The length-prefixed texts at ``pos``, one for each of ``limits`` (its most
    bytes), and the position after them; None if one runs past the end, is longer than
    its limit, or is not printable UTF-8 (no field of a valid certificate is)."""
    texts = []
    for limit in limits:
        n = int.from_bytes(data[pos : pos + 4], "big")
        end = pos + 4 + n
        if end > len(data) or n > limit:
            return None
        try:
            text = data[pos + 4 : end].decode()
        except UnicodeDecodeError:
            return None
        if not text.isprintable():
            return None
        texts.append(text)
        pos = end
    return texts, pos


# --------------------------------------------------------------------------------------
# MERCHANT-CERT
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MerchantCert:
    """The bank's certificate on a service provider's S_id and key (FIG. 3).

    The terminal shows it to the card, which checks it before signing so that it only
    ever signs payments to a registered service provider (FIG. 8 step 510).
    """

    cert_id: bytes
    bank_id: str
    sid: str
    name: str
    public_key: bytes
    not_before: int
    not_after: int
    signature: bytes = field(default=b"", compare=False)

    @property
    def verify_key(self) -> VerifyKey:
        return VerifyKey(self.sid, self.public_key)

    def tbs(self) -> bytes:
        return (
            Writer()
            .u8(CERT_VERSION)
            .raw(self.cert_id)
            .text(self.bank_id)
            .text(self.sid)
            .text(self.name)
            .blob(self.public_key)
            .u64(self.not_before)
            .u64(self.not_after)
            .finish()
        )

    def encode(self) -> bytes:
        return _signed_encoding(self.tbs(), self.signature)

    def signed(self, key: SigningKey) -> MerchantCert:
        return replace(self, signature=key.sign(MERCHANT_CERT_TAG, self.tbs()))

    @classmethod
    def decode(cls, data: bytes) -> MerchantCert:
        rd = Reader(data, "MERCHANT-CERT")
        version = rd.u8("version")
        if version != CERT_VERSION:
            raise DecodeError(f"MERCHANT-CERT version {version} is not supported")
        cert_id = rd.raw(CERT_ID_LEN, "cert id")
        bank_id = check_ident(rd.text("bank id", max_len=64), "bank id")
        sid = check_ident(rd.text("sid", max_len=64), "S_id")
        name = rd.text("name", max_len=128)
        if not name.strip():
            raise DecodeError("MERCHANT-CERT name is empty")
        public_key, not_before, not_after, signature = _read_key_tail(
            rd, "MERCHANT-CERT", "merchant key"
        )
        return cls(cert_id, bank_id, sid, name, public_key, not_before, not_after, signature)

    def verify(self, bank_key: VerifyKey, *, at: int | None = None) -> None:
        _check_issued(
            "MERCHANT-CERT",
            bank_key,
            repr(self.bank_id),
            "bank",
            MERCHANT_CERT_TAG,
            self.tbs(),
            self.signature,
            issuer_id=self.bank_id,
        )
        _check_period("MERCHANT-CERT", self.sid, self.not_before, self.not_after, at)


# --------------------------------------------------------------------------------------
# BANK-CERT: the scheme's certificate on a bank's (or a clearing house's) key
# --------------------------------------------------------------------------------------


class BankRole(StrEnum):
    """What a scheme member does: issue cards and acquire merchants, or clear between banks."""

    BANK = "bank"
    CLEARING = "clearing"


@dataclass(frozen=True, slots=True)
class BankCert:
    """The scheme root's certificate on a member's Ed25519 key.

    Card schemes certify their issuers the same way: a card of bank B trusts a merchant
    of bank A because A's key carries the scheme's signature, and a terminal of bank A
    trusts B's CARD-CERTs for the same reason. A clearing house is certified with the
    role ``clearing``, so that banks know whom they forward payments to.
    """

    cert_id: bytes
    scheme_id: str
    bank_id: str
    role: BankRole
    public_key: bytes
    not_before: int
    not_after: int
    signature: bytes = field(default=b"", compare=False)

    @property
    def verify_key(self) -> VerifyKey:
        return VerifyKey(self.bank_id, self.public_key)

    def tbs(self) -> bytes:
        return (
            Writer()
            .u8(CERT_VERSION)
            .raw(self.cert_id)
            .text(self.scheme_id)
            .text(self.bank_id)
            .text(self.role.value)
            .blob(self.public_key)
            .u64(self.not_before)
            .u64(self.not_after)
            .finish()
        )

    def encode(self) -> bytes:
        return _signed_encoding(self.tbs(), self.signature)

    def signed(self, key: SigningKey) -> BankCert:
        return replace(self, signature=key.sign(BANK_CERT_TAG, self.tbs()))

    @classmethod
    def decode(cls, data: bytes) -> BankCert:
        rd = Reader(data, "BANK-CERT")
        version = rd.u8("version")
        if version != CERT_VERSION:
            raise DecodeError(f"BANK-CERT version {version} is not supported")
        cert_id = rd.raw(CERT_ID_LEN, "cert id")
        scheme_id = check_ident(rd.text("scheme id", max_len=64), "scheme id")
        bank_id = check_ident(rd.text("bank id", max_len=64), "bank id")
        role_s = rd.text("role", max_len=16)
        try:
            role = BankRole(role_s)
        except ValueError as exc:
            raise DecodeError(f"unknown member role {role_s!r}") from exc
        public_key, not_before, not_after, signature = _read_key_tail(rd, "BANK-CERT", "member key")
        return cls(cert_id, scheme_id, bank_id, role, public_key, not_before, not_after, signature)

    def verify(
        self, scheme_key: VerifyKey, *, at: int | None = None, role: BankRole | None = None
    ) -> None:
        """Check the scheme's signature, optionally the role and validity at ``at``."""
        _check_issued(
            "BANK-CERT",
            scheme_key,
            f"scheme {self.scheme_id!r}",
            "scheme",
            BANK_CERT_TAG,
            self.tbs(),
            self.signature,
            issuer_id=self.scheme_id,
        )
        if role is not None and self.role is not role:
            raise InvalidCertificateError(
                f"{self.bank_id} is certified as a {self.role.value}, not a {role.value}"
            )
        _check_period("BANK-CERT", self.bank_id, self.not_before, self.not_after, at)


def issue_bank_cert(
    scheme_key: SigningKey,
    *,
    bank_id: str,
    public_key: bytes,
    role: BankRole,
    not_before: int,
    not_after: int,
) -> BankCert:
    """The scheme root certifies a member's key (``jointpay scheme certify``)."""
    check_ident(scheme_key.owner, "scheme id")
    check_ident(bank_id, "bank id")
    VerifyKey(bank_id, public_key)  # a 32-byte key
    if not_after <= not_before:
        raise ValueError("empty validity interval")
    return BankCert(
        new_cert_id(), scheme_key.owner, bank_id, BankRole(role), public_key, not_before, not_after
    ).signed(scheme_key)


def issue_card_cert(
    bank_key: SigningKey,
    *,
    group: Group,
    card_number: str,
    contributions: Sequence[Contribution],
    currency: str,
    mode: CardMode,
    not_before: int,
    not_after: int,
    max_amount: int = 0,
    services: Sequence[str] = (),
    cert_id: bytes | None = None,
) -> CardCert:
    """FIG. 4 step 260: verify every proof of possession, then sign the CARD-CERT."""
    check_card_number(card_number)
    check_currency(currency)
    for s in services:
        check_ident(s, "service")
    if not_after <= not_before:
        raise ValueError("empty validity interval")
    joint = aggregate(group, contributions, card_number)
    cert = CardCert(
        cert_id or new_cert_id(),
        bank_key.owner,
        card_number,
        group,
        tuple(contributions),
        joint,
        currency,
        CardMode(mode),
        not_before,
        not_after,
        max_amount,
        tuple(services),
    )
    return cert.signed(bank_key)
