"""The card applet as a virtual ICC in a ``vsmartcard-vpcd`` reader.

vpcd is a PC/SC reader driver loaded by ``pcscd``; for each reader slot it listens on a
TCP port (35963 for the first) and waits for a virtual card to connect. The framing is
tiny: every message, both ways, is a 2-byte big-endian length and a payload. A payload
of one byte from vpcd is a control message (power off, power on, reset, ask for the
ATR); any longer payload is a command APDU, answered by one response APDU.

Why not the ``virtualsmartcard`` package that ships vicc: it is not on PyPI (Debian
installs it for the system Python only), it logs every APDU at INFO level (a VERIFY
carries the PIN), it calls ``sys.exit`` on a socket error, and it does not loop on
short reads. The protocol is thirty lines; this adapter is only those lines, and the
card itself stays the sans-I/O :class:`~jointpay.protocol.card.CardApplet`.

Power: a power-off or reset drops the applet's RAM (selection, PIN status, pending
GET RESPONSE data); what the card committed to its file stays. Every state change is
written to the file atomically *before* the response leaves, so pulling the card at
any point leaves its old state or its new one (see ``docs/pcsc.md``).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from jointpay.protocol.card import CardApplet

log = logging.getLogger(__name__)

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 35963

CTRL_OFF, CTRL_ON, CTRL_RESET, CTRL_ATR = 0, 1, 2, 4


def make_atr() -> bytes:
    """The card's answer to reset (ISO 7816-3): T=1, extended length, "jointpay".

    ``3B`` direct convention; ``T0 = 8E`` (TD1 follows, 14 historical bytes);
    ``TD1 = 80`` (TD2 follows, T=0); ``TD2 = 01`` (T=1). Historical bytes in
    compact-TLV (category ``80``, ISO 7816-4 8.1.1): ``73 80 01 C0``, card
    capabilities (selection by full DF name; command chaining and extended Lc/Le);
    ``58`` + "jointpay", card issuer's data. Then TCK, the XOR of T0 .. the last
    historical byte, which ISO 7816-3 requires whenever a protocol other than T=0 is
    offered.
    """
    issuer = b"jointpay"
    historical = bytes([0x80, 0x73, 0x80, 0x01, 0xC0, 0x50 | len(issuer)]) + issuer
    body = bytes([0x80 | len(historical), 0x80, 0x01]) + historical
    tck = 0
    for byte in body:
        tck ^= byte
    return b"\x3b" + body + bytes([tck])


ATR: Final = make_atr()


class VpcdError(ConnectionError):
    """The vpcd reader cannot be reached, or broke the framing."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """``HOST:PORT`` (``[v6]:PORT`` too)."""
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{text!r} is not HOST:PORT")
        return cls(host.strip("[]"), int(port))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


_QUICKACK: Final = getattr(socket, "TCP_QUICKACK", None)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    """Read exactly ``n`` bytes, acknowledging each read at once.

    vpcd does not disable Nagle's algorithm, so its next message waits for our ACK,
    and Linux delays ACKs by up to 40 ms: every APDU through pcscd took 43 ms.
    Asking for an immediate ACK after each read (TCP_QUICKACK, which the kernel
    clears again by itself) brings the round trip down to 0.2 ms.
    """
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("vpcd closed the connection")
        if _QUICKACK is not None:
            sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        buf += chunk
    return bytes(buf)


def _read_message(sock: socket.socket) -> bytes:
    """One framed message from vpcd (an empty payload comes back as b"")."""
    (size,) = struct.unpack("!H", _recv_exact(sock, 2))
    return _recv_exact(sock, size) if size else b""


def _send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(struct.pack("!H", len(payload)) + payload)


ApduHook = Callable[[str, bytes], None]
"""Called with ("command", apdu) before and ("response", rapdu) after each APDU."""


class VirtualCard:
    """Serves one applet to one vpcd reader slot until :meth:`stop`.

    ``applet`` is built by ``load`` when the card is first powered and again after each
    power-off, so the card always starts from what its non-volatile memory holds.
    """

    def __init__(
        self,
        load: Callable[[], CardApplet],
        endpoint: Endpoint = Endpoint(),
        *,
        on_apdu: ApduHook | None = None,
    ) -> None:
        self._load = load
        self.endpoint = endpoint
        self._on_apdu = on_apdu
        self._applet: CardApplet | None = None
        self._sock: socket.socket | None = None
        self._first: bytes | None = None
        self._stopping = threading.Event()
        self.apdus = 0
        self.powered = False

    # -- connection ---------------------------------------------------------------------
    def connect(self, timeout: float = 5.0, *, first_poll: float = 1.0) -> None:
        """Connect to vpcd, retrying until ``timeout``; raise :class:`VpcdError`.

        The reader counts as reached only when vpcd speaks first (it asks for the ATR
        on its next presence poll, every few hundred ms). A connection that vpcd has
        not taken in ``first_poll`` seconds is dropped and made again: right after a
        card is pulled, vpcd may leave a new connection waiting in its listen queue.
        """
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            if self._stopping.is_set():
                raise VpcdError("the card was pulled")
            sock: socket.socket | None = None
            try:
                sock = socket.create_connection((self.endpoint.host, self.endpoint.port), 2.0)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.settimeout(min(first_poll, max(deadline - time.monotonic(), 0.05)))
                first = _read_message(sock)
            except (OSError, EOFError) as exc:
                if sock is not None:
                    sock.close()
                why = f"{getattr(exc, 'strerror', None) or exc or 'vpcd did not poll'}"
                if time.monotonic() + delay > deadline:
                    raise VpcdError(
                        f"no vpcd reader took the card at {self.endpoint} ({why}): is pcscd "
                        "running with the vsmartcard-vpcd driver, and is that slot free?"
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
                continue
            sock.settimeout(None)
            self._sock = sock
            self._first = first
            return

    def stop(self) -> None:
        """Pull the card: close the connection; :meth:`serve` returns."""
        self._stopping.set()
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    # -- the card -------------------------------------------------------------------------
    def _power(self, on: bool) -> None:
        # The applet is rebuilt from the file at power-on: RAM does not survive.
        self._applet = self._load() if on else None
        self.powered = on

    def handle(self, payload: bytes) -> bytes | None:
        """One message from vpcd; the reply to send, if any."""
        if len(payload) == 1:
            ctrl = payload[0]
            if ctrl == CTRL_OFF:
                self._power(False)
            elif ctrl in (CTRL_ON, CTRL_RESET):
                self._power(True)
            elif ctrl == CTRL_ATR:
                return ATR
            else:
                log.warning("vpcd sent an unknown control byte %#04x", ctrl)
            return None
        if self._applet is None:  # vpcd powers the card before any APDU; be safe
            self._power(True)
        assert self._applet is not None
        if self._on_apdu:
            self._on_apdu("command", payload)
        response = self._applet.process(payload)
        self.apdus += 1
        if self._on_apdu:
            self._on_apdu("response", response)
        return response

    def serve(self) -> None:
        """Answer vpcd until stopped or until vpcd hangs up (raises :class:`VpcdError`)."""
        sock = self._sock
        if sock is None:
            raise VpcdError("not connected")
        try:
            first, self._first = self._first, None
            if first:  # the message connect() read to know vpcd had taken the card
                reply = self.handle(first)
                if reply is not None:
                    _send(sock, reply)
            while not self._stopping.is_set():
                message = _read_message(sock)
                if not message:
                    log.warning("vpcd sent an empty message")
                    continue
                reply = self.handle(message)
                if reply is not None:
                    _send(sock, reply)
        except (EOFError, OSError) as exc:
            if self._stopping.is_set():
                return
            raise VpcdError(f"the vpcd reader at {self.endpoint} went away: {exc}") from exc
        finally:
            self._power(False)
