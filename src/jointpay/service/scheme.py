"""Several banks in one scheme: membership, the messages between banks, the ports.

A **scheme** has a root key (``jointpay scheme init``) that certifies every member's
Ed25519 key in a BANK-CERT, with a role: ``bank`` (issues cards, acquires merchants)
or ``clearing`` (a clearing house). A bank that joined keeps the root key, its own
BANK-CERT and the clearing houses it clears through (:class:`Membership`, in its
config table); it puts the root key on the cards it issues so that they accept the
other members' merchants, and gives it to its terminals so that they accept the
other members' cards.

Every message between members is canonical JSON signed with the sender's key under
its own domain tag (:func:`sign_body`, :func:`open_body`), so a signature made for one
kind of message never passes for another, nor for a merchant's deposit or receipt.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, Protocol

from jointpay.crypto.certs import BankCert, BankRole, SigningKey, VerifyKey, check_ident
from jointpay.crypto.errors import CryptoError, InvalidSignature
from jointpay.domain.records import HotlistEntry
from jointpay.protocol.deposit import BatchError, canonical_json
from jointpay.service.errors import BadInput

SCHEME_CONFIG_KEY: Final = "scheme"

CLEAR_FORMAT: Final = "jointpay-clear/1"
CLEARED_FORMAT: Final = "jointpay-cleared/1"
INTERBANK_FORMAT: Final = "jointpay-interbank/1"
INTERBANK_RECEIPT_FORMAT: Final = "jointpay-interbank-receipt/1"
SETTLEMENT_FORMAT: Final = "jointpay-settlement/1"
POSITION_FORMAT: Final = "jointpay-position/1"
RELAY_FORMAT: Final = "jointpay-relay/1"

INTERBANK_WINDOW: Final = 600
"""How far the time a bank or a house signed a clearing message with may be from the
receiver's clock (seconds): each hop signs its message as it sends it, so this is the
clocks' skew and the network's delay, and how long a captured message could be
played again."""

CLEAR_TAG: Final = b"jointpay/v1/clear"
CLEARED_TAG: Final = b"jointpay/v1/cleared"
INTERBANK_TAG: Final = b"jointpay/v1/interbank"
INTERBANK_RECEIPT_TAG: Final = b"jointpay/v1/interbank-receipt"
SETTLEMENT_TAG: Final = b"jointpay/v1/settlement"
SETTLED_TAG: Final = b"jointpay/v1/settled"
POSITION_TAG: Final = b"jointpay/v1/position"
RELAY_TAG: Final = b"jointpay/v1/relay"


class SchemeError(Exception):
    """A message between members is malformed or not authentic."""


@contextmanager
def malformed(what: str) -> Iterator[None]:
    """A member's message that does not parse, or is not signed by its sender, is bad
    input: :class:`BadInput` ``malformed``, prefixed with ``what``."""
    try:
        yield
    except (SchemeError, BatchError) as exc:
        raise BadInput("malformed", f"{what}: {exc}") from exc


def sign_body(key: SigningKey, tag: bytes, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with the sender's signature over its canonical JSON, under ``tag``."""
    return {**body, "signature": key.sign(tag, canonical_json(body)).hex()}


def open_body(key: VerifyKey, tag: bytes, message: object, fmt: str) -> dict[str, Any]:
    """The body of a signed message of format ``fmt``; :class:`SchemeError` otherwise."""
    if not isinstance(message, dict):
        raise SchemeError("a scheme message is a JSON object")
    body = {k: v for k, v in message.items() if k != "signature"}
    if body.get("format") != fmt:
        raise SchemeError(f"expected a {fmt} message")
    sig = message.get("signature")
    try:
        if not isinstance(sig, str):
            raise InvalidSignature("no signature")
        key.verify(tag, canonical_json(body), bytes.fromhex(sig))
    except (InvalidSignature, ValueError) as exc:
        raise SchemeError(f"the {fmt} message is not signed by {key.owner}") from exc
    return body


