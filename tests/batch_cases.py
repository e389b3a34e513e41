"""Cases every batch verifier must pass, whatever its group."""

from __future__ import annotations

from collections.abc import Callable, Sequence

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
