"""Cases every batch verifier must pass, whatever its group."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence

from hypothesis import strategies as st

from jointpay.crypto.batch import Item
from jointpay.crypto.schnorr import PaymentCert


def _broken(it: Item) -> Item:
    c = it.cert
    return Item(it.y_enc, PaymentCert(c.ser, c.spec, c.b, c.r ^ 2), it.hint, it.known)


def one_bad_among_ten_thousand_and_all_bad(
    base: Sequence[Item], verify: Callable[[list[Item]], list[bool]]
) -> None:
    """10,000 payments, ``base`` repeated (each still valid: the batch test sees
    certificates, not their (card, ser)), one broken: exactly that one is refused. Then
    64 broken ones: all refused."""
    items = [base[i % len(base)] for i in range(10_000)]
    bad = 7_777
    items[bad] = _broken(items[bad])
    got = verify(items)
    assert [i for i, ok in enumerate(got) if not ok] == [bad]
    assert verify([_broken(it) for it in base[:64]]) == [False] * 64


def plans(kinds: Sequence[str], cards: int = 3) -> st.SearchStrategy[list[tuple[str, int]]]:
    """Batches to build: up to 24 payments, each of a kind and from one of ``cards``."""
    return st.lists(
        st.tuples(st.sampled_from(kinds), st.integers(min_value=0, max_value=cards - 1)),
        min_size=1,
        max_size=24,
    )


def exponents_are_fresh(items: list[Item], verify: Callable[..., list[bool]]) -> None:
    """Two runs of ``verify(items, draw=...)`` over the same valid batch of 8 draw
    different z: they come from the CSPRNG, not from the input."""
    seen: list[int] = []

    def spy(bits: int) -> int:
        z = secrets.randbits(bits)
        seen.append(z)
        return z

    assert verify(items, draw=spy) == [True] * 8
    first = list(seen)
    verify(items, draw=spy)
    assert len(first) == 8
    assert seen[8:] != first
