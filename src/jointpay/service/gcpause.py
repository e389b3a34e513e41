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
first began (an application that turned it off keeps it off). A server that is never
without a deposit running would then never collect the cycles its other requests
leave: so a deposit that ends while others still run collects the young generations
itself (what was allocated since, as the collector would have) if it has been
:data:`YOUNG_EVERY` seconds since the collector last ran, and all of them once
:data:`FULL_EVERY` seconds have passed without a full collection. (Not at every such
end: a young collection then walks every running deposit's objects.)
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

YOUNG_EVERY: Final = 1.0
"""Seconds of overlapping deposits between two young collections."""
FULL_EVERY: Final = 10.0
"""Seconds of overlapping deposits, without the collector on, before a deposit that
ends collects every generation."""


class _Pauses:
    """How many deposits run now, and whether the collector was on before the first."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0
        self.restore = False
        self.since = 0.0
        """When the collector was last on or last collected everything (monotonic)."""
        self.young = 0.0
        """When the collector was last on or last collected the young generations."""


_pauses = _Pauses()


@contextmanager
def paused() -> Iterator[None]:
    """Run the block with the cyclic collector off (reference counting still frees
    everything that is not in a cycle)."""
    with _pauses.lock:
        if _pauses.depth == 0:
            _pauses.restore = gc.isenabled()
            _pauses.since = _pauses.young = time.monotonic()
            gc.disable()
        _pauses.depth += 1
    try:
        yield
    finally:
        generation = -1
        with _pauses.lock:
            _pauses.depth -= 1
            now = time.monotonic()
            if _pauses.restore:
                if _pauses.depth == 0:
                    gc.enable()
                elif now - _pauses.since >= FULL_EVERY:
                    generation, _pauses.since, _pauses.young = 2, now, now
                elif now - _pauses.young >= YOUNG_EVERY:
                    generation, _pauses.young = 1, now
        if generation >= 0:  # others still run: collect as the collector would have
            gc.collect(generation)


def freeze_inherited() -> None:
    """A worker's start: never scan the objects inherited from the parent
    (``gc.freeze``; scanning them would also copy the pages that ``fork`` shared), and
    collect its own garbage as usual (a worker forked during a deposit inherits the
    collector turned off, and :func:`paused` turns it back on only in the bank)."""
    _pauses.reset()  # one thread here: the parent's deposits are not this process's
    gc.freeze()
    gc.enable()
