"""A damaged on-line answer is no answer: the terminal never reads an approval into it.

The bank's reply to FIG. 8's on-line check comes over the network; one without a boolean
``approved`` (a proxy's error page turned JSON, a truncated body, a bank of another
version) must count as an unreachable bank: declined above the floor limit, offline
below it, and never a crash or a guessed approval."""

from __future__ import annotations

from typing import Any

import pytest

from jointpay.crypto.certs import SigningKey
from jointpay.home import online_clearance, read_online_answer
from jointpay.protocol.terminal import (
    OnlineAnswer,
    OnlinePolicy,
    OnlineUnavailable,
    PaymentDeclined,
)
from jointpay.service.errors import BadInput, Refused, ServiceError


class AnsweringBank:
    """The bank's side of the check, as the terminal's port sees it: whatever came back."""

    bank_id = "bank-a"

    def __init__(self, answer: object) -> None:
        self.answer = answer
        self.asked: list[dict[str, Any]] = []

    def online_check(self, message: dict[str, Any]) -> object:
        self.asked.append(message)
        return self.answer


DAMAGED: list[object] = [
    {},
    {"reason": None},
    {"approved": "true"},
    {"approved": 1},
    {"approved": None},
    {"approved": True, "reason": 7},
    {"approved": True, "topup": -1},
    {"approved": True, "topup": "100"},
    {"approved": True, "topup": 1.5},
    {"approved": True, "topup": True},
    [],
    "approved",
]


@pytest.mark.parametrize("answer", DAMAGED)
def test_a_damaged_answer_is_refused_by_name(answer: object) -> None:
    with pytest.raises(OnlineUnavailable, match="on-line answer"):
        read_online_answer(answer)


def test_sound_answers_read_as_they_are() -> None:
    assert read_online_answer({"approved": True}) == OnlineAnswer(True, None, 0)
    assert read_online_answer({"approved": False, "reason": "blacklisted", "topup": 0}) == (
        OnlineAnswer(False, "blacklisted", 0)
    )
    assert read_online_answer({"approved": True, "reason": None, "topup": None}) == (
        OnlineAnswer(True, None, 0)
    )
    assert read_online_answer({"approved": True, "topup": 2500}).topup == 2500


def _policy(answer: object, **kw: Any) -> tuple[OnlinePolicy, AnsweringBank]:
    bank = AnsweringBank(answer)
    key = SigningKey.generate("bank-a")
    check = online_clearance(bank, key, lambda: 1_700_000_000)  # type: ignore[arg-type]
    return OnlinePolicy(check, **kw), bank


@pytest.mark.parametrize("answer", [{}, {"approved": "yes"}, {"approved": True, "topup": -5}])
def test_above_the_floor_limit_a_damaged_answer_declines(answer: object) -> None:
    policy, bank = _policy(answer, floor_limit=1_000)
    with pytest.raises(PaymentDeclined) as exc:
        policy.clear("4000-0001", 5_000)
    assert exc.value.code == "bank_unreachable"
    assert len(bank.asked) == 1


def test_a_sampled_payment_below_it_goes_on_offline() -> None:
    policy, bank = _policy({"reason": None}, floor_limit=1_000, sample=1.0)
    assert policy.clear("4000-0001", 500).status == "unreachable"
    assert len(bank.asked) == 1


def test_a_sound_decline_still_declines_and_an_approval_approves() -> None:
    policy, _ = _policy({"approved": False, "reason": "blacklisted"}, floor_limit=0)
    with pytest.raises(PaymentDeclined) as exc:
        policy.clear("4000-0001", 5_000)
    assert exc.value.code == "online_declined"
    policy, _ = _policy({"approved": True, "reason": None, "topup": 0}, floor_limit=0)
    assert policy.clear("4000-0001", 5_000).status == "approved"


class FailingBank(AnsweringBank):
    """A bank port whose question ends in a service error (as :class:`HttpBank` raises
    them: ``bad_answer`` for a reply that is no JSON, ``error`` for a bare 500 after
    its retries)."""

    def __init__(self, error: ServiceError) -> None:
        super().__init__(None)
        self.error = error

    def online_check(self, message: dict[str, Any]) -> object:
        self.asked.append(message)
        raise self.error


def _failing(error: ServiceError, **kw: Any) -> OnlinePolicy:
    check = online_clearance(FailingBank(error), SigningKey.generate("bank-a"), lambda: 1)  # type: ignore[arg-type]
    return OnlinePolicy(check, **kw)


@pytest.mark.parametrize(
    "code", ["bank_unreachable", "bad_answer", "error", "no_bank", "no_clearing_house"]
)
def test_no_answer_from_the_bank_is_an_unreachable_bank(code: str) -> None:
    error = Refused(code, "no answer")
    assert _failing(error, floor_limit=1_000, sample=1.0).clear("4000-0001", 500).status == (
        "unreachable"
    )
    with pytest.raises(PaymentDeclined) as exc:
        _failing(error, floor_limit=1_000).clear("4000-0001", 5_000)
    assert exc.value.code == "bank_unreachable"


@pytest.mark.parametrize(
    "error",
    [Refused("unknown_card", "not ours"), BadInput("malformed", "bad"), Refused("replay", "")],
)
def test_the_banks_own_refusals_still_decline_below_the_floor(error: ServiceError) -> None:
    with pytest.raises(PaymentDeclined) as exc:
        _failing(error, floor_limit=1_000, sample=1.0).clear("4000-0001", 500)
    assert exc.value.code == "online_declined"
    assert error.code in str(exc.value)
