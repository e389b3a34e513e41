"""The spec decoder's fast path accepts exactly what the field-by-field reader accepts.

:func:`jointpay.protocol.spec._decode_fast` serves a bank's deposit; whenever it gives
an answer, that answer must be the reader's, and it must never accept bytes the reader
rejects. Hypothesis builds valid specs of every shape, then damages them.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from jointpay.crypto.errors import DecodeError
from jointpay.protocol.spec import Conversion, PaymentSpec, _decode_fast

_IDENT_CHARS = "ABCXYZabcxyz0189._:-"
ident_st = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:-]{0,63}\Z").filter(str.isprintable)
# mostly valid, so that whole specs are often valid; the near misses are non-ASCII,
# control characters, a final newline, leading symbols, too long
near_miss_st = st.one_of(
    ident_st.map(lambda s: s + "\n"),
    st.text(alphabet=_IDENT_CHARS + "é\t\n\x00 ", max_size=70),
)
text_st = st.one_of(ident_st, ident_st, ident_st, ident_st, near_miss_st)
currency_st = st.one_of(*[st.sampled_from(["EUR", "USD", "CHF"])] * 4, st.text(max_size=4))
u64_st = st.integers(min_value=0, max_value=(1 << 64) - 1)


def _raw_spec(bank_id: str, sid: str, currency: str, service: str, **kw: object) -> bytes:
    """Spec bytes built without the encoder's checks (so invalid fields get through)."""
    spec = PaymentSpec(
        bank_id,
        sid,
        kw["amount"],  # type: ignore[arg-type]
        currency,
        kw["time"],  # type: ignore[arg-type]
        kw["txn"],  # type: ignore[arg-type]
        kw["cert_id"],  # type: ignore[arg-type]
        service,
        kw["details"],  # type: ignore[arg-type]
        kw["conversion"],  # type: ignore[arg-type]
    )
    return spec.encode()


spec_bytes_st = st.builds(
    _raw_spec,
    bank_id=text_st,
    sid=text_st,
    currency=currency_st,
    service=st.one_of(st.just(""), text_st),
    amount=st.one_of(u64_st, st.sampled_from([0, 1, (1 << 63) - 1, 1 << 63])),
    time=u64_st,
    txn=u64_st,
    cert_id=st.binary(min_size=16, max_size=16),
    details=st.one_of(st.binary(max_size=40), st.binary(min_size=1020, max_size=1030)),
    conversion=st.one_of(
        st.none(),
        st.none(),
        st.builds(Conversion, st.integers(0, 1 << 40), st.sampled_from(["USD", "usd"]), u64_st),
    ),
)


def _reader(data: bytes) -> PaymentSpec | None:
    try:
        return PaymentSpec._decode_reader(data)
    except DecodeError:
        return None


def _same_answer(data: bytes) -> None:
    fast = _decode_fast(data)
    slow = _reader(data)
    if fast is not None:
        assert slow is not None, "the fast path accepted bytes the reader rejects"
        assert fast == slow
        assert fast.encode() == data
    public = None
    try:
        public = PaymentSpec.decode(data)
    except DecodeError:
        assert slow is None
    else:
        assert public == slow


@settings(max_examples=400, deadline=None)
@given(data=spec_bytes_st)
def test_fast_path_agrees_on_built_specs(data: bytes) -> None:
    _same_answer(data)


@settings(max_examples=400, deadline=None)
@given(data=spec_bytes_st, at=st.integers(min_value=0), value=st.integers(0, 255))
def test_fast_path_agrees_on_damaged_specs(data: bytes, at: int, value: int) -> None:
    changed = bytearray(data)
    changed[at % len(data)] = value
    _same_answer(bytes(changed))
    _same_answer(data[: at % len(data)])
    _same_answer(data + bytes([value]))


def test_details_limit_is_the_readers() -> None:
    base = PaymentSpec("bank-1", "SP-1", 1, "EUR", 1, 2, b"\x03" * 16)
    for size in (1023, 1024, 1025):
        _same_answer(base._replace(details=b"d" * size).encode())
    assert _decode_fast(base._replace(details=b"d" * 1024).encode()) is not None
    assert _decode_fast(base._replace(details=b"d" * 1025).encode()) is None


def test_fast_path_serves_the_common_shape() -> None:
    """The path is really taken for an ordinary payment (not always deferring)."""
    spec = PaymentSpec("bank-1", "SP-1", 1234, "EUR", 1_700_000_000, 7, b"\x01" * 16)
    assert _decode_fast(spec.encode()) == spec
    with_service = PaymentSpec("bank-1", "SP-1", 5, "EUR", 1, 2, b"\x02" * 16, "fuel", b"x")
    assert _decode_fast(with_service.encode()) == with_service
