"""The cyclic garbage collector, paused while a deposit runs.

A deposit allocates a few objects per payment (the parsed payment, its record, its
result) and keeps most of them until the receipt is signed. Every 700 allocations
CPython's collector looks at the young objects, and now and then at *all* objects the
process holds, among them the parsed batch itself: measured on a 10,000-payment
deposit (secp256k1, 100 cards), about 85 young collections and one full one, 70 to
115 ms of the parent's 450, for no garbage found, since these objects form no cycles
and are freed by their reference counts. :func:`paused` turns the collector off for
the deposit's duration and back on after it (the young collection that follows takes
about a millisecond). A worker of the verification pool freezes what it inherited from
the bank at ``fork`` (:func:`freeze_inherited`) so that its own collections never walk
the bank's heap.

Process-wide and thread-safe: deposits run side by side in a server's threads, and the
collector comes back on when the last of them ends, and only if it was on before the
first began (an application that turned it off keeps it off).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class _Pauses:
    """How many deposits run now, and whether the collector was on before the first."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0
        self.restore = False


_pauses = _Pauses()


@contextmanager
def paused() -> Iterator[None]:
    """Run the block with the cyclic collector off (reference counting still frees
    everything that is not in a cycle)."""
    with _pauses.lock:
        if _pauses.depth == 0:
            _pauses.restore = gc.isenabled()
            gc.disable()
        _pauses.depth += 1
    try:
        yield
    finally:
        with _pauses.lock:
            _pauses.depth -= 1
            if _pauses.depth == 0 and _pauses.restore:
                gc.enable()


def freeze_inherited() -> None:
    """A worker's start: never scan the objects inherited from the parent
    (``gc.freeze``; scanning them would also copy the pages that ``fork`` shared), and
    collect its own garbage as usual (a worker forked during a deposit inherits the
    collector turned off, and :func:`paused` turns it back on only in the bank)."""
    _pauses.reset()  # one thread here: the parent's deposits are not this process's
    gc.freeze()
    gc.enable()
