"""The cyclic garbage collector, paused while a deposit runs.

A deposit allocates a few objects per payment (the parsed payment, its record, its
result) and keeps most of them until the receipt is signed. Every 700 allocations
CPython's collector looks at the young objects, and now and then at *all* objects the
process holds, among them the parsed batch itself: measured on a 10,000-payment
deposit (secp256k1, 100 cards), about 85 young collections and one full one, 70 to
115 ms of the parent's 450, for no garbage found, since these objects form no cycles
and are freed by their reference counts. :func:`paused` turns the collector off for
the deposit's duration and back on after it. A worker of the verification pool
freezes what it inherited from the bank at ``fork`` (:func:`freeze_inherited`) so that
its own collections never walk the bank's heap.

When the last pause ends, what it allocated and still holds would be the collector's
young generation: its next collections walk all of it, while the caller still holds
the batch and the receipt. With 10,000 cards that was a young collection of 41 ms as
the bank returned, then a middle one of 60 ms in the terminal's record of the receipt,
on the merchant's side. So the pause moves every object the collector tracks into its
oldest generation (``gc.freeze`` then ``gc.unfreeze``, two list splices) before it
turns the collector back on. Nothing is lost: the oldest generation is collected too,
cycles included, only less often. Such objects do not count towards the next full
collection, though, so this is done only while the collector has made a full
collection within :data:`UNSEEN_FOR` seconds (else the objects age as they always
did). It is not done where objects are frozen already: in a pool worker, or in an
application that froze its heap before forking.

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
UNSEEN_FOR: Final = 10.0
"""A pause's objects go straight to the oldest generation only while the collector
made a full collection less than this many seconds before (see above)."""


class _Pauses:
    """How many deposits run now, and whether the collector was on before the first."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.lock = threading.Lock()
        self.frozen = False
        """This process froze its heap (a pool worker: :func:`freeze_inherited`)."""
        self.full_count = -1
        self.full_at = 0.0
        """The collector's count of full collections when last read, and when it was
        seen to change (monotonic; the first reading counts as a change, so a process
        starts out as if it had just collected everything)."""
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
                    _age_unseen(now)
                    gc.enable()
                elif now - _pauses.since >= FULL_EVERY:
                    generation, _pauses.since, _pauses.young = 2, now, now
                elif now - _pauses.young >= YOUNG_EVERY:
                    generation, _pauses.young = 1, now
        if generation >= 0:  # others still run: collect as the collector would have
            gc.collect(generation)


def _age_unseen(now: float) -> None:
    """Move every tracked object into the oldest generation without walking them (the
    lock held, the collector still off), unless :data:`UNSEEN_FOR` seconds have passed
    without a full collection, or objects are frozen here."""
    full = gc.get_stats()[-1]["collections"]
    if full != _pauses.full_count:
        _pauses.full_count, _pauses.full_at = full, now
    if _pauses.frozen or now - _pauses.full_at >= UNSEEN_FOR or gc.get_freeze_count():
        return
    gc.freeze()
    gc.unfreeze()


def freeze_inherited() -> None:
    """A worker's start: never scan the objects inherited from the parent
    (``gc.freeze``; scanning them would also copy the pages that ``fork`` shared), and
    collect its own garbage as usual (a worker forked during a deposit inherits the
    collector turned off, and :func:`paused` turns it back on only in the bank)."""
    _pauses.reset()  # one thread here: the parent's deposits are not this process's
    gc.freeze()
    _pauses.frozen = True  # never unfrozen here (gc.get_freeze_count walks them)
    gc.enable()
