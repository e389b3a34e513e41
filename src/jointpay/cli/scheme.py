"""Commands of a scheme with several banks: ``scheme``, ``bank join-scheme``,
``bank add-clearing`` and the ``clearing`` house (docs/variants.md)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from jointpay.adapters.card_file import atomic_write
from jointpay.cli.common import (
    AdminTokenFileOpt,
    Group,
    HomeOpt,
    JsonOpt,
    LogLevel,
    LogLevelOpt,
    check_listenable,
    hex_bytes,
    service_url,
)
from jointpay.cli.common import command_context as _ctx
from jointpay.cli.output import EXIT_REFUSED, answering, plural, readable, serving, styled
from jointpay.crypto.certs import BankRole, SigningKey, check_ident, issue_bank_cert
from jointpay.crypto.errors import CryptoError
from jointpay.domain.money import format_amount
from jointpay.home import Home
from jointpay.service.clearing import ClearingHouse
from jointpay.service.errors import BadInput, Refused

scheme_app = typer.Typer(
    cls=Group, no_args_is_help=True, help="The scheme root: certifies member banks."
)
clearing_app = typer.Typer(cls=Group, no_args_is_help=True, help="A clearing house between banks.")

YEAR = 365 * 86_400


def _root_key(root: Path) -> SigningKey:
    path = root / "scheme" / "root.json"
    if not path.exists():
        raise BadInput("no_scheme", "no scheme root here: run `jointpay scheme init` first")
    d = json.loads(path.read_text(encoding="utf-8"))
    return SigningKey.from_private_bytes(d["scheme_id"], bytes.fromhex(d["private_key"]))


@scheme_app.command("init")
def scheme_init(
    ctx: typer.Context,
    scheme_id: Annotated[str, typer.Option("--id", help="the scheme's name")],
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Make the scheme's root key (kept in HOME/scheme/root.json, owner-only)."""
    h, out = _ctx(ctx, home, json_)
    with answering(out):
        try:
            check_ident(scheme_id, "scheme id")
        except CryptoError as exc:
            raise BadInput("bad_parameters", str(exc)) from exc
        folder = h.root / "scheme"
        if (folder / "root.json").exists():
            raise Refused("exists", "a scheme root exists here already")
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = SigningKey.generate(scheme_id)
        atomic_write(
            folder / "root.json",
            json.dumps({"scheme_id": scheme_id, "private_key": key.private_bytes().hex()}).encode(),
        )
        pub = key.verify_key.raw.hex()
        out.done(
            {"scheme_id": scheme_id, "public_key": pub},
            lambda c: c.print(f"Scheme {scheme_id}: root key {pub}"),
        )


