"""canonical_json gives the standard library's bytes, whichever encoder it used.

Digests and signatures of batches, deposits and receipts are over these bytes, and
other implementations compute them with their own JSON encoders from the rule (keys
sorted, no whitespace, non-ASCII escaped). :func:`canonical_json` takes ``orjson``'s
answer when it cannot differ from ``json.dumps``; Hypothesis looks for a value where
it does: every string character class, integers around the 64-bit limits, keys that
sort differently as code points and as bytes, deep nesting.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from jointpay.protocol.deposit import _canonical_json_std, canonical_json

_EDGES = [0, -1, 1, (1 << 63) - 1, 1 << 63, -(1 << 63), -(1 << 63) - 1, (1 << 64) - 1, 1 << 64]
ints_st = st.one_of(st.integers(), st.sampled_from(_EDGES), st.integers(-(1 << 70), 1 << 70))
# every character class: printable ASCII, DEL, controls, Latin-1, BMP (line separators
# among them), astral planes; surrogates are not valid str for orjson or UTF-8
text_st = st.one_of(
    st.text(alphabet=st.characters(max_codepoint=0x7F)),
    st.text(alphabet=st.characters(max_codepoint=0x2FFFF, exclude_categories=["Cs"])),
    st.sampled_from(["", "\x7f", "\u2028", "\x00", "a\x1fb", "é", "\U0001f600"]),
)
json_st = st.recursive(
    st.one_of(st.none(), st.booleans(), ints_st, text_st),
    lambda inner: st.one_of(
        st.lists(inner, max_size=6), st.dictionaries(text_st, inner, max_size=6)
    ),
    max_leaves=40,
)


def _reference(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@settings(max_examples=600, deadline=None)
@given(json_st)
def test_canonical_json_is_the_standard_librarys(obj: Any) -> None:
    assert canonical_json(obj) == _reference(obj)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.integers(), ints_st, min_size=1))
def test_non_string_keys_go_to_the_standard_library(obj: dict[Any, int]) -> None:
    # json turns them into strings; orjson refuses them
    assert canonical_json(obj) == _reference(obj) == _canonical_json_std(obj)


def test_a_batch_shaped_document() -> None:
    card = {
        "cert": "ab" * 200,
        "payments": [
            {"ser": s, "spec": "00ff", "b": "01", "r": "02", "hint": ""} for s in range(50)
        ],
    }
    batch = {"format": "jointpay-batch/1", "bank_id": "B", "sid": "S", "cards": [card] * 3}
    assert canonical_json(batch) == _reference(batch)
    assert canonical_json(batch).startswith(b'{"bank_id":"B","cards":[{"cert":"abab')
