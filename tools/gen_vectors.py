"""Generate the test vectors of CONTRACT section 3 (and CARD-CERT parsing vectors).

    python tools/gen_vectors.py            # (re)write vectors/*.json
    python tools/gen_vectors.py --check    # exit 1 unless the files on disk match

Deterministic: every secret, nonce randomness and key derives from SEED by label, so
the output is byte-identical on every run. Each invalid case starts from a valid
signature and changes exactly one thing, named in its comment.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from jointpay.crypto.certs import CardMode, SigningKey, issue_card_cert
from jointpay.crypto.group import (
    SECP256K1_P,
    Group,
    ModpGroup,
    get_group,
    named_modp_groups,
)
from jointpay.crypto.joint import Role, derive_secret, prove_possession
from jointpay.crypto.schnorr import SecretScalar, sign

ROOT = Path(__file__).resolve().parents[1]
SEED = b"jointpay/v1/test-vectors/seed-1"
OUT_PAYMENT = ROOT / "vectors" / "payment_cert.json"
OUT_CARD_CERT = ROOT / "vectors" / "card_cert.json"


def det(label: str) -> bytes:
    return hashlib.sha256(SEED + b"/" + label.encode()).digest()


def secret(group: Group, label: str) -> SecretScalar:
    return derive_secret(group, SEED, label.encode())


def valid_cases(group: Group, gname: str | None) -> list[dict[str, Any]]:
    suite = group.suite
    specs: list[tuple[int, bytes, str]] = [
        (0, b"", "ser 0, empty spec"),
        (1, b"\x00", "one zero byte of spec"),
        (7, b"coffee 2.50 EUR", "short ASCII spec"),
        (42, bytes(range(256)), "spec with every byte value"),
        (1 << 32, b"\xff" * 1000, "ser 2^32, 1000-byte spec"),
        ((1 << 64) - 1, b"last", "ser 2^64-1, the largest"),
        (123456789, det("spec-a") * 4, "random-looking 128-byte spec"),
        (3, b"JPS1" + det("spec-b"), "spec-shaped bytes"),
        (99, b"x", "single byte spec"),
        (2**63, b"high ser", "ser 2^63"),
    ]
    cases = []
    for i, (ser, spec, comment) in enumerate(specs):
        x = secret(group, f"{suite}/{gname}/key-{i % 3}")
        y = group.public_key(x.reveal())
        cert, _ = sign(group, x, y, ser, spec, aux=det(f"{suite}/{gname}/aux-{i}"))
        cases.append(
            _case(
                group,
                gname,
                y.encoded,
                cert.ser,
                spec,
                cert.b_bytes,
                cert.r_bytes,
                True,
                f"valid: {comment}",
            )
        )
    for n in (2, 3):  # joint keys: x = sum S_i, Y = prod P_i
        shares = [secret(group, f"{suite}/{gname}/share-{n}-{j}") for j in range(n)]
        y = group.product(group.public_key(s.reveal()) for s in shares)
        assert y is not None
        x = SecretScalar(sum(s.reveal() for s in shares) % group.q)
        cert, _ = sign(group, x, y, 1000 + n, b"joint", aux=det(f"{suite}/{gname}/joint-{n}"))
        cases.append(
            _case(
                group,
                gname,
                y.encoded,
                cert.ser,
                b"joint",
                cert.b_bytes,
                cert.r_bytes,
                True,
                f"valid: joint key of {n} contributions, Y = prod g^-S_i, signed with x = sum S_i",
            )
        )
    return cases


def _case(
    group: Group,
    gname: str | None,
    y: bytes,
    ser: int,
    spec: bytes,
    b: bytes,
    r: bytes,
    valid: bool,
    comment: str,
) -> dict[str, Any]:
    return {
        "suite": group.suite,
        "group": gname,
        "joint_public_key": y.hex(),
        "ser": ser,
        "spec": spec.hex(),
        "b": b.hex(),
        "r": r.hex(),
        "valid": valid,
        "comment": comment,
    }


def invalid_cases(group: Group, gname: str | None, base: dict[str, Any]) -> list[dict[str, Any]]:
    q = group.q
    y = bytes.fromhex(base["joint_public_key"])
    b = int(base["b"], 16)
    r = int(base["r"], 16)
    out: list[dict[str, Any]] = []

    def bad(comment: str, **changes: Any) -> None:
        case = dict(base)
        case.update(changes)
        case["valid"] = False
        case["comment"] = f"invalid: {comment}"
        out.append(case)

    def s32(v: int) -> str:
        return v.to_bytes(32, "big").hex()

    bad("tampered b (last bit flipped)", b=s32(b ^ 1) if (b ^ 1) < q else s32(b ^ 2))
    bad("tampered r (last bit flipped)", r=s32(r ^ 1) if 0 < (r ^ 1) < q else s32(r ^ 2))
    bad("tampered ser (+1)", ser=base["ser"] + 1)
    spec = bytearray.fromhex(base["spec"])
    spec[0] ^= 0x01
    bad("tampered spec (first byte changed)", spec=spec.hex())
    bad("tampered spec (one byte appended)", spec=base["spec"] + "00")
    other = group.public_key(secret(group, f"{group.suite}/{gname}/other").reveal())
    bad("wrong key (another valid key)", joint_public_key=other.encoded.hex())
    bad("r = 0", r=s32(0))
    bad("r = q", r=s32(q))
    bad("r = q + r (r >= q, same value mod q)", r=s32(q + r) if q + r < 1 << 256 else s32(q))
    bad("b = q (b >= q)", b=s32(q))
    bad("b = b + q (b >= q, same value mod q)", b=s32(b + q) if b + q < 1 << 256 else s32(q + 1))
    bad("b = 2^256 - 1", b="ff" * 32)
    bad("ser = 2^64 (out of range)", ser=1 << 64)
    bad("ser negative", ser=-1)
    bad("b is 31 bytes", b=s32(b)[2:])
    bad("b is 33 bytes", b="00" + s32(b))
    bad("r is 31 bytes", r=s32(r)[2:])
    bad("r is 33 bytes", r="00" + s32(r))
    if isinstance(group, ModpGroup):
        p = group.p
        n = group.element_len
        bad("Y = 1, the identity", joint_public_key=(1).to_bytes(n, "big").hex())
        bad("Y = 0", joint_public_key=bytes(n).hex())
        bad("Y = p", joint_public_key=p.to_bytes(n, "big").hex())
        bad("Y = p + 1 (above p)", joint_public_key=(p + 1).to_bytes(n, "big").hex())
        bad(
            "Y = p - 1, of order 2: outside the subgroup",
            joint_public_key=(p - 1).to_bytes(n, "big").hex(),
        )
        k = 2
        while pow(k, q, p) == 1:  # an element outside the order-q subgroup
            k += 1
        bad(
            f"Y = {k}, outside the order-q subgroup (Y^q != 1)",
            joint_public_key=k.to_bytes(n, "big").hex(),
        )
        bad("Y is 255 bytes", joint_public_key=y[1:].hex())
        bad("Y is 257 bytes", joint_public_key="00" + y.hex())
    else:
        bad(
            "Y = 33 zero bytes (the identity has no compressed encoding)",
            joint_public_key="00" * 33,
        )
        x = 5
        while pow(x**3 + 7, (SECP256K1_P - 1) // 2, SECP256K1_P) == 1:
            x += 1  # x^3 + 7 is a non-residue: no point has this x
        bad(
            f"Y off the curve (x = {x} has no y)",
            joint_public_key=("02" + x.to_bytes(32, "big").hex()),
        )
        bad(
            "Y x-coordinate >= the field prime",
            joint_public_key="02" + (SECP256K1_P + 1).to_bytes(32, "big").hex(),
        )
        bad("Y with prefix 04 and 33 bytes", joint_public_key="04" + y[1:].hex())
        bad("Y with prefix 05", joint_public_key="05" + y[1:].hex())
        from coincurve import PublicKey

        full = PublicKey(y).format(compressed=False)
        bad(
            "Y uncompressed (65 bytes), a valid point in the wrong form",
            joint_public_key=full.hex(),
        )
        bad("Y is 32 bytes", joint_public_key=y[1:].hex())
        bad("Y is 34 bytes", joint_public_key=y.hex() + "00")
    return out


def payment_vectors() -> dict[str, Any]:
    groups = named_modp_groups()
    suites: list[tuple[Group, str | None]] = [(get_group("secp256k1"), None)]
    for name in sorted(groups):
        suites.append((get_group("modp-2048-256", name), name))
    cases: list[dict[str, Any]] = []
    for group, gname in suites:
        valid = valid_cases(group, gname)
        cases += valid + invalid_cases(group, gname, valid[2])
    return {
        "description": (
            "PAYMENT-CERT vectors of CONTRACT section 2, made by "
            "tools/gen_vectors.py from the fixed seed "
            f"{SEED.decode()!r}; every invalid case changes one thing of a "
            "valid one. Checked by tests/independent (a verifier in plain "
            "Python integers and hashlib) and by jointpay itself."
        ),
        "groups": {name: groups[name].to_json() for name in sorted(groups)},
        "cases": cases,
    }


def card_cert_vectors() -> dict[str, Any]:
    """CARD-CERT parsing: valid certificates and malformed variants, with the bank key."""
    bank = SigningKey.from_private_bytes("vector-bank", det("bank-key"))
    out: list[dict[str, Any]] = []
    for suite in ("secp256k1", "modp-2048-256"):
        group = get_group(suite)
        number = "4000000000000002"
        su = secret(group, f"cc/{suite}/user")
        sc = secret(group, f"cc/{suite}/bank")
        contributions = [
            prove_possession(group, su, number, Role.USER, aux=det(f"{suite}/u")),
            prove_possession(group, sc, number, Role.BANK, aux=det(f"{suite}/b")),
        ]
        cert = issue_card_cert(
            bank,
            group=group,
            card_number=number,
            contributions=contributions,
            currency="EUR",
            mode=CardMode.CASH,
            not_before=1_700_000_000,
            not_after=1_900_000_000,
            max_amount=50_000,
            services=("retail",),
            cert_id=det(f"{suite}/id")[:16],
        )
        enc = cert.encode()
        out.append({"suite": suite, "cert": enc.hex(), "valid": True, "comment": "valid CARD-CERT"})

        def bad(data: bytes, comment: str, expect: str, suite: str = suite) -> None:
            out.append(
                {
                    "suite": suite,
                    "cert": data.hex(),
                    "valid": False,
                    "expect": expect,
                    "comment": comment,
                }
            )

        bad(enc[:-1], "truncated by one byte", "decode")
        bad(enc + b"\x00", "one trailing byte", "decode")
        bad(b"\x02" + enc[1:], "unsupported version 2", "decode")
        bad(enc[:-64] + bytes(64), "zeroed signature", "verify")
        sig_flip = bytearray(enc)
        sig_flip[-1] ^= 1
        bad(bytes(sig_flip), "signature bit flipped", "verify")
        body_flip = bytearray(enc)
        body_flip[20] ^= 1
        bad(
            bytes(body_flip),
            "a byte of the bank id changed (signature no longer covers it)",
            "decode-or-verify",
        )
        bad(b"", "empty", "decode")
    return {
        "description": (
            "CARD-CERT parsing vectors made by tools/gen_vectors.py; "
            "'expect' says whether decoding or signature verification "
            "must refuse."
        ),
        "bank_id": "vector-bank",
        "bank_public_key": bank.verify_key.raw.hex(),
        "cases": out,
    }


def render(obj: dict[str, Any]) -> str:
    return json.dumps(obj, indent=1, sort_keys=True) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    files = {OUT_PAYMENT: render(payment_vectors()), OUT_CARD_CERT: render(card_cert_vectors())}
    if args.check:
        stale = [
            p
            for p, text in files.items()
            if not p.exists() or p.read_text(encoding="utf-8") != text
        ]
        for p in stale:
            print(f"{p} differs from what tools/gen_vectors.py generates")
        return 1 if stale else 0
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
