"""Outcomes of use cases that are not success.

:class:`Refused` is the protocol saying no (exit status 1 on the command line, 4xx
over HTTP): a declined payment, a rejected deposit, a wrong PIN. :class:`BadInput`
is input that is not even well-formed (exit status 2). Both carry a stable ``code``
and a message for a person, and neither ever carries a secret.
"""

from __future__ import annotations


class ServiceError(Exception):
    code: str = "error"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    @property
    def message(self) -> str:
        return str(self)


class Refused(ServiceError):
    """The protocol refused the request; nothing was changed.

    ``proof`` carries, where the protocol has one, the bank's authenticated refusal
    for the card (a :class:`~jointpay.protocol.messages.WithdrawRefusal`);
    ``retry_after``, where the refusal lifts by itself, the seconds until it does (HTTP
    ``Retry-After``).
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        proof: bytes | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(code, message)
        self.proof = proof
        self.retry_after = retry_after


class BadInput(ServiceError):
    """The request is malformed or names something that does not exist."""
