"""The card's non-volatile memory as a file in the home folder.

Every write is atomic and durable: write a temporary file in the same folder, fsync
it, rename it over the old one, fsync the folder. A crash at any point leaves the old
state or the new one. The file holds the card's secrets, so it is created 0600.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from jointpay.protocol.card import CardApplet, CardState, CardStateError


def atomic_write(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old or the new file."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class CardBusy(RuntimeError):
    """The card is already in use elsewhere (in a reader, or by another command)."""


class CardFile:
    """Loads and persists one card's :class:`CardState`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Take the card in hand: an exclusive lock for as long as the block runs.

        A physical card is in one place at a time. Two programs driving one card
        file at once (``card insert`` serving a reader and an in-process ``pay``,
        say) would each start from the state it loaded and could sign two payments
        with one ser. The lock (``flock`` on a file beside the card) makes the second
        one fail at once with :class:`CardBusy`; the kernel drops it if the holder
        dies, so a killed process never leaves the card stuck.
        """
        lock_path = self.path.with_name(f".{self.path.name}.lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise CardBusy(
                    f"card {self.path.stem} is in use elsewhere "
                    "(inserted in a reader with `jointpay card insert`?)"
                ) from None
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> CardState:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise
        except (OSError, UnicodeDecodeError) as exc:
            raise CardStateError(f"cannot read the card file {self.path}: {exc}") from exc
        return CardState.from_json(text)

    def save(self, state: CardState) -> None:
        atomic_write(self.path, state.to_json().encode("utf-8"))

    def applet(self) -> CardApplet:
        return CardApplet(self.load(), self.save, secrets.token_bytes)

    @classmethod
    def blank(cls, path: Path) -> tuple[CardFile, CardApplet]:
        """A new blank card, as the manufacturer delivers it to the bank (FIG. 4 step 230)."""
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if path.exists():
            raise FileExistsError(path)
        card = cls(path)
        state = CardState()
        card.save(state)
        return card, CardApplet(state, card.save, secrets.token_bytes)


class InProcessChannel:
    """Carries APDUs to an applet in the same process (a card in a local reader)."""

    extended_length = True

    def __init__(self, applet: CardApplet) -> None:
        self.applet = applet

    def transmit(self, apdu: bytes) -> bytes:
        return self.applet.process(apdu)