def field(body: dict[str, Any], key: str, kind: type) -> Any:
    """A typed field of a message body (bools are not ints)."""
    v = body.get(key)
    if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
        raise SchemeError(f"{key!r} must be {kind.__name__}")
    return v


def interbank_account(clearing_house: str) -> str:
    """A member's account with a clearing house: negative, the house owes the bank;
    positive, the bank owes the house."""
    return f"interbank:{clearing_house}"


def position_account(bank_id: str) -> str:
    """The clearing house's account of one member: positive, the house owes it."""
    return f"bank:{bank_id}"


# --------------------------------------------------------------------------------------
# membership
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClearingLink:
    """A clearing house a bank clears through: its certificate and where it answers."""

    cert: BankCert
    url: str | None

    @property
    def ch_id(self) -> str:
        return self.cert.bank_id


@dataclass(frozen=True, slots=True)
class Membership:
    """A member's place in the scheme: the root key, its own BANK-CERT, its houses."""

    scheme_key: VerifyKey
    own_cert: BankCert
    clearing: tuple[ClearingLink, ...] = ()

    @property
    def scheme_id(self) -> str:
        return self.scheme_key.owner

    def link(self, ch_id: str) -> ClearingLink | None:
        return next((c for c in self.clearing if c.ch_id == ch_id), None)

    def check_member(self, cert_bytes: bytes, role: BankRole, at: int) -> BankCert:
        """Decode and verify another member's BANK-CERT; :class:`SchemeError` if bad."""
        try:
            cert = BankCert.decode(cert_bytes)
            cert.verify(self.scheme_key, at=at, role=role)
        except CryptoError as exc:
            raise SchemeError(f"BANK-CERT: {exc}") from exc
        return cert

    def to_json(self) -> str:
        return json.dumps(
            {
                "scheme_id": self.scheme_id,
                "scheme_key": self.scheme_key.raw.hex(),
                "own_cert": self.own_cert.encode().hex(),
                "clearing": [{"cert": c.cert.encode().hex(), "url": c.url} for c in self.clearing],
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Membership:
        d = json.loads(text)
        return cls(
            VerifyKey(check_ident(d["scheme_id"], "scheme id"), bytes.fromhex(d["scheme_key"])),
            BankCert.decode(bytes.fromhex(d["own_cert"])),
            tuple(
                ClearingLink(BankCert.decode(bytes.fromhex(c["cert"])), c.get("url"))
                for c in d.get("clearing", [])
            ),
        )


# --------------------------------------------------------------------------------------
# ports: what a bank asks of a clearing house, and a clearing house of a bank
# --------------------------------------------------------------------------------------


class ClearingPort(Protocol):
    """A clearing house, in process or over HTTP."""

    def parameters(self) -> dict[str, Any]:
        """``{"clearing_house", "scheme_id", "cert", "members": [BANK-CERT hex]}``."""

    def clear(self, message: dict[str, Any]) -> dict[str, Any]: ...
    def scheme_hotlist(self) -> list[dict[str, Any]]: ...
    def online_check(self, message: dict[str, Any]) -> dict[str, Any]: ...


class MemberPort(Protocol):
    """A member bank as a clearing house reaches it."""

    def interbank_deposit(self, message: dict[str, Any]) -> dict[str, Any]: ...
    def interbank_relayed(self, message: dict[str, Any]) -> dict[str, Any]: ...
    def interbank_settlement(self, message: dict[str, Any]) -> dict[str, Any]: ...
    def interbank_position(self, clearing_house: str) -> dict[str, Any]: ...
    def interbank_online_check(self, message: dict[str, Any]) -> dict[str, Any]: ...
    def hotlist(self, since: int = 0) -> list[HotlistEntry]: ...


ClearingConnector = Callable[[ClearingLink], ClearingPort]
MemberConnector = Callable[[str, str | None], MemberPort]


class Unreachable(Exception):
    """The other member did not answer (down, network, timeout)."""
