"""Exchanges driven from the card's side: the holder's withdrawal (FIG. 10).

The bank is reached through a :class:`BankPort`: the in-process
:class:`~jointpay.service.bank.Bank`, or an HTTP client for ``--bank URL``. Both give
the same results, because both run the same bank code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, Protocol

from jointpay.crypto.certs import CardCert, VerifyKey
from jointpay.crypto.errors import CryptoError, DecodeError
from jointpay.crypto.group import Group
from jointpay.domain.money import format_amount
from jointpay.domain.records import HotlistEntry
from jointpay.protocol.apdu import SW
from jointpay.protocol.messages import AuthKind, WithdrawRequest
from jointpay.protocol.terminal import (
    CardClient,
    CardError,
    CardLocked,
    CardMute,
    WrongPin,
    pin_refusal,
)
from jointpay.service.errors import BadInput, Refused


class DepositPort(Protocol):
    """Where a merchant deposits: its bank, or a clearing house that relays to it."""

    @property
    def bank_id(self) -> str: ...
    def deposit(self, message: object) -> dict[str, Any]: ...


class BankPort(Protocol):
    """What a terminal or a card holder needs from a bank."""

    @property
    def bank_id(self) -> str: ...
    @property
    def verify_key(self) -> VerifyKey: ...
    def withdraw(self, request: bytes) -> bytes: ...
    def deposit(self, message: object) -> dict[str, Any]: ...
    def hotlist(self, since: int = 0) -> list[HotlistEntry]: ...
    def online_check(self, message: dict[str, Any]) -> dict[str, Any]: ...
    def scheme(self) -> dict[str, Any]: ...
    def scheme_hotlist(self) -> list[dict[str, Any]]: ...
    def rates(self) -> dict[str, Any]: ...
    def parameters(self) -> dict[str, Any]: ...
    def resolve_group(self, suite: str, name: str | None) -> Group: ...


@dataclass(frozen=True, slots=True)
class WithdrawOutcome:
    card_number: str
    balance: int
    seq: int
    renewed: bool
    currency: str


def withdraw_with_card(
    client: CardClient,
    bank: BankPort,
    *,
    pin: str,
    amount: int,
    renew: bool = False,
    auth: AuthKind = AuthKind.SIGNATURE,
    up_to: bool = False,
) -> WithdrawOutcome:
    """FIG. 10 from step 800: read and check the CARD-CERT, PIN, request, ack, update.

    If the acknowledgement is lost (the bank call fails after the bank applied the
    request), the card keeps its pending request; calling this again with the same
    amount sends the very same request, the bank answers with the same
    acknowledgement, and nothing moves twice.
    """
    if amount == 0 and not renew and not up_to:  # before the card signs and spends a seq
        raise BadInput("bad_amount", "a withdrawal of zero asks for renewal (--renew)")
    with _card_refusals("the withdrawal"):
        client.select()
        encoded = client.cert()
    try:
        cert = CardCert.decode(encoded, bank.resolve_group)  # steps 810-820
        cert.verify(bank.verify_key)
    except CryptoError as exc:
        raise Refused("bad_cert", f"the card's certificate does not check: {exc}") from exc
    old_cert = cert.cert_id
    with _card_refusals("the withdrawal"):
        client.verify_pin(pin)  # step 850
        try:
            request = client.withdraw_request(amount, renew, auth, up_to)  # step 870
        except CardError as exc:
            # the card takes no other request while one is pending (its answer lost):
            # say which, so that its holder can complete it
            pending = pending_request(client) if exc.sw == SW.CONDITIONS else None
            if pending is None:
                raise
            raise Refused(
                "withdrawal_pending",
                f"{describe_request(pending, cert)} is pending on the card since "
                "its answer was lost: run it again unchanged to complete it, then this one",
            ) from exc
    try:
        ack = bank.withdraw(request)  # steps 880-910
    except Refused as exc:
        if exc.proof:  # the bank's signed refusal: the card drops its pending request
            with contextlib.suppress(CardError, DecodeError):
                client.withdraw_refused(exc.proof)
        raise
    with _card_refusals("the acknowledgement"):
        balance, seq = client.withdraw_complete(ack)  # step 920
        renewed = CardCert.decode(client.cert(), bank.resolve_group).cert_id != old_cert
    return WithdrawOutcome(cert.card_number, balance, seq, renewed, cert.currency)


def pending_request(client: CardClient) -> WithdrawRequest | None:
    """The withdrawal request pending on the card (its answer was lost), if any."""
    if not client.status().withdrawal_pending:
        return None
    return WithdrawRequest.decode(client.pending_withdrawal())


MAX_RESTORE: Final = (1 << 63) - 1
"""The amount of ``withdraw --amount max``: a credit card's restore of up to this, that
is as far as the bank allows (the request's ``up_to`` flag)."""


def describe_amount(amount: int, cert: CardCert) -> str:
    """A withdrawal's amount as its holder reads it (a cheque card's are cheques)."""
    if cert.mode.value == "cheque":
        return f"{amount} cheques"
    return f"{format_amount(amount, cert.currency)} {cert.currency}"


def describe_request(req: WithdrawRequest, cert: CardCert) -> str:
    """A pending withdrawal request as its holder reads it."""
    if not req.up_to:
        what = f"a withdrawal of {describe_amount(req.amount, cert)}"
    elif req.amount >= MAX_RESTORE:
        what = "a restore of the credit line (--amount max)"
    else:
        what = f"a restore of up to {describe_amount(req.amount, cert)}"
    return what + (" with renewal" if req.renew else "")


@contextmanager
def _card_refusals(what: str) -> Iterator[None]:
    try:
        yield
    except CardMute as exc:
        raise Refused(
            "card_removed",
            f"{exc}; look at the card (card show): a withdrawal still pending is "
            "completed by running it again, unchanged, and the bank answers it once",
        ) from exc
    except (WrongPin, CardLocked) as exc:
        raise Refused(*pin_refusal(exc)) from exc
    except CardError as exc:
        raise Refused("card_error", f"the card refused {what}: {exc}") from exc
    except DecodeError as exc:
        raise Refused("card_error", f"the card's answer to {what} is malformed: {exc}") from exc
