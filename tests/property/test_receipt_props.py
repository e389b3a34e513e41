"""The receipt's results, built for a whole deposit at once (each amount formatted once),
are what formatting each payment's answer on its own gives."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from jointpay.domain.money import format_amount
from jointpay.service.deposit import PaymentResult, results_json

_RESULTS = st.lists(
    st.builds(
        PaymentResult,
        card=st.sampled_from(["", "4000000000000002", "4000000000000010"]),
        ser=st.none() | st.integers(0, (1 << 64) - 1),
        status=st.sampled_from(["accepted", "rejected", "pending"]),
        reason=st.none() | st.sampled_from(["duplicate", "malformed", "bad_signature"]),
        amount=st.none() | st.sampled_from([1, 5, 100, 250]) | st.integers(1, (1 << 63) - 1),
    ),
    max_size=60,
)


@given(_RESULTS, st.sampled_from(["EUR", "JPY", "BHD", "USD"]))
def test_results_json_formats_each_answer_as_on_its_own(
    results: list[PaymentResult], currency: str
) -> None:
    got = results_json(results, currency)
    assert got == [
        {
            "card": r.card,
            "ser": r.ser,
            "status": r.status,
            "reason": r.reason,
            "amount": None if r.amount is None else format_amount(r.amount, currency),
        }
        for r in results
    ]
    assert [list(d) for d in got] == [["card", "ser", "status", "reason", "amount"]] * len(got)
