"""Canonical byte encoding shared by every signed structure.

Everything jointpay signs is a sequence of fixed-width integers and length-prefixed
byte strings in a fixed order, so each value has exactly one encoding. ``LP(x)`` is a
4-byte big-endian length followed by ``x`` (CONTRACT section 2). The :class:`Reader`
refuses trailing bytes, short input and over-long lengths with :class:`DecodeError`,
which makes the parsers total: any input either parses to the one value that encodes
to it, or raises.
"""

from __future__ import annotations

import struct
from typing import Final

from jointpay.crypto.errors import DecodeError

MAX_FIELD: Final = 1 << 20
"""No single length-prefixed field of a jointpay structure is longer than 1 MiB."""


def lp(data: bytes) -> bytes:
    """``LP(x)``: 4-byte big-endian length of ``x``, then ``x``."""
    return struct.pack(">I", len(data)) + data


def u64(n: int) -> bytes:
    """``u64(n)``: 8-byte big-endian, for 0 <= n < 2**64."""
    if not 0 <= n < 1 << 64:
        raise ValueError("u64 out of range")
    return n.to_bytes(8, "big")


class Writer:
    """Builds a canonical encoding field by field."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u8(self, n: int) -> Writer:
        if not 0 <= n < 1 << 8:
            raise ValueError("u8 out of range")
        self._parts.append(bytes((n,)))
        return self

    def u32(self, n: int) -> Writer:
        if not 0 <= n < 1 << 32:
            raise ValueError("u32 out of range")
        self._parts.append(n.to_bytes(4, "big"))
        return self

    def u64(self, n: int) -> Writer:
        self._parts.append(u64(n))
        return self

    def raw(self, data: bytes) -> Writer:
        self._parts.append(data)
        return self

    def blob(self, data: bytes) -> Writer:
        if len(data) > MAX_FIELD:
            raise ValueError("field too long")
        self._parts.append(lp(data))
        return self

    def text(self, s: str) -> Writer:
        return self.blob(s.encode("utf-8"))

    def finish(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    """Reads a canonical encoding; every failure is a :class:`DecodeError`."""

    __slots__ = ("_data", "_pos", "_what")

    def __init__(self, data: bytes, what: str) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise DecodeError(f"{what}: expected bytes, got {type(data).__name__}")
        self._data = data if type(data) is bytes else bytes(data)
        self._pos = 0
        self._what = what

    # Each reader inlines its bounds check (deposits decode tens of thousands of
    # specs; a chain of helper calls per field was most of the cost). Every
    # failure still goes through _short, with the same message.
    def _short(self, n: int, field: str) -> DecodeError:
        return DecodeError(
            f"{self._what}: truncated in field {field!r} "
            f"(need {n} bytes at offset {self._pos}, have {len(self._data) - self._pos})"
        )

    def _take(self, n: int, field: str) -> bytes:
        pos = self._pos
        end = pos + n
        if end > len(self._data):
            raise self._short(n, field)
        self._pos = end
        return self._data[pos:end]

    def u8(self, field: str) -> int:
        pos = self._pos
        if pos >= len(self._data):
            raise self._short(1, field)
        self._pos = pos + 1
        return self._data[pos]

    def u32(self, field: str) -> int:
        pos = self._pos
        if pos + 4 > len(self._data):
            raise self._short(4, field)
        self._pos = pos + 4
        return int.from_bytes(self._data[pos : pos + 4], "big")

    def u64(self, field: str) -> int:
        pos = self._pos
        if pos + 8 > len(self._data):
            raise self._short(8, field)
        self._pos = pos + 8
        return int.from_bytes(self._data[pos : pos + 8], "big")

    def raw(self, n: int, field: str) -> bytes:
        return self._take(n, field)

    def blob(self, field: str, *, max_len: int = MAX_FIELD) -> bytes:
        data, pos = self._data, self._pos
        if pos + 4 > len(data):
            raise self._short(4, field)
        n = int.from_bytes(data[pos : pos + 4], "big")
        if n > max_len:
            raise DecodeError(f"{self._what}: field {field!r} is {n} bytes, limit {max_len}")
        end = pos + 4 + n
        if end > len(data):
            self._pos = pos + 4
            raise self._short(n, field)
        self._pos = end
        return data[pos + 4 : end]

    def text(self, field: str, *, max_len: int = 256) -> str:
        raw = self.blob(field, max_len=max_len)
        try:
            s = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"{self._what}: field {field!r} is not UTF-8") from exc
        if not s.isprintable():
            raise DecodeError(f"{self._what}: field {field!r} has control characters")
        return s

    def remaining(self) -> int:
        return len(self._data) - self._pos

    def finish(self) -> None:
        if self._pos != len(self._data):
            raise DecodeError(
                f"{self._what}: {len(self._data) - self._pos} trailing bytes after the last field"
            )
