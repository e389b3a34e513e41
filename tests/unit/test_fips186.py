"""FIPS 186-4 A.1.1.2/A.1.1.3, A.2.3/A.2.4 and the secure group p = 2qh + 1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from jointpay.crypto import fips186
from jointpay.crypto.errors import InvalidGroupError
from jointpay.crypto.fips186 import (
    FipsGroup,
    SecureGroup,
    generate_bank_group,
    generate_g,
    generate_pq,
    validate_g,
    validate_pq,
    validate_secure_group,
    verify_bank_group,
)
from jointpay.crypto.group import ModpGroup, get_group

SHIPPED = Path(fips186.__file__).parent / "groups" / "jointpay-secure-2048-256.json"


@pytest.fixture(scope="module")
def bank_group() -> FipsGroup:
    return generate_bank_group("my-bank-group")


def test_bank_group_round_trip(bank_group: FipsGroup) -> None:
    obj = bank_group.to_json()
    assert verify_bank_group(json.loads(json.dumps(obj))) == bank_group
    group = ModpGroup(bank_group.params)  # passes the suite's own validation too
    assert pow(group.g, group.q, group.p) == 1


def test_regenerate_from_the_same_seed(bank_group: FipsGroup) -> None:
    p, q, seed, counter = generate_pq(bank_group.seed)
    assert (p, q, seed, counter) == (
        bank_group.p,
        bank_group.q,
        bank_group.seed,
        bank_group.counter,
    )
    assert generate_g(p, q, seed, bank_group.index) == bank_group.g


@pytest.mark.parametrize(
    ("change", "msg"),
    [
        ({"p": "+2"}, "p"),
        ({"q": "+2"}, "q"),
        ({"g": "+1"}, "g"),
        ({"counter": 1}, "p"),
        ({"index": 2}, "g"),
        ({"seed": "flip"}, "q"),
    ],
)
def test_tampered_bank_group(bank_group: FipsGroup, change: dict[str, Any], msg: str) -> None:
    obj = bank_group.to_json()
    for k, v in change.items():
        if v == "+2":
            obj[k] = format(int(obj[k], 16) + 2, "x")
        elif v == "+1":
            obj[k] = format(int(obj[k], 16) + 1, "x")
        elif v == "flip":
            obj[k] = format(int(obj[k], 16) ^ 1, "064x")
        else:
            obj[k] = obj[k] + v
    with pytest.raises(InvalidGroupError, match=msg):
        verify_bank_group(obj)


def test_validation_rules(bank_group: FipsGroup) -> None:
    g = bank_group
    with pytest.raises(InvalidGroupError, match="shorter"):
        validate_pq(g.p, g.q, b"short", g.counter)
    with pytest.raises(InvalidGroupError, match="counter"):
        validate_pq(g.p, g.q, g.seed, 4 * 2048)
    with pytest.raises(InvalidGroupError, match="size"):
        validate_pq(g.p >> 1, g.q, g.seed, g.counter)
    with pytest.raises(InvalidGroupError, match="not in"):
        validate_g(g.p, g.q, 1, g.seed, g.index)
    with pytest.raises(InvalidGroupError, match="order"):
        validate_g(g.p, g.q, g.p - 1, g.seed, g.index)
    with pytest.raises(InvalidGroupError, match="one byte"):
        generate_g(g.p, g.q, g.seed, 256)
    with pytest.raises(InvalidGroupError, match="malformed"):
        FipsGroup.from_json({"name": "x"})
    if g.counter > 0:
        with pytest.raises(InvalidGroupError):
            validate_pq(g.p, g.q, g.seed, g.counter - 1)


def test_seed_without_prime_q() -> None:
    seed = bytes(32)
    while fips186.is_probable_prime(fips186._q_from_seed(seed)):
        seed = (int.from_bytes(seed, "big") + 1).to_bytes(32, "big")
    with pytest.raises(InvalidGroupError, match="prime q"):
        generate_pq(seed)


def test_an_earlier_acceptable_counter_is_refused(
    monkeypatch: pytest.MonkeyPatch, bank_group: FipsGroup
) -> None:
    g = bank_group
    real = fips186.is_probable_prime
    first = fips186._p_candidate(g.seed, g.q, 1)
    monkeypatch.setattr(fips186, "is_probable_prime", lambda n: n == first or real(n))
    if g.counter > 0:
        with pytest.raises(InvalidGroupError, match="earlier counter"):
            validate_pq(g.p, g.q, g.seed, g.counter)
    monkeypatch.setattr(fips186, "is_probable_prime", lambda n: n == g.q)
    with pytest.raises(InvalidGroupError, match="p is not prime"):
        validate_pq(g.p, g.q, g.seed, g.counter)
    with pytest.raises(InvalidGroupError, match="no p within"):
        generate_pq(g.seed)
    monkeypatch.setattr(fips186, "is_probable_prime", lambda n: False)
    with pytest.raises(InvalidGroupError, match="q is not prime"):
        validate_pq(g.p, g.q, g.seed, g.counter)


# -- the shipped secure group -------------------------------------------------------------


def shipped() -> dict[str, Any]:
    return dict(json.loads(SHIPPED.read_text(encoding="utf-8")))


def test_shipped_secure_group_verifies_from_its_seed() -> None:
    grp = validate_secure_group(shipped())
    assert grp.p == 2 * grp.q * grp.h + 1
    group = get_group("modp-2048-256", "jointpay-secure-2048-256")
    assert isinstance(group, ModpGroup)
    assert group.p == grp.p
    assert SecureGroup.from_json(grp.to_json()) == grp
    import hashlib

    assert grp.seed == hashlib.sha256(b"jointpay/v1/secure-modp-2048-256/seed-0").digest()


@pytest.mark.parametrize(
    ("key", "msg"),
    [
        ("q", "q is not"),
        ("h", "h is not"),
        ("p", "p is not"),
        ("g", "g is not"),
        ("q_counter", "q is not"),
        ("h_counter", "h is not"),
        ("seed", "q is not"),
    ],
)
def test_tampered_secure_group(key: str, msg: str) -> None:
    obj = shipped()
    if isinstance(obj[key], int):
        obj[key] += 1
    elif key == "seed":
        obj[key] = format(int(obj[key], 16) ^ 1, "064x")
    else:
        obj[key] = format(int(obj[key], 16) + 2, "x")
    with pytest.raises(InvalidGroupError, match=msg):
        validate_secure_group(obj)
    with pytest.raises(InvalidGroupError, match="malformed"):
        SecureGroup.from_json({"name": "x"})


def test_secure_group_primality_branches(monkeypatch: pytest.MonkeyPatch) -> None:
    grp = SecureGroup.from_json(shipped())
    monkeypatch.setattr(fips186, "is_probable_prime", lambda n: n in (grp.q, grp.h))
    with pytest.raises(InvalidGroupError, match="p is not prime"):
        validate_secure_group(shipped())
    monkeypatch.setattr(fips186, "is_probable_prime", lambda n: n == grp.q)
    with pytest.raises(InvalidGroupError, match="h is not prime"):
        validate_secure_group(shipped())
    monkeypatch.setattr(fips186, "is_probable_prime", lambda n: False)
    with pytest.raises(InvalidGroupError, match="256-bit prime"):
        validate_secure_group(shipped())


def test_secure_group_minimality_check(monkeypatch: pytest.MonkeyPatch) -> None:
    grp = SecureGroup.from_json(shipped())
    real = fips186.is_probable_prime
    fake_q = fips186._secure_q(grp.seed, 0)
    monkeypatch.setattr(fips186, "is_probable_prime", lambda n: n == fake_q or real(n))
    with pytest.raises(InvalidGroupError, match="earlier q_counter"):
        validate_secure_group(shipped(), check_first=True)
    h0 = fips186._secure_h(grp.seed, grp.q, 0)
    monkeypatch.setattr(
        fips186,
        "is_probable_prime",  # real q; every h and p but h0 "prime"
        lambda n: real(n) if n.bit_length() == 256 else n != h0,
    )
    with pytest.raises(InvalidGroupError, match=r"earlier h_counter \(1\)"):
        validate_secure_group(shipped(), check_first=True)


def test_secure_search_stops_at_the_first_acceptable_counter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The search itself, with the expensive tests replaced by a known answer."""
    seed = b"test-seed"
    # every number but the first q candidate is "prime"; only h_counter 3 passes the filter
    q0 = fips186._secure_q(seed, 0)
    target = fips186._secure_h(seed, fips186._secure_q(seed, 1), 3)
    monkeypatch.setattr(fips186, "_cheap_filter", lambda h, p: h == target)
    monkeypatch.setattr(fips186, "is_probable_prime", lambda n: n != q0)
    seen: list[int] = []
    found = fips186.generate_secure_group("t", seed, progress=seen.append)
    assert (found.q_counter, found.h_counter) == (1, 3)
    assert seen == [0]
    assert found.p == 2 * found.q * found.h + 1
    assert found.g == fips186._secure_g(found.p, found.q, found.h, seed, 1)