@scheme_app.command("certify")
def scheme_certify(
    ctx: typer.Context,
    member: Annotated[str, typer.Option("--id", help="the bank's or house's id")],
    key: Annotated[str, typer.Option("--key", help="its Ed25519 public key (hex)")],
    role: Annotated[str, typer.Option(help="bank or clearing")] = "bank",
    years: Annotated[int, typer.Option(min=1, max=30)] = 5,
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Certify a member's key: prints its BANK-CERT."""
    h, out = _ctx(ctx, home, json_)
    with answering(out):
        root = _root_key(h.root)
        now = h.clock()
        try:
            cert = issue_bank_cert(
                root,
                bank_id=member,
                public_key=hex_bytes(key, "--key"),
                role=BankRole(role),
                not_before=now - 3600,
                not_after=now + years * YEAR,
            )
        except (CryptoError, ValueError) as exc:
            raise BadInput("bad_parameters", str(exc)) from exc
        hexed = cert.encode().hex()
        out.done(
            {"member": member, "role": role, "bank_cert": hexed},
            lambda c: c.print(hexed),
        )


# -- a bank joins ---------------------------------------------------------------------


def bank_join_scheme(
    ctx: typer.Context,
    scheme_id: Annotated[str, typer.Option("--scheme-id")],
    scheme_key: Annotated[str, typer.Option("--scheme-key", help="the root public key (hex)")],
    bank_cert: Annotated[str, typer.Option("--bank-cert", help="our BANK-CERT (hex)")],
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Join a scheme: cards issued from now on accept its other banks' merchants."""
    h, out = _ctx(ctx, home, json_)
    with answering(out), h.bank() as bank:
        got = bank.interbank.join(
            scheme_id, hex_bytes(scheme_key, "--scheme-key"), hex_bytes(bank_cert, "--bank-cert")
        )
        out.done(got, lambda c: c.print(f"{bank.bank_id} joined scheme {scheme_id}."))


def bank_add_clearing(
    ctx: typer.Context,
    url: Annotated[str, typer.Option("--url", help="the clearing house's URL")],
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Clear other banks' cards through this clearing house (its certificate is checked)."""
    from jointpay.api.client import HttpClearing

    h, out = _ctx(ctx, home, json_)
    with answering(out), h.bank() as bank:
        port = HttpClearing(service_url(url, "--url"))
        try:
            got = bank.interbank.add_clearing(port, url)
        finally:
            port.close()
        out.done(
            got,
            lambda c: c.print(
                f"Clearing through {got['clearing_house']}: members {', '.join(got['members'])}"
            ),
        )


# -- the clearing house -----------------------------------------------------------------


def _settled(bank: str, amount: str, cur: str) -> str:
    """A position paid out: the house pays the member (positive), or the member pays
    the house (negative)."""
    if amount.startswith("-"):
        return f"{bank} pays the house {amount[1:]} {cur}"
    return f"the house pays {bank} {amount} {cur}"


@clearing_app.command("init")
def clearing_init(
    ctx: typer.Context,
    ch_id: Annotated[str, typer.Option("--id", help="the house's id")],
    currency: str = "EUR",
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Create a clearing house: its key and its books (JOINTPAY_DB or SQLite in HOME)."""
    h, out = _ctx(ctx, home, json_)
    with answering(out):
        store = h.store(create=True)
        try:
            house = ClearingHouse.create(store, ch_id, currency, clock=h.clock)
            pub = house.verify_key.raw.hex()
        finally:
            store.close()
        out.done(
            {"clearing_house": ch_id, "public_key": pub},
            lambda c: c.print(f"Clearing house {ch_id}: key {pub}"),
        )


@contextmanager
def _house(h: Home) -> Iterator[ClearingHouse]:
    """The clearing house of this home, its store closed afterwards."""
    store = h.store()
    try:
        yield ClearingHouse(store, clock=h.clock)
    finally:
        store.close()


@clearing_app.command("join-scheme")
def clearing_join(
    ctx: typer.Context,
    scheme_id: Annotated[str, typer.Option("--scheme-id")],
    scheme_key: Annotated[str, typer.Option("--scheme-key")],
    cert: Annotated[str, typer.Option("--cert", help="our BANK-CERT, role clearing (hex)")],
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Keep the scheme root key and our own certificate."""
    h, out = _ctx(ctx, home, json_)
    with answering(out):
        with _house(h) as house:
            got = house.join(
                scheme_id, hex_bytes(scheme_key, "--scheme-key"), hex_bytes(cert, "--cert")
            )
        out.done(got, lambda c: c.print(f"{got['clearing_house']} joined {scheme_id}."))


@clearing_app.command("add-member")
def clearing_add_member(
    ctx: typer.Context,
    bank_cert: Annotated[str, typer.Option("--bank-cert", help="the bank's BANK-CERT (hex)")],
    url: Annotated[str | None, typer.Option("--url", help="the bank's URL")] = None,
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Admit a bank of the scheme (its BANK-CERT is checked against the root)."""
    h, out = _ctx(ctx, home, json_)
    with answering(out):
        if url is not None:
            service_url(url, "--url")
        with _house(h) as house:
            got = house.add_member(bank_cert, url)
        out.done(got, lambda c: c.print(f"{got['member']} clears through {got['clearing_house']}."))


@clearing_app.command("settle")
def clearing_settle(ctx: typer.Context, home: HomeOpt = None, json_: JsonOpt = False) -> None:
    """Pay out the net positions and tell every member (undelivered ones are retried)."""
    h, out = _ctx(ctx, home, json_)
    with answering(out):
        with _house(h) as house:
            got = house.settle()
            cur = house.currency
        paid = {bank: format_amount(v, cur) for bank, v in got["paid"].items()}

        def human(c: Console) -> None:
            if got["settlement"] is None:
                c.print("No open position to settle.")
            else:
                c.print(f"Settlement {got['settlement']} of {got['clearing_house']}:")
            for bank, amount in paid.items():
                c.print(f"  {_settled(bank, amount, cur)}")
            c.print(f"Settlements delivered: {got['delivered']}.")
            if got["undelivered"]:
                c.print(
                    styled(
                        ("Not delivered (retried at the next run): ", "red"),
                        ", ".join(got["undelivered"]),
                    )
                )

        out.done({**got, "paid": paid, "currency": cur}, human)


@clearing_app.command("audit")
def clearing_audit(ctx: typer.Context, home: HomeOpt = None, json_: JsonOpt = False) -> None:
    """Check the house's books and that every member's books mirror them."""
    h, out = _ctx(ctx, home, json_)
    with answering(out):
        with _house(h) as house:
            got = house.audit()
            cur = house.currency
        positions = {b: format_amount(v, cur) for b, v in got["positions"].items()}
        books = {
            b: None if v is None else format_amount(v, cur) for b, v in got["member_books"].items()
        }
        shown = {
            **got,
            "positions": positions,
            "member_books": books,
            "cleared_amount": format_amount(got["cleared_amount"], cur),
            "currency": cur,
        }

        def human(c: Console) -> None:
            c.print(
                styled(("The house's books balance and every member mirrors them.", "green"))
                if got["ok"]
                else styled(("Violations:", "red"))
            )
            for v in got["violations"]:
                c.print(f"  - {v}")
            c.print(f"  positions ({cur}): {readable(positions)}")
            c.print(
                f"  member books ({cur}): "
                + readable({b: v or "no answer" for b, v in books.items()})
            )
            c.print(
                f"  cleared: {plural(got['cleared_payments'], 'payment')}, "
                f"{shown['cleared_amount']} {cur}"
            )

        out.done(shown, human)
        if not got["ok"]:
            raise typer.Exit(EXIT_REFUSED)


@clearing_app.command("serve")
def clearing_serve(
    ctx: typer.Context,
    host: str = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8431,
    admin_token_file: AdminTokenFileOpt = None,
    log_level: LogLevelOpt = LogLevel.WARNING,
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Serve the clearing house over HTTP (OpenAPI at /docs)."""
    h, out = _ctx(ctx, home, json_)
    with answering(out):
        from jointpay.api.clearing_server import serve_clearing

        check_listenable(host, port)
        with serving(out):
            serve_clearing(
                h,
                host=host,
                port=port,
                admin_token_file=admin_token_file,
                log_level=log_level.value,
            )
