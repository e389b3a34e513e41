"""Clearing between banks under a clone, a replay and a second settlement run (each
case failed on the code before its fix): tests/scheme_world.py, every book audited."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scheme_world import Scheme, scheme
from worlds import PIN


def _statuses(receipt: dict[str, Any]) -> list[tuple[object, object]]:
    return [(r["status"], r["reason"]) for r in receipt["results"]]


def _forget_taken(w: Scheme, merchant: str) -> None:
    """The terminal's record of its pending payments dropped (a second terminal of the
    same merchant, in effect): its next payment may reuse a (card, ser)."""
    with w.ha.terminal(merchant) as (_, store):
        store._db.execute("DELETE FROM payments")


def test_a_clones_two_spends_in_one_batch_are_answered_each_by_the_house(
    tmp_path: Path,
) -> None:
    """A clone of bank-b's card spends its ser 0 twice at bank-a's Shop, and both
    payments reach bank-a in one batch. bank-b takes the first and refuses the second
    (duplicate, double_spend evidence). The house read bank-b's answers by (card, ser),
    the second overwriting the first: it booked neither and told bank-a both were
    refused, while bank-b had debited the card and booked that it owed the house."""
    w = scheme(tmp_path)
    path = w.hb.card(w.card).path
    snapshot = path.read_bytes()
    w.ha.pay(w.card, "Shop", 1_000, PIN)
    first = w.ha.export_batch("Shop")
    _forget_taken(w, "Shop")
    path.write_bytes(snapshot)  # the clone: the card's state before it paid
    w.ha.pay(w.card, "Shop", 1_500, PIN)
    batch = w.ha.export_batch("Shop")
    batch["cards"][0]["payments"] = first["cards"][0]["payments"] + batch["cards"][0]["payments"]
    receipt = w.ha.deposit("Shop", w.a, batch)
    assert _statuses(receipt) == [("accepted", None), ("rejected", "duplicate")]
    assert w.a.account(w.a.merchant("Shop").account_id).balance == 1_000
    assert w.house.positions() == {"bank-a": 1_000, "bank-b": -1_000}
    assert [a.kind for a in w.b.alerts()] == ["double_spend"]
    assert w.audits_ok()
