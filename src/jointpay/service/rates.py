"""The bank's published exchange-rate table, kept in its configuration.

A payment priced in another currency carries the original amount and the rate the
terminal used (``spec`` ``conversion``); the bank checks that rate against the one
in effect at the payment's time. Rates are integers: millionths of the bank's
currency per unit of the other (:data:`jointpay.domain.money.RATE_SCALE`).
"""

from __future__ import annotations

import json
from typing import Final

RATES_KEY: Final = "rates"

RateTable = dict[str, list[tuple[int, int]]]
"""currency -> [(effective_from, rate_micro), ...] sorted by time."""


def load_table(raw: str | None) -> RateTable:
    if not raw:
        return {}
    return {cur: [(int(a), int(b)) for a, b in rows] for cur, rows in json.loads(raw).items()}


def dump_table(table: RateTable) -> str:
    return json.dumps({cur: [list(r) for r in rows] for cur, rows in table.items()}, sort_keys=True)


def rate_in(table: RateTable, currency: str, when: int) -> int | None:
    """The last rate of ``currency`` that took effect at or before ``when``, or None."""
    found = None
    for start, micro in table.get(currency, ()):
        if start > when:
            break
        found = micro
    return found