def test_random_seeds_until_q_is_prime(
    monkeypatch: pytest.MonkeyPatch, bank_group: FipsGroup
) -> None:
    bad = bytes(32)
    while fips186.is_probable_prime(fips186._q_from_seed(bad)):
        bad = (int.from_bytes(bad, "big") + 1).to_bytes(32, "big")
    seeds = iter([bad, bank_group.seed])
    monkeypatch.setattr(fips186.secrets, "token_bytes", lambda n: next(seeds))
    assert generate_pq()[2] == bank_group.seed


def test_cheap_filter_and_params() -> None:
    grp = SecureGroup.from_json(shipped())
    assert fips186._cheap_filter(grp.h, grp.p)
    assert not fips186._cheap_filter(grp.h * 3, grp.p)
    assert not fips186._cheap_filter(grp.h, grp.p * 65537)
    assert grp.params.name == grp.name
    assert get_group("modp-2048-256", grp.name).q == grp.params.q


def test_random_seed_without_p_is_replaced(
    monkeypatch: pytest.MonkeyPatch, bank_group: FipsGroup
) -> None:
    real = fips186.is_probable_prime
    other = bytes(31) + b"\x01"
    while not real(fips186._q_from_seed(other)):
        other = (int.from_bytes(other, "big") + 1).to_bytes(32, "big")
    seeds = iter([other, bank_group.seed])
    monkeypatch.setattr(fips186.secrets, "token_bytes", lambda n: next(seeds))
    # q candidates are tested for real; of the p candidates only the bank group's is prime
    monkeypatch.setattr(
        fips186,
        "is_probable_prime",
        lambda n: real(n) if n.bit_length() == 256 else n == bank_group.p,
    )
    assert generate_pq()[:2] == (bank_group.p, bank_group.q)


def test_minimality_check_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    grp = SecureGroup.from_json(shipped())
    real = fips186.is_probable_prime
    # q checked for real; no earlier h is "prime"; the recorded h and p are
    monkeypatch.setattr(
        fips186,
        "is_probable_prime",
        lambda n: real(n) if n.bit_length() == 256 else n in (grp.h, grp.p),
    )
    real_h = fips186._secure_h
    monkeypatch.setattr(  # a record whose h sits at counter 5, so the walk is short
        fips186,
        "_secure_h",
        lambda seed, q, counter: grp.h if counter == 5 else real_h(seed, q, 0) + 2 * counter,
    )
    obj = {**shipped(), "h_counter": 5}
    assert validate_secure_group(obj, check_first=True).h == grp.h
