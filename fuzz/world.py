"""A small real world for the fuzz targets: a bank, one issued card, one terminal.

Built once per fuzzing process in a temporary folder, with the real code: the card's
state is a genuinely personalised card, the terminal's configuration a genuinely
registered merchant. ``record_payment`` runs one honest payment and returns the
command and response APDUs, which seed the fuzzers' corpora.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from jointpay.adapters.card_file import CardFile, InProcessChannel
from jointpay.adapters.terminal_store import SqliteTerminalStore, TerminalFile
from jointpay.home import Home
from jointpay.protocol.card import CardApplet, CardState
from jointpay.protocol.terminal import CardClient, Terminal

PIN = "2468"
NOW = 1_800_000_000


@dataclass
class World:
    root: Path
    card_state: str
    """The issued card's state (JSON), to start every run from."""
    terminal_file: TerminalFile

    def applet(self) -> tuple[CardApplet, list[CardState]]:
        """A fresh applet on the issued state; the list collects what it persists."""
        saved: list[CardState] = []
        state = CardState.from_json(self.card_state)
        return CardApplet(state, saved.append, bytes), saved

    def terminal(self, store_path: Path) -> Terminal:
        store = SqliteTerminalStore(store_path)
        return Terminal(self.terminal_file.config(frozenset()), store)


def build(suite: str = "secp256k1") -> World:
    root = Path(tempfile.mkdtemp(prefix="jointpay-fuzz-"))
    h = Home(root, "memory:", lambda: NOW)
    h.init_bank(suite=suite, group=None, currency="EUR", bank_id="fuzz-bank")
    with h.bank() as bank:
        bank.open_account("alice", 100_000)
        card = h.issue_card(
            bank, holder="alice", pin=PIN, load=50_000, mode="cash", limit=0, user_key="card"
        )
        h.open_merchant(bank, "Shop")
    state = CardFile(h.card_path(card.card_number)).load().to_json()
    return World(root, state, h.terminal_file("Shop"))


def record_payment(world: World) -> list[tuple[bytes, bytes]]:
    """One honest payment; the (command, response) APDU pairs it took."""
    applet, _ = world.applet()
    pairs: list[tuple[bytes, bytes]] = []

    class Recording(InProcessChannel):
        def transmit(self, apdu: bytes) -> bytes:
            response = super().transmit(apdu)
            pairs.append((apdu, response))
            return response

    terminal = world.terminal(world.root / "record.db")
    terminal.pay(CardClient(Recording(applet)), 1250, lambda: PIN, NOW)
    return pairs


def run_fuzzer(
    target: Callable[[bytes], None], seeds: Callable[[], list[bytes]], name: str
) -> None:
    """libFuzzer on ``target``; without a corpus folder in argv, start from ``seeds()``."""
    import atheris

    argv = list(sys.argv)
    if not any(not a.startswith("-") for a in argv[1:]):
        corpus = tempfile.mkdtemp(prefix=f"jointpay-{name}-")
        for i, seed in enumerate(seeds()):
            Path(corpus, f"seed-{i}").write_bytes(seed)
        argv.append(corpus)
    atheris.Setup(argv, target)
    atheris.Fuzz()


def split(data: bytes, max_len: int) -> tuple[int, list[bytes]]:
    """A fuzz input as a flags byte and up to 32 length-prefixed items."""
    if not data:
        return 0, []
    flags, rest, items = data[0], data[1:], []
    while len(rest) >= 2 and len(items) < 32:
        n = int.from_bytes(rest[:2], "big") % max_len
        items.append(rest[2 : 2 + n])
        rest = rest[2 + n :]
    return flags, items


def join(flags: int, items: list[bytes]) -> bytes:
    """The inverse of :func:`split`, for seeds."""
    return bytes([flags]) + b"".join(len(i).to_bytes(2, "big") + i for i in items)
