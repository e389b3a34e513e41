"""The collector is paused while deposits run, and comes back exactly as it was."""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Callable, Iterator

import pytest

from jointpay.service import gcpause
from jointpay.service.verify_pool import Verifier


@pytest.fixture(autouse=True)
def _collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


def _failing_deposit() -> None:
    with gcpause.paused():
        assert not gc.isenabled()
        with gcpause.paused():  # nested: still off after the inner block
            pass
        assert not gc.isenabled()
        raise RuntimeError("a deposit failed")


def test_paused_turns_the_collector_off_and_back_on_even_on_error() -> None:
    with pytest.raises(RuntimeError, match="a deposit failed"):
        _failing_deposit()
    assert gc.isenabled()


def test_an_application_that_turned_it_off_keeps_it_off() -> None:
    gc.disable()
    with gcpause.paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_overlapping_deposits_in_threads_restore_it_when_the_last_ends() -> None:
    def deposit_and_check() -> None:
        with gcpause.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the other deposit is still running

    _overlapping(deposit_and_check)
    assert gc.isenabled()


def _worker_state() -> tuple[bool, int]:
    with gcpause.paused():  # a chunk's verification: what it keeps is not unfrozen
        pass
    return gc.isenabled(), gc.get_freeze_count()


def test_a_worker_forked_during_a_deposit_collects_its_own_garbage() -> None:
    """A worker forked while the bank's collector is paused must not inherit the pause
    for its whole life, and must never walk (and so copy) the bank's heap."""
    verifier = Verifier(workers=1)
    try:
        with gcpause.paused():
            assert threading.active_count() == 1  # the pool forks
            enabled, frozen = verifier._get_pool().submit(_worker_state).result(timeout=60)
    finally:
        verifier.close()
    assert enabled
    assert frozen > 1000  # the bank's objects, inherited by fork


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def _overlapping(inner: Callable[[], None]) -> None:
    """Run ``inner`` in a deposit that ends while another deposit still runs."""
    inside, release = threading.Event(), threading.Event()

    def other() -> None:
        with gcpause.paused():
            inside.set()
            release.wait(10)

    t = threading.Thread(target=other)
    t.start()
    try:
        assert inside.wait(10)
        inner()
    finally:
        release.set()
        t.join(10)


def test_a_server_never_without_a_deposit_still_collects_cycles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Deposits that overlap one another would keep the collector off for good: one
    that ends while others run collects what the collector would have."""
    gone = threading.Event()
    seen: list[int] = []

    def deposit() -> None:
        with gcpause.paused():
            cycle = _Cycle()
            weakref.finalize(cycle, gone.set)
            del cycle
            assert not gone.is_set()  # a cycle: reference counting cannot free it

    real = gc.collect
    monkeypatch.setattr(gcpause.gc, "collect", lambda g=2: seen.append(g) or real(g))
    _overlapping(_short_deposit)
    assert seen == []  # the collector ran less than a second ago
    monkeypatch.setattr(gcpause, "YOUNG_EVERY", 0.0)
    _overlapping(deposit)
    assert gone.is_set()
    assert seen == [1]
    monkeypatch.setattr(gcpause, "FULL_EVERY", 0.0)  # long overdue: every generation
    _overlapping(_short_deposit)
    assert seen == [1, 2]
    assert gc.isenabled()


def _short_deposit() -> None:
    with gcpause.paused():
        pass


def _in_generation(obj: object, generation: int) -> bool:
    return any(o is obj for o in gc.get_objects(generation))


def test_what_a_deposit_still_holds_skips_the_young_collections() -> None:
    """The caller still holds the batch and the receipt when the pause ends: the
    young collections would walk all of it, for nothing. It goes to the oldest
    generation unwalked, where a full collection still finds cycles."""
    gc.collect()  # a full collection just now
    gone = threading.Event()
    with gcpause.paused():
        kept = [{"payment": i} for i in range(1000)]
        cycle = _Cycle()
        weakref.finalize(cycle, gone.set)
        del cycle
    assert gc.isenabled()
    assert _in_generation(kept, 2)
    assert not _in_generation(kept, 0)
    assert not _in_generation(kept, 1)
    gc.collect(1)
    assert not gone.is_set()  # the young collections no longer see it
    gc.collect(2)
    assert gone.is_set()  # a full collection does


def test_without_a_recent_full_collection_they_age_as_usual(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Objects moved straight to the oldest generation do not count towards the next
    full collection: once none ran for UNSEEN_FOR seconds, they stay young."""
    monkeypatch.setattr(gcpause, "UNSEEN_FOR", 0.0)
    gc.collect()
    with gcpause.paused():
        kept = [{"payment": i} for i in range(1000)]
    assert not _in_generation(kept, 2)  # young (or moved on by a young collection)


def test_a_heap_the_application_froze_stays_frozen() -> None:
    """An application that froze its heap (before forking its own workers, say) finds
    it frozen after a deposit: the pause does not unfreeze it."""
    gc.collect()
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        assert frozen > 1000
        with gcpause.paused():
            kept = [{"payment": i} for i in range(1000)]
        assert gc.get_freeze_count() == frozen
        assert not _in_generation(kept, 2)
    finally:
        gc.unfreeze()
