"""Payments between banks, in one process (tests/scheme_world.py): each hop can be
reached into, and the books of the three parties are audited after each case."""

from __future__ import annotations

from pathlib import Path

from scheme_world import Scheme, scheme
from worlds import PIN


def test_a_foreign_clones_second_spend_reaches_its_issuer(tmp_path: Path) -> None:
    """A clone of bank-b's card spends its ser 0 again at another merchant of bank-a.
    bank-a has that (card, ser) booked under another spec: it still sends it to be
    cleared, and bank-b refuses it (duplicate), keeps both specs as double_spend
    evidence and hot-lists the card, as it does for a clone at its own merchants. It
    used to be refused at bank-a, out of the issuer's sight."""
    w: Scheme = scheme(tmp_path)
    w.ha.open_merchant(w.a, "Cafe")
    w.ha.sync_hotlist("Cafe", w.a)
    path = w.hb.card(w.card).path
    snapshot = path.read_bytes()
    first = w.ha.pay(w.card, "Shop", 1_000, PIN)
    path.write_bytes(snapshot)  # the clone: the card's state before it paid
    second = w.ha.pay(w.card, "Cafe", 1_500, PIN)
    assert first.ser == second.ser
    assert first.spec != second.spec
    batch = w.ha.export_batch("Shop")
    shop = w.ha.deposit("Shop", w.a, batch)
    cafe = w.ha.deposit("Cafe", w.a)
    assert [(r["status"], r["reason"]) for r in shop["results"]] == [("accepted", None)]
    assert [(r["status"], r["reason"]) for r in cafe["results"]] == [("rejected", "duplicate")]
    assert [a.kind for a in w.b.alerts()] == ["double_spend"]
    assert w.b.card(w.card).status.value == "blacklisted"
    # the same payment deposited again is refused at bank-a itself, and raises nothing
    again = w.ha.deposit("Shop", w.a, batch)
    assert [(r["status"], r["reason"]) for r in again["results"]] == [("rejected", "duplicate")]
    assert [a.kind for a in w.b.alerts()] == ["double_spend"]
    assert w.audits_ok()
