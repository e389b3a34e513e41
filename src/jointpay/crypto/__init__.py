"""The crypto core: suites, Schnorr signatures, joint keys, certificates, encoding.

Pure functions and immutable values, no I/O. Verification raises (see
:mod:`jointpay.crypto.errors`); nothing here returns a bool to be checked.
"""

from jointpay.crypto.errors import (
    CryptoError,
    DecodeError,
    ExpiredCertificateError,
    InvalidCertificateError,
    InvalidElementError,
    InvalidGroupError,
    InvalidProofError,
    InvalidScalarError,
    InvalidSignature,
)
from jointpay.crypto.group import SUITE_MODP, SUITE_SECP256K1, SUITES, Element, Group, get_group
from jointpay.crypto.schnorr import PaymentCert, SecretScalar, sign, verify

__all__ = [
    "SUITES",
    "SUITE_MODP",
    "SUITE_SECP256K1",
    "CryptoError",
    "DecodeError",
    "Element",
    "ExpiredCertificateError",
    "Group",
    "InvalidCertificateError",
    "InvalidElementError",
    "InvalidGroupError",
    "InvalidProofError",
    "InvalidScalarError",
    "InvalidSignature",
    "PaymentCert",
    "SecretScalar",
    "get_group",
    "sign",
    "verify",
]
