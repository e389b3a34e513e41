"""The terminal's side of a real reader: PC/SC through ``pcscd`` (pyscard).

:class:`PcscChannel` is a :class:`~jointpay.protocol.terminal.CardChannel`: the same
terminal code that drives the in-process card drives any card in any PC/SC reader.
It speaks T=1 (or T=0), and uses extended-length APDUs only when the card's ATR says
it takes them (third software function table, ISO 7816-4 8.1.1.2.7); otherwise long
commands are chained and long answers fetched with GET RESPONSE.

pyscard is an optional dependency (``pip install 'jointpay[pcsc]'``); importing this
module without it raises :class:`PcscError` with that advice.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

try:  # pragma: no branch
    from smartcard import scard
except ImportError as _exc:  # pragma: no cover - exercised only without the extra
    scard = None
    _IMPORT_ERROR: ImportError | None = _exc
else:
    _IMPORT_ERROR = None


class PcscError(ConnectionError):
    """pcscd, the reader or the card cannot be reached; the message says which."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class NoCard(PcscError):
    """The reader is there but holds no card (or the card was pulled)."""


class UnknownReader(PcscError):
    """No reader of that name."""


def _lib() -> Any:
    if scard is None:
        raise PcscError(
            "PC/SC support needs pyscard: pip install 'jointpay[pcsc]' "
            f"(and the pcsclite headers to build it): {_IMPORT_ERROR}"
        )
    return scard


def _fail(what: str, rc: int) -> PcscError:
    s = _lib()
    message = f"{what}: {s.SCardGetErrorMessage(rc).strip()} ({rc & 0xFFFFFFFF:#010x})"
    if rc in (s.SCARD_E_NO_SMARTCARD, s.SCARD_W_REMOVED_CARD, s.SCARD_W_UNPOWERED_CARD):
        return NoCard(message, rc)
    if rc in (s.SCARD_E_UNKNOWN_READER, s.SCARD_E_READER_UNAVAILABLE):
        return UnknownReader(message, rc)
    if rc == s.SCARD_E_NO_SERVICE:
        return PcscError(f"{message}; is pcscd running?", rc)
    return PcscError(message, rc)


class _Context:
    def __init__(self) -> None:
        s = _lib()
        rc, self.handle = s.SCardEstablishContext(s.SCARD_SCOPE_USER)
        if rc != s.SCARD_S_SUCCESS:
            raise _fail("cannot reach the PC/SC service", rc)

    def release(self) -> None:
        _lib().SCardReleaseContext(self.handle)

    def readers(self) -> list[str]:
        s = _lib()
        rc, names = s.SCardListReaders(self.handle, [])
        if rc == s.SCARD_E_NO_READERS_AVAILABLE:
            return []
        if rc != s.SCARD_S_SUCCESS:
            raise _fail("cannot list the readers", rc)
        return list(names)


@dataclass(frozen=True, slots=True)
class ReaderInfo:
    name: str
    card_present: bool
    atr: bytes | None


def list_readers() -> list[ReaderInfo]:
    """Every reader pcscd knows, and whether a card sits in it."""
    s = _lib()
    ctx = _Context()
    try:
        names = ctx.readers()
        if not names:
            return []
        rc, states = s.SCardGetStatusChange(
            ctx.handle, 0, [(n, s.SCARD_STATE_UNAWARE) for n in names]
        )
        if rc != s.SCARD_S_SUCCESS:
            raise _fail("cannot read the readers' state", rc)
        out = []
        for name, event, atr in states:
            present = bool(event & s.SCARD_STATE_PRESENT) and not event & s.SCARD_STATE_MUTE
            out.append(ReaderInfo(name, present, bytes(atr) if present and atr else None))
        return out
    finally:
        ctx.release()


def atr_extended_length(atr: bytes) -> bool:
    """Whether the ATR's historical bytes announce extended Lc/Le (compact-TLV 73)."""
    if len(atr) < 2 or atr[0] not in (0x3B, 0x3F):
        return False
    t0 = atr[1]
    k, y, i = t0 & 0x0F, t0 >> 4, 2
    while True:  # skip the interface bytes TAi..TDi
        td = None
        for bit in (0x10, 0x20, 0x40, 0x80):
            if y & bit:
                if i >= len(atr):
                    return False
                if bit == 0x80:
                    td = atr[i]
                i += 1
        if td is None:
            break
        y = td >> 4
    hist = atr[i : i + k]
    if len(hist) != k or not hist or hist[0] != 0x80:
        return False
    j = 1
    while j < len(hist):
        tag, length = hist[j] >> 4, hist[j] & 0x0F
        value = hist[j + 1 : j + 1 + length]
        if len(value) != length:
            return False
        if tag == 0x7 and length >= 3:
            return bool(value[2] & 0x40)
        j += 1 + length
    return False


SHARE_MODES: Final = ("exclusive", "shared")


class PcscChannel:
    """A connection to the card in one reader; use as a context manager."""

    def __init__(self, reader: str, *, share: str = "exclusive") -> None:
        if share not in SHARE_MODES:
            raise ValueError(f"share must be one of {SHARE_MODES}")
        s = _lib()
        self.reader = reader
        self._ctx = _Context()
        try:
            if reader not in self._ctx.readers():
                raise UnknownReader(f"no reader named {reader!r} (see `jointpay readers`)")
            mode = s.SCARD_SHARE_EXCLUSIVE if share == "exclusive" else s.SCARD_SHARE_SHARED
            rc, self._card, self._proto = s.SCardConnect(
                self._ctx.handle, reader, mode, s.SCARD_PROTOCOL_T0 | s.SCARD_PROTOCOL_T1
            )
            if rc != s.SCARD_S_SUCCESS:
                raise _fail(f"cannot connect to the card in {reader!r}", rc)
            rc, _, _, _, atr = s.SCardStatus(self._card)
            if rc != s.SCARD_S_SUCCESS:
                raise _fail(f"cannot read the card's ATR in {reader!r}", rc)
        except BaseException:
            self._ctx.release()
            raise
        self.atr = bytes(atr)
        self.extended_length = atr_extended_length(self.atr)
        self._pci = s.SCARD_PCI_T1 if self._proto == s.SCARD_PROTOCOL_T1 else s.SCARD_PCI_T0
        self._open = True

    def transmit(self, apdu: bytes) -> bytes:
        s = _lib()
        if not self._open:
            raise PcscError("the channel is closed")
        rc, response = s.SCardTransmit(self._card, self._pci, list(apdu))
        if rc != s.SCARD_S_SUCCESS:
            raise _fail(f"the card in {self.reader!r} did not answer", rc)
        return bytes(response)

    def close(self, *, reset: bool = False) -> None:
        """Let go of the card; ``reset`` also resets it (drops its volatile state)."""
        if not self._open:
            return
        s = _lib()
        self._open = False
        try:
            s.SCardDisconnect(self._card, s.SCARD_RESET_CARD if reset else s.SCARD_LEAVE_CARD)
        finally:
            self._ctx.release()

    def __enter__(self) -> PcscChannel:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Leave the card reset: a verified PIN must not outlive this terminal session.
        self.close(reset=True)
