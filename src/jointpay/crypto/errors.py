"""The exceptions of the crypto core.

Verification in jointpay *raises*; it never returns a bool a caller could forget to
check. Every exception carries a message that names what was wrong, and never a
secret value.
"""

from __future__ import annotations


class CryptoError(Exception):
    """Base of every error raised by :mod:`jointpay.crypto`."""


class DecodeError(CryptoError, ValueError):
    """Bytes from outside do not parse: wrong length, trailing data, bad field."""


class InvalidGroupError(CryptoError):
    """Group parameters fail validation (primality, sizes, order of g...)."""


class InvalidElementError(DecodeError):
    """An encoded group element is not a valid non-identity element of the group."""


class InvalidScalarError(DecodeError):
    """A scalar is out of its allowed range."""


class InvalidSignature(CryptoError):
    """A signature (PAYMENT-CERT, certificate, proof, MAC) does not verify."""


class InvalidProofError(InvalidSignature):
    """A proof of possession of a key contribution does not verify."""


class InvalidCertificateError(CryptoError):
    """A certificate parses but is not acceptable (signature, issuer, field rules)."""


class ExpiredCertificateError(InvalidCertificateError):
    """A certificate is outside its validity interval at the time it is judged."""
