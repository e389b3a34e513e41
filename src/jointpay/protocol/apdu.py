"""ISO/IEC 7816-4 command and response APDUs, parsed strictly.

A command APDU is ``CLA INS P1 P2`` followed by one of the four cases, each in a
short or an extended form:

=====  =====================================  ==========================================
case   short                                  extended
=====  =====================================  ==========================================
1      (nothing)
2      Le (1 byte, 00 = 256)                  00 Le(2) (0000 = 65536)
3      Lc(1, 1-255) data                      00 Lc(2, 1-65535) data
4      Lc(1) data Le(1)                       00 Lc(2) data Le(2)
=====  =====================================  ==========================================

Anything else (a truncated body, an Lc that disagrees with the data, a zero Lc) is
:class:`ApduFormatError`, which the card answers with ``6700`` (wrong length).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

SHORT_MAX: Final = 256
EXTENDED_MAX: Final = 65536


class SW(IntEnum):
    """Status words used by the jointpay applet, with their ISO 7816-4 meanings."""

    OK = 0x9000
    BYTES_REMAINING = 0x6100  # | n: GET RESPONSE for n more bytes (00 = 256 or more)
    WARNING_NV_CHANGED = 0x6300  # | 0xC0 | n: wrong PIN, n tries left
    WRONG_LENGTH = 0x6700
    LOGICAL_CHANNEL_NOT_SUPPORTED = 0x6881
    CHAINING_NOT_SUPPORTED = 0x6884
    SECURITY_STATUS = 0x6982
    AUTH_BLOCKED = 0x6983
    DATA_INVALID = 0x6984
    CONDITIONS = 0x6985
    COMMAND_NOT_ALLOWED = 0x6986
    WRONG_DATA = 0x6A80
    FUNC_NOT_SUPPORTED = 0x6A81
    FILE_NOT_FOUND = 0x6A82
    NOT_ENOUGH_MEMORY = 0x6A84
    WRONG_P1P2 = 0x6A86
    DATA_NOT_FOUND = 0x6A88
    WRONG_LE = 0x6C00  # | exact length
    INS_NOT_SUPPORTED = 0x6D00
    CLA_NOT_SUPPORTED = 0x6E00
    NO_PRECISE_DIAGNOSIS = 0x6F00


class ApduFormatError(ValueError):
    """Bytes that are not a well-formed command or response APDU."""


@dataclass(frozen=True, slots=True)
class Command:
    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    le: int | None = None
    """Expected response length (1..65536), or None when no data is expected (Ne = 0)."""

    @property
    def chained(self) -> bool:
        """CLA bit b5: more command parts follow (ISO 7816-4 command chaining)."""
        return bool(self.cla & 0x10)

    def encode(self, *, extended: bool | None = None) -> bytes:
        """Encode, choosing the short form unless a length needs the extended one."""
        for name, v in (("CLA", self.cla), ("INS", self.ins), ("P1", self.p1), ("P2", self.p2)):
            if not 0 <= v <= 0xFF:
                raise ValueError(f"{name} out of range")
        n = len(self.data)
        if n > EXTENDED_MAX - 1:
            raise ValueError("command data too long")
        if self.le is not None and not 1 <= self.le <= EXTENDED_MAX:
            raise ValueError("Le out of range")
        need_ext = n > 255 or (self.le is not None and self.le > SHORT_MAX)
        ext = need_ext if extended is None else extended
        if need_ext and not ext:
            raise ValueError("lengths need the extended form")
        out = bytearray((self.cla, self.ins, self.p1, self.p2))
        if ext:
            if n:
                out += b"\x00" + n.to_bytes(2, "big") + self.data
            if self.le is not None:
                le = 0 if self.le == EXTENDED_MAX else self.le
                out += (b"" if n else b"\x00") + le.to_bytes(2, "big")
        else:
            if n:
                out += bytes((n,)) + self.data
            if self.le is not None:
                out += bytes((0 if self.le == SHORT_MAX else self.le,))
        return bytes(out)

    @classmethod
    def parse(cls, raw: bytes) -> Command:
        if len(raw) < 4:
            raise ApduFormatError(f"a command APDU has at least 4 bytes, got {len(raw)}")
        cla, ins, p1, p2 = raw[0], raw[1], raw[2], raw[3]
        body = raw[4:]
        if not body:  # case 1
            return cls(cla, ins, p1, p2)
        if len(body) == 1:  # case 2 short
            return cls(cla, ins, p1, p2, b"", body[0] or SHORT_MAX)
        if body[0] != 0:  # short case 3 or 4
            lc = body[0]
            if len(body) == 1 + lc:
                return cls(cla, ins, p1, p2, bytes(body[1:]))
            if len(body) == 2 + lc:
                return cls(cla, ins, p1, p2, bytes(body[1 : 1 + lc]), body[-1] or SHORT_MAX)
            raise ApduFormatError(f"Lc = {lc} disagrees with {len(body) - 1} bytes of body")
        # extended forms start with 00
        if len(body) == 3:  # case 2 extended
            le = int.from_bytes(body[1:3], "big")
            return cls(cla, ins, p1, p2, b"", le or EXTENDED_MAX)
        if len(body) < 3:
            raise ApduFormatError("truncated extended length")
        lc = int.from_bytes(body[1:3], "big")
        if lc == 0:
            raise ApduFormatError("extended Lc of zero")
        if len(body) == 3 + lc:
            return cls(cla, ins, p1, p2, bytes(body[3:]))
        if len(body) == 5 + lc:
            le = int.from_bytes(body[-2:], "big")
            return cls(cla, ins, p1, p2, bytes(body[3 : 3 + lc]), le or EXTENDED_MAX)
        raise ApduFormatError(f"extended Lc = {lc} disagrees with the body length")


@dataclass(frozen=True, slots=True)
class Response:
    data: bytes
    sw: int

    @property
    def ok(self) -> bool:
        return self.sw == SW.OK

    @property
    def sw1(self) -> int:
        return self.sw >> 8

    @property
    def sw2(self) -> int:
        return self.sw & 0xFF

    def encode(self) -> bytes:
        return self.data + self.sw.to_bytes(2, "big")

    @classmethod
    def parse(cls, raw: bytes) -> Response:
        if len(raw) < 2:
            raise ApduFormatError(f"a response APDU has at least 2 bytes, got {len(raw)}")
        return cls(bytes(raw[:-2]), int.from_bytes(raw[-2:], "big"))


def sw_text(sw: int) -> str:
    """A short human meaning of a status word."""
    if sw & 0xFFF0 == 0x63C0:
        return f"wrong PIN, {sw & 0x0F} tries left"
    if sw & 0xFF00 == 0x6100:
        return "more response bytes available"
    if sw & 0xFF00 == 0x6C00:
        return f"wrong Le, exact length is {sw & 0xFF}"
    try:
        return SW(sw).name.lower().replace("_", " ")
    except ValueError:
        return f"status {sw:04X}"
