"""The ``jointpay`` command line (CONTRACT section 4). Thin: parse, call, print."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from jointpay.cli.common import (
    AdminTokenFileOpt,
    Group,
    HomeOpt,
    JsonOpt,
    LogLevel,
    LogLevelOpt,
    check_listenable,
    chosen_home,
    click_errors,
    hex_bytes,
    service_url,
    unix_time,
)
from jointpay.cli.common import command_context as _ctx
from jointpay.cli.output import (
    DEBUG_ENV,
    EXIT_BAD_INPUT,
    EXIT_REFUSED,
    answering,
    internal,
    plural,
    read_pin,
    readable,
    say_error,
    serving,
    styled,
    when,
)
from jointpay.crypto.certs import check_ident
from jointpay.crypto.group import DEFAULT_MODP_GROUP, SUITE_SECP256K1, SUITES
from jointpay.domain.money import format_amount, format_rate, parse_amount, parse_rate
from jointpay.protocol.deposit import loads_strict
from jointpay.protocol.messages import AuthKind
from jointpay.protocol.spec import PaymentSpec
from jointpay.protocol.terminal import Clearance
from jointpay.service.errors import BadInput
from jointpay.service.policy import Policy

app = typer.Typer(
    cls=Group,
    no_args_is_help=True,
    add_completion=False,
    help="Offline smart-card payments with joint Schnorr signatures.",
)
bank_app = typer.Typer(cls=Group, no_args_is_help=True, help="The bank: accounts, cards, audit.")
merchant_app = typer.Typer(cls=Group, no_args_is_help=True, help="A service provider's terminal.")
card_app = typer.Typer(cls=Group, no_args_is_help=True, help="What a card tells its holder.")
app.add_typer(bank_app, name="bank")
app.add_typer(merchant_app, name="merchant")
app.add_typer(card_app, name="card")


def _scheme_commands() -> None:
    from jointpay.cli.scheme import bank_add_clearing, bank_join_scheme, clearing_app, scheme_app

    app.add_typer(scheme_app, name="scheme")
    app.add_typer(clearing_app, name="clearing")
    bank_app.command("join-scheme")(bank_join_scheme)
    bank_app.command("add-clearing")(bank_add_clearing)


PinStdin = Annotated[
    bool, typer.Option("--pin-stdin", help="Read the PIN from stdin's first line.")
]
BankUrl = Annotated[str | None, typer.Option("--bank", help="URL of a `jointpay bank serve`.")]
CardOpt = Annotated[
    str | None, typer.Option("--card", help="The card number (its file in the home).")
]
ReaderOpt = Annotated[
    str | None,
    typer.Option("--reader", help="Reach the card through this PC/SC reader (`jointpay readers`)."),
]


@app.callback()
def main(ctx: typer.Context, home: HomeOpt = None, json_: JsonOpt = False) -> None:
    ctx.obj = {"home": home, "json": json_}


_DATABASE_URLS = ("sqlite:", "postgresql:", "postgres:", "postgresql+psycopg:", "memory:")


def _bank_port(url: str | None) -> Any:
    """The bank a command talks to: embedded, or over HTTP with ``--bank URL``."""
    if url is not None:
        from jointpay.api.client import HttpBank

        return HttpBank(service_url(url, "--bank"))
    return None


# --------------------------------------------------------------------------------------
# bank
# --------------------------------------------------------------------------------------


@bank_app.command("init")
def bank_init(
    ctx: typer.Context,
    suite: Annotated[str, typer.Option(help="|".join(SUITES))] = SUITE_SECP256K1,
    group: Annotated[str | None, typer.Option(help="modp group name")] = None,
    currency: str = "EUR",
    bank_id: Annotated[str | None, typer.Option("--bank-id")] = None,
    payment_fee: Annotated[str, typer.Option(help="fee per payment")] = "0",
    withdrawal_fee: Annotated[str, typer.Option(help="fee per withdrawal")] = "0",
    generate_group: Annotated[
        str | None,
        typer.Option(
            "--generate-group", help="make the bank's own FIPS 186-4 group with this name"
        ),
    ] = None,
    group_file: Annotated[
        Path | None,
        typer.Option("--group-file", help="use a published FIPS 186-4 group record (re-checked)"),
    ] = None,
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Create the bank: signing key, group parameters, database."""
    h, out = _ctx(ctx, home, json_)
    with answering(out):
        policy = Policy(
            payment_fee=parse_amount(payment_fee, currency, allow_zero=True),
            withdrawal_fee=parse_amount(withdrawal_fee, currency, allow_zero=True),
        )
        if group is not None and suite != "modp-2048-256":
            raise BadInput("bad_group", "--group applies to the modp-2048-256 suite only")
        own: dict[str, Any] | None = None
        if generate_group is not None and group_file is not None:
            raise BadInput("bad_group", "give --generate-group or --group-file, not both")
        if generate_group is not None:
            from jointpay.crypto.fips186 import generate_bank_group

            check_ident(generate_group, "group name")
            own = generate_bank_group(generate_group).to_json()
        elif group_file is not None:
            loaded = loads_strict(group_file.read_bytes())
            if not isinstance(loaded, dict):
                raise BadInput("bad_group", "a group record is one JSON object")
            own = loaded
        params = h.init_bank(
            own_group=own,
            suite=suite,
            group=group or (DEFAULT_MODP_GROUP if suite == "modp-2048-256" else None),
            currency=currency,
            bank_id=bank_id,
            policy=policy,
        )
        out.done(
            params,
            lambda c: c.print(
                styled(
                    "Bank ",
                    (params["bank_id"], "bold"),
                    f" created in {h.root}: suite {params['suite']}"
                    + (f" ({params['group']})" if params["group"] else "")
                    + f", currency {currency}.",
                )
            ),
        )


@bank_app.command("open-account")
def bank_open_account(
    ctx: typer.Context,
    holder: Annotated[str, typer.Option()],
    balance: Annotated[str, typer.Option()] = "0",
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Open an ordinary bank account funded with BALANCE."""
    h, out = _ctx(ctx, home, json_)
    with answering(out), h.bank() as bank:
        acc = bank.open_account(holder, parse_amount(balance, bank.currency, allow_zero=True))
        amount = format_amount(acc.balance, acc.currency)
        out.done(
            {"account": acc.id, "holder": holder, "balance": amount, "currency": acc.currency},
            lambda c: c.print(
                styled("Account ", (acc.id, "bold"), f" opened with {amount} {acc.currency}.")
            ),
        )


@bank_app.command("issue-card")
def bank_issue_card(
    ctx: typer.Context,
    holder: Annotated[str, typer.Option()],
    pin_stdin: PinStdin = False,
    load: Annotated[str, typer.Option(help="initial value")] = "0",
    mode: Annotated[str, typer.Option(help="cash|credit|cheque")] = "cash",
    limit: Annotated[
        str, typer.Option(help="credit limit (credit), or number of cheques (cheque)")
    ] = "0",
    user_key: Annotated[
        str, typer.Option("--user-key", help="who makes S_U: card|holder|manufacturer|split")
    ] = "card",
    choice: Annotated[
        int | None,
        typer.Option(help="with --user-key holder/split: the key the holder picks (0-7)"),
    ] = None,
    auth: Annotated[
        str,
        typer.Option(
            help="how the initial load (the card's first withdrawal) is authenticated: "
            "signature|mac; each later withdrawal chooses with `withdraw --auth`"
        ),
    ] = "signature",
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Open a card account and personalise a new card (FIG. 4)."""
    h, out = _ctx(ctx, home, json_)
    pin = read_pin(pin_stdin, out, prompt="Choose the card's PIN")
    with answering(out), h.bank() as bank:
        issued = h.issue_card(
            bank,
            holder=holder,
            pin=pin,
            load=parse_amount(load, bank.currency, allow_zero=True),
            mode=mode,
            limit=_limit(limit, mode, bank.currency),
            user_key=user_key,
            choice=choice,
            auth=_auth(auth),
        )
        # A cheque card's C_balance counts cheques, not money.
        bal = (
            str(issued.balance)
            if mode == "cheque"
            else format_amount(issued.balance, bank.currency)
        )
        out.done(
            {
                "card": issued.card_number,
                "joint_public_key": issued.joint_key.hex(),
                "suite": issued.cert.suite,
                "balance": bal,
                "mode": mode,
                "currency": bank.currency,
                "cert_id": issued.cert.id_hex,
                "valid_until": issued.cert.not_after,
                **({"cheques": issued.balance} if mode == "cheque" else {}),
            },
            lambda c: c.print(
                styled(
                    "Card ",
                    (issued.card_number, "bold"),
                    f" issued to {holder} ({mode}, "
                    + (
                        (
                            f"a book of {plural(issued.balance, 'cheque')})."
                            if issued.balance
                            else "no cheque book: its holder's account limits its cheques)."
                        )
                        if mode == "cheque"
                        else f"balance {bal} {bank.currency})."
                    ),
                )
            ),
        )


def _auth(name: str) -> AuthKind:
    try:
        return AuthKind[name.upper()]
    except KeyError as exc:
        raise BadInput("bad_auth", "--auth is signature or mac") from exc


def _limit(text: str, mode: str, currency: str) -> int:
    """A credit limit is money; a cheque book is a whole number of cheques."""
    if mode != "cheque":
        return parse_amount(text, currency, allow_zero=True)
    if not text.isdigit() or len(text) > 6:
        raise BadInput("bad_amount", "a cheque book is a whole number of cheques")
    return int(text)


@bank_app.command("open-merchant")
def bank_open_merchant(
    ctx: typer.Context,
    name: Annotated[str, typer.Option()],
    public_key: Annotated[
        str | None,
        typer.Option(
            help="Open an account for an existing terminal (its `merchant key`), of a "
            "merchant registered with another bank; prints the MERCHANT-CERT to give it."
        ),
    ] = None,
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Open a service provider's deposit account and set up its terminal (FIG. 3)."""
    h, out = _ctx(ctx, home, json_)
    with answering(out), h.bank() as bank:
        if public_key is not None:
            raw = hex_bytes(public_key, "the public key", "bad_key")
            record, cert = bank.open_merchant(name, raw)
            out.done(
                {"merchant": name, "sid": record.sid, "bank_id": bank.bank_id, "cert": cert.hex()},
                lambda c: c.print(
                    styled(
                        "Merchant ",
                        (name, "bold"),
                        f" opened: S_id {record.sid}. Give the terminal its MERCHANT-CERT "
                        f"(`merchant add-bank --cert`):\n{cert.hex()}",
                    )
                ),
            )
            return
        tf = h.open_merchant(bank, name)
        out.done(
            {"merchant": name, "sid": tf.sid, "bank_id": tf.bank_id},
            lambda c: c.print(styled("Merchant ", (name, "bold"), f" opened: S_id {tf.sid}.")),
        )


@bank_app.command("blacklist")
def bank_blacklist(
    ctx: typer.Context,
    card: Annotated[str, typer.Option()],
    reason: str = "reported",
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Put a card's certificate on the hot list."""
    h, out = _ctx(ctx, home, json_)
    with answering(out), h.bank() as bank:
        entry = bank.blacklist(card, reason)
        out.done(
            {"card": card, "blacklisted": True, "version": entry.version},
            lambda c: c.print(f"Card {card} is on the hot list (version {entry.version})."),
        )


@bank_app.command("rates")
def bank_rates(
    ctx: typer.Context,
    currency: Annotated[str | None, typer.Option(help="set the rate of this currency")] = None,
    rate: Annotated[
        str | None, typer.Option(help="units of the bank's currency per unit of --currency")
    ] = None,
    effective_from: Annotated[
        int | None, typer.Option("--from", help="Unix time it takes effect (default now)")
    ] = None,
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Show the exchange-rate table, or publish a rate with --currency and --rate."""
    h, out = _ctx(ctx, home, json_)
    with answering(out), h.bank() as bank:
        if (currency is None) != (rate is None):
            raise BadInput("bad_usage", "give both --currency and --rate, or neither")
        if currency is not None and rate is not None:
            bank.set_rate(currency, parse_rate(rate), effective_from)
        table = bank.rates()

        def human(c: Console) -> None:
            t = Table("currency", "from", f"rate ({table['currency']})")
            for cur, rows in table["rates"].items():
                for r in rows:
                    t.add_row(cur, str(r["from"]), r["rate"])
            c.print(t)

        out.done(table, human)


@bank_app.command("settle")
def bank_settle(
    ctx: typer.Context,
    paid: Annotated[
        tuple[str, str] | None,
        typer.Option(help="HOLDER AMT: book a settlement made by other means"),
    ] = None,
    ref: Annotated[
        str | None, typer.Option(help="the settlement's reference (a cheque number)")
    ] = None,
    from_account: Annotated[
        bool, typer.Option("--from-account", help="take it from the holder's bank account")
    ] = False,
    until: Annotated[
        str | None,
        typer.Option(
            help="end of the billing period: Unix seconds or an ISO 8601 date/time, UTC "
            "unless it names its offset (default now)"
        ),
    ] = None,
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Credit settlement: bill every credit card for the period and pay out cleared
    merchant credits; or, with --paid, book a holder's settlement."""
    h, out = _ctx(ctx, home, json_)
    with answering(out), h.bank() as bank:
        if paid is not None:
            holder, amt = paid
            result = bank.repay(
                holder, parse_amount(amt, bank.currency), ref=ref, from_account=from_account
            )
            out.done(
                result,
                lambda c: c.print(
                    f"Booked {result['paid']} {bank.currency} from {holder} (ref {result['ref']})."
                ),
            )
            return
        run = bank.settle(None if until is None else unix_time(until, "--until"))

        def human(c: Console) -> None:
            for sid, amount in run["released"].items():
                c.print(f"Released {amount} {bank.currency} to merchant {sid}.")
            t = Table("card", "no.", "charges", "interest", "late", "due", "by")
            for st in run["statements"]:
                t.add_row(
                    st["card"],
                    str(st["number"]),
                    st["charges"],
                    st["interest"],
                    st["late_interest"],
                    st["balance_due"],
                    when(st["due_at"]),
                )
            c.print(t if run["statements"] else "No statement to draw up.")

        out.done(run, human)


@bank_app.command("policy")
def bank_policy(
    ctx: typer.Context,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="NAME=VALUE (amounts as decimals, others integers)"),
    ] = None,
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Show the bank's policy (fees, windows, credit terms), or change values with --set."""
    h, out = _ctx(ctx, home, json_)
    with answering(out), h.bank() as bank:
        changes: dict[str, int] = {}
        for item in set_ or []:
            name, sep, value = item.partition("=")
            if not sep:
                raise BadInput("bad_policy", f"--set takes NAME=VALUE, not {item!r}")
            if name in Policy.AMOUNTS:
                changes[name] = parse_amount(value, bank.currency, allow_zero=True)
            elif value.isdigit():
                changes[name] = int(value)
            else:
                raise BadInput("bad_policy", f"{name} must be a whole number")
        policy = bank.set_policy(**changes) if changes else bank.policy
        shown = {
            k: format_amount(v, bank.currency) if k in Policy.AMOUNTS else v
            for k, v in policy.to_json().items()
        }

        def human(c: Console) -> None:
            t = Table("policy", "value")
            for k, v in shown.items():
                t.add_row(k, str(v))
            c.print(t)

        out.done(shown, human)


@bank_app.command("unblock-card")
def bank_unblock_card(
    ctx: typer.Context,
    card: Annotated[str, typer.Option()],
    pin_stdin: PinStdin = False,
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Reset a locked card's PIN counter and set a new PIN (through the master key)."""
    h, out = _ctx(ctx, home, json_)
    pin = read_pin(pin_stdin, out, prompt="New PIN")
    with answering(out), h.bank() as bank, h.card_client(card) as client:
        bank.unblock_card(client, pin)
        out.done(
            {"card": card, "locked": False},
            lambda c: c.print(f"Card {card} unblocked with a new PIN."),
        )


@bank_app.command("alerts")
def bank_alerts(ctx: typer.Context, home: HomeOpt = None, json_: JsonOpt = False) -> None:
    """Breach evidence and other alerts."""
    h, out = _ctx(ctx, home, json_)
    with answering(out), h.bank() as bank:
        alerts = bank.alerts()
        rows = [
            {
                "card": a.card_number,
                "kind": a.kind,
                "detail": a.detail,
                "at": a.created_at,
                "evidence": json.loads(a.evidence or "{}"),
            }
            for a in alerts
        ]

        def human(c: Console) -> None:
            if not rows:
                c.print("No alerts.")
                return
            t = Table("card", "kind", "detail")
            for r in rows:
                t.add_row(r["card"], r["kind"], r["detail"])
            c.print(t)

        out.done({"alerts": rows}, human)


@bank_app.command("backfill-key-powers")
def bank_backfill_key_powers(
    ctx: typer.Context, home: HomeOpt = None, json_: JsonOpt = False
) -> None:
    """Store the comb powers of modp certificates stored before migration 0005 (once,
    after the upgrade; safe while the bank serves)."""
    h, out = _ctx(ctx, home, json_)
    with answering(out), h.bank() as bank:
        n = bank.backfill_key_powers()
        out.done(
            {"certificates": n},
            lambda c: c.print(f"Stored the comb powers of {plural(n, 'certificate')}."),
        )


@bank_app.command("audit")
def bank_audit(
    ctx: typer.Context,
    signatures: Annotated[
        bool,
        typer.Option(
            "--signatures",
            help="also verify every certificate the bank signed and every accepted "
            "payment's signature (a deposit's work again: minutes for a large bank)",
        ),
    ] = False,
    bank_key: Annotated[
        str | None,
        typer.Option(
            help="with --signatures: verify under this public key (hex, as `bank init` "
            "published it) instead of the one in the database"
        ),
    ] = None,
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Check every ledger invariant (and, with --signatures, every signature)."""
    h, out = _ctx(ctx, home, json_)
    with answering(out), h.bank() as bank:
        if bank_key is not None and not signatures:
            raise BadInput("bad_usage", "--bank-key goes with --signatures")
        key = None if bank_key is None else hex_bytes(bank_key, "--bank-key", "bad_key")
        report = bank.audit(signatures=signatures, bank_key=key)

        def human(c: Console) -> None:
            c.print(
                styled(("The books balance.", "green"))
                if report.ok
                else styled(("Violations:", "red"))
            )
            for v in report.violations:
                c.print(f"  - {v}")
            for k, v in report.figures.items():
                c.print(f"  {k}: {readable(v)}")

        out.done({"ok": report.ok, "violations": report.violations, **report.figures}, human)
        if not report.ok:
            raise typer.Exit(EXIT_REFUSED)


@bank_app.command("serve")
def bank_serve(
    ctx: typer.Context,
    host: str = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8421,
    admin_token_file: AdminTokenFileOpt = None,
    log_level: LogLevelOpt = LogLevel.WARNING,
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Serve the bank over HTTP (OpenAPI at /docs and /openapi.json)."""
    h, out = _ctx(ctx, home, json_)
    with answering(out):
        from jointpay.api.server import serve

        check_listenable(host, port)
        with serving(out):
            serve(
                h,
                host=host,
                port=port,
                admin_token_file=admin_token_file,
                log_level=log_level.value,
            )


# --------------------------------------------------------------------------------------
# payment, deposit, withdrawal
# --------------------------------------------------------------------------------------


def _fraction(value: float) -> float:
    """``--online-sample``: a fraction between 0 and 1 (not nan)."""
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise typer.BadParameter(f"is a fraction between 0 and 1, not {value}")
    return value


@app.command("pay")
def pay(
    ctx: typer.Context,
    merchant: Annotated[str, typer.Option()],
    amount: Annotated[str, typer.Option()],
    card: CardOpt = None,
    reader: ReaderOpt = None,
    pin_stdin: PinStdin = False,
    floor_limit: Annotated[
        str | None,
        typer.Option(help="ask the bank on-line to clear payments above this amount"),
    ] = None,
    online_sample: Annotated[
        float,
        typer.Option(help="and a random fraction of the others (0-1)", callback=_fraction),
    ] = 0.0,
    currency: Annotated[
        str | None,
        typer.Option(help="the price's currency, if not the card's: the card pays its conversion"),
    ] = None,
    rate: Annotated[
        str | None,
        typer.Option(
            help="units of the card's currency per unit of --currency (default: the bank's)"
        ),
    ] = None,
    bank_url: BankUrl = None,
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """One offline payment between a card and a merchant terminal (FIG. 8).

    No bank is contacted, unless --floor-limit or --online-sample ask for FIG. 8's
    on-line clearance (from the bank at --bank, or the embedded one), or --currency
    without --rate asks for the bank's exchange rate.
    """
    h, out = _ctx(ctx, home, json_)
    with answering(out):
        if rate is not None and currency is None:
            raise BadInput("bad_usage", "--rate converts a price in --currency: give both")
        tf = h.terminal_file(merchant)
        clearance: list[Clearance] = []
        taken = h.pay(
            card,
            merchant,
            amount,
            lambda: read_pin(pin_stdin, out),
            reader=reader,
            bank=_bank_port(bank_url),
            floor_limit=floor_limit,
            online_sample=online_sample,
            price_currency=currency,
            rate=rate,
            cleared=clearance.append,
        )
        online = clearance[0].status if clearance else "not_asked"
        amt = format_amount(taken.amount, taken.currency)
        conv = PaymentSpec.decode(taken.spec).conversion
        paid_in = (
            ""
            if conv is None
            else f" (a price of {format_amount(conv.orig_amount, conv.orig_currency)} "
            f"{conv.orig_currency} at {format_rate(conv.rate_micro)})"
        )
        price = (
            {}
            if conv is None
            else {
                "price": {
                    "amount": format_amount(conv.orig_amount, conv.orig_currency),
                    "currency": conv.orig_currency,
                    "rate": format_rate(conv.rate_micro),
                }
            }
        )
        out.done(
            {
                **price,
                "suite": taken.suite,
                "joint_public_key": taken.joint_key.hex(),
                "ser": taken.ser,
                "spec": taken.spec.hex(),
                "b": taken.b.hex(),
                "r": taken.r.hex(),
                "amount": amt,
                "currency": taken.currency,
                "card": taken.card_number,
                "merchant": merchant,
                "sid": tf.sid,
                "time": taken.time,
                "online": online,
            },
            lambda c: c.print(
                styled(
                    "Paid ",
                    (f"{amt} {taken.currency}", "bold"),
                    f"{paid_in} to {merchant} with card {taken.card_number} (ser {taken.ser})"
                    f"{_CLEARED[online]}.",
                )
            ),
        )


_CLEARED: dict[str, str] = {
    "not_asked": "",
    "approved": ", cleared on-line by the bank",
    "unreachable": ", offline: the bank could not be asked",
    "unanswered": ", offline: the bank would not answer on-line (too many checks)",
}


@merchant_app.command("export")
def merchant_export(
    ctx: typer.Context,
    merchant: Annotated[str, typer.Option()],
    for_bank: Annotated[
        str | None,
        typer.Option(help="The payments made out to this bank (default: the terminal's own)."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            help="Also the payments the bank settled since then (Unix seconds or ISO 8601, "
            "by its receipts' times): to deposit again at a bank restored from a backup."
        ),
    ] = None,
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Write the merchant's not-yet-deposited payments as one batch (JSON) on stdout."""
    h, out = _ctx(ctx, home, json_)
    with answering(out):
        moment = None if since is None else unix_time(since, "--since")
        batch = h.export_batch(merchant, for_bank, since=moment)
        sys.stdout.write(json.dumps(batch, sort_keys=True) + "\n")


@merchant_app.command("key")
def merchant_key(
    ctx: typer.Context,
    merchant: Annotated[str, typer.Option()],
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Show the terminal's public key, for another bank to open an account for it."""
    h, out = _ctx(ctx, home, json_)
    with answering(out):
        info = h.merchant_key(merchant)
        out.done(info, lambda c: c.print(info["public_key"]))


@merchant_app.command("add-bank")
def merchant_add_bank(
    ctx: typer.Context,
    merchant: Annotated[str, typer.Option()],
    cert: Annotated[str, typer.Option(help="The MERCHANT-CERT the other bank issued (hex).")],
    bank_url: Annotated[
        str,
        typer.Option(
            "--bank",
            help="Where that bank is reached: its URL, or the database URL of an embedded bank.",
        ),
    ],
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Register the terminal with another bank: that bank's cards pay the merchant there,
    and `deposit` sends them there."""
    h, out = _ctx(ctx, home, json_)
    with answering(out):
        raw = hex_bytes(cert, "the MERCHANT-CERT", "bad_cert")
        if not bank_url.startswith(_DATABASE_URLS):  # an embedded bank's database, or
            service_url(bank_url, "--bank")  # a service
        with h.connect(bank_url) as port:
            reg = h.add_bank(merchant, port, raw, bank_url)
        out.done(
            {"merchant": merchant, "bank_id": reg.bank_id, "sid": reg.sid},
            lambda c: c.print(
                styled(
                    "Merchant ",
                    (merchant, "bold"),
                    f" is registered with bank {reg.bank_id} (S_id {reg.sid}).",
                )
            ),
        )


@merchant_app.command("check")
def merchant_check(
    ctx: typer.Context,
    merchant: Annotated[str, typer.Option()],
    card: Annotated[str, typer.Option(help="The card number.")],
    amount: Annotated[str, typer.Option(help="In the bank's currency, e.g. 12.50.")],
    issuer: Annotated[
        str | None,
        typer.Option(help="The card's bank, when it is another bank of the scheme."),
    ] = None,
    bank_url: BankUrl = None,
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Ask the bank on-line whether the card may pay the amount now (FIG. 8's optional
    clearance, signed with the terminal's key). The answer never gives the balance."""
    h, out = _ctx(ctx, home, json_)
    with answering(out):
        port = _bank_port(bank_url)
        with contextlib.ExitStack() as stack:
            bank = port if port is not None else stack.enter_context(h.bank())
            answer = h.online_check(merchant, card, amount, bank, issuer)
        currency = str(answer["currency"])
        topup = format_amount(int(answer.get("topup") or 0), currency)
        approved = bool(answer["approved"])
        out.done(
            {"merchant": merchant, "card": card, **answer, "topup": topup},
            lambda c: c.print(
                styled(
                    f"Card {card}: ",
                    ("approved", "green")
                    if approved
                    else (f"declined ({answer['reason']})", "red"),
                    f" (its credit line can be restored by {topup} {currency})"
                    if answer.get("topup")
                    else "",
                )
            ),
        )
        if not approved:  # like a declined payment
            raise typer.Exit(EXIT_REFUSED)


@merchant_app.command("sync")
def merchant_sync(
    ctx: typer.Context,
    merchant: Annotated[str, typer.Option()],
    bank_url: BankUrl = None,
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Fetch the bank's hot list changes into the terminal."""
    h, out = _ctx(ctx, home, json_)
    with answering(out):
        port = _bank_port(bank_url)
        if port is not None:
            n = h.sync_hotlist(merchant, port)
        else:
            with h.bank() as bank:
                n = h.sync_hotlist(merchant, bank)
        out.done(
            {"merchant": merchant, "new_entries": n},
            lambda c: c.print(f"Hot list synchronised: {plural(n, 'new entry', 'new entries')}."),
        )


@app.command("deposit")
def deposit(
    ctx: typer.Context,
    merchant: Annotated[str, typer.Option()],
    batch: Annotated[Path | None, typer.Option(help="a batch file from export")] = None,
    bank_url: BankUrl = None,
    clearing: Annotated[
        str | None,
        typer.Option(
            help="Deposit through this clearing house (URL): it clears other banks' cards "
            "with their issuers and relays the session to the merchant's bank."
        ),
    ] = None,
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Deposit the merchant's pending payments, or a batch file, at the bank (FIG. 9)."""
    h, out = _ctx(ctx, home, json_)
    with answering(out):
        if clearing and bank_url:
            raise BadInput("bad_option", "give --bank or --clearing, not both")
        if clearing is not None:
            service_url(clearing, "--clearing")
        batch_obj = None
        if batch is not None:
            raw = batch.read_bytes() if str(batch) != "-" else sys.stdin.buffer.read()
            batch_obj = loads_strict(raw)
            if not isinstance(batch_obj, dict):
                raise BadInput("malformed", "a batch file is one JSON object")
        port = _bank_port(bank_url)
        if clearing:
            from jointpay.api.client import ClearingDeposit

            tf = h.terminal_file(merchant)
            port = ClearingDeposit(clearing, tf.bank_id, tf.merchant_cert)
        if batch_obj is None:  # sorted by bank: ours, and each we are registered with
            receipts = h.deposit_everywhere(merchant, port)
        else:
            receipts = [_deposit_batch(h, merchant, port, batch_obj)]
        parts = [
            {
                "bank_id": rc["bank_id"],
                "deposit_id": rc["deposit_id"],
                "batch_digest": rc["batch_digest"],
                "accepted": rc["accepted"],
                "rejected": rc["rejected"],
                "credited": rc["credited"],
                "currency": rc["currency"],
            }
            for rc in receipts
        ]
        results = [
            {
                "ser": r["ser"],
                "card": r["card"],
                "status": r["status"],
                "reason": r["reason"],
                "amount": r["amount"],
                "bank_id": rc["bank_id"],
            }
            for rc in receipts
            for r in rc["results"]
        ]
        first = receipts[0]
        rejected = sum(int(rc["rejected"]) for rc in receipts)

        def human(c: Console) -> None:
            for rc in parts:
                c.print(
                    f"Deposit {rc['deposit_id']} at bank {rc['bank_id']}: {rc['accepted']} "
                    f"accepted, {rc['rejected']} rejected, {rc['credited']} "
                    f"{rc['currency']} credited."
                )
            for r in results:
                if r["status"] != "accepted":
                    c.print(
                        styled(f"  card {r['card']} ser {r['ser']}: ", (str(r["reason"]), "red"))
                    )

        out.done(
            {
                "accepted": sum(int(rc["accepted"]) for rc in receipts),
                "rejected": rejected,
                "credited": first["credited"],
                "deposit_id": first["deposit_id"],
                "batch_digest": first["batch_digest"],
                "results": results,
                "deposits": parts,
            },
            human,
        )
        if rejected:
            raise typer.Exit(EXIT_REFUSED)


def _deposit_batch(h: Any, merchant: str, port: Any, batch: dict[str, Any]) -> dict[str, Any]:
    """A batch file, deposited at the bank it is made out to (ours or a registration)."""
    tf = h.terminal_file(merchant)
    named = batch.get("bank_id")
    reg = tf.registrations.get(named) if named != tf.bank_id else None
    if reg is not None:
        with h.connect(reg.bank_url, reg.bank_key) as other:
            return dict(h.deposit(merchant, other, batch))
    if port is not None:
        return dict(h.deposit(merchant, port, batch))
    with h.bank() as bank:
        return dict(h.deposit(merchant, bank, batch))


@app.command("withdraw")
def withdraw(
    ctx: typer.Context,
    amount: Annotated[str, typer.Option()],
    card: CardOpt = None,
    reader: ReaderOpt = None,
    pin_stdin: PinStdin = False,
    renew: Annotated[bool, typer.Option("--renew", help="also renew the CARD-CERT")] = False,
    auth: Annotated[str, typer.Option(help="signature|mac")] = "signature",
    bank_url: BankUrl = None,
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Top the card up from its holder's bank account (FIG. 10)."""
    h, out = _ctx(ctx, home, json_)
    with answering(out):
        kind = _auth(auth)
        port = _bank_port(bank_url)
        with contextlib.ExitStack() as stack:
            if port is None:
                port = stack.enter_context(h.bank())
            res = h.withdraw(
                card,
                port,
                pin=lambda: read_pin(pin_stdin, out),
                amount=amount,
                renew=renew,
                auth=kind,
                reader=reader,
            )
        currency = res.currency
        bal = format_amount(res.balance, currency)
        out.done(
            {
                "card": res.card_number,
                "balance": bal,
                "seq": res.seq,
                "renewed": res.renewed,
                "currency": currency,
            },
            lambda c: c.print(
                f"Card {res.card_number} balance is now {bal} {currency} "
                f"(seq {res.seq}{', certificate renewed' if res.renewed else ''})."
            ),
        )


# --------------------------------------------------------------------------------------
# card
# --------------------------------------------------------------------------------------


@card_app.command("show")
def card_show(
    ctx: typer.Context,
    card: CardOpt = None,
    reader: ReaderOpt = None,
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """What the card tells its holder: balance, lock state, certificate."""
    h, out = _ctx(ctx, home, json_)
    with answering(out):
        with h.open_card(card, reader) as client:
            obj = describe_card(client)
        lock: str | tuple[str, str] = (
            ("LOCKED", "red")
            if obj["locked"]
            else f"{plural(obj['pin_tries'], 'PIN try', 'PIN tries')} left"
        )
        if obj["mode"] == "cheque":  # C_balance counts cheques, not money
            n = obj["cheques"]
            value = (
                f"{plural(n, 'cheque')} left"
                if n
                else "no cheques left (or no cheque book: its holder's account limits them)"
            )
        elif obj["mode"] == "credit":
            value = f"credit line {obj['balance']} {obj['currency']}"
        else:
            value = f"balance {obj['balance']} {obj['currency']}"
        pending = obj["pending_withdrawal"]
        waiting = (
            f" A withdrawal of {pending['amount']}{' with renewal' if pending['renew'] else ''}"
            " is pending (its answer was lost): run it again unchanged to complete it."
            if pending
            else ""
        )
        out.done(
            obj,
            lambda c: c.print(
                styled(
                    f"Card {obj['card']}: {value}, ",
                    lock,
                    f", {obj['mode']}, next ser {obj['next_ser']}, seq {obj['seq']}.{waiting}",
                )
            ),
        )


def describe_card(client: Any) -> dict[str, Any]:
    from jointpay.crypto.certs import CardCert

    client.select()
    info = client.info()
    st = client.status()
    from jointpay.crypto.group import ModpParams, resolver

    own = (
        {info.group: ModpParams.from_json(info.group, json.loads(info.group_params))}
        if info.group_params and info.group
        else {}
    )
    cert = CardCert.decode(client.cert(), resolver(own))
    # a cheque card's C_balance counts cheques: its balance is that count, not money
    cheques = {"cheques": st.balance} if info.mode == "cheque" else {}
    return {
        **cheques,
        "card": info.card_number,
        "balance": (
            str(st.balance) if info.mode == "cheque" else format_amount(st.balance, info.currency)
        ),
        "currency": info.currency,
        "locked": st.locked,
        "pin_tries": st.pin_tries,
        "mode": info.mode,
        "seq": st.seq,
        "next_ser": st.next_ser,
        "suite": info.suite,
        "bank_id": info.bank_id,
        "cert_id": cert.id_hex,
        "valid_until": cert.not_after,
        "withdrawal_pending": st.withdrawal_pending,
        "pending_withdrawal": _pending(client, cert),
    }


def _pending(client: Any, cert: Any) -> dict[str, Any] | None:
    """The withdrawal pending on the card (its answer was lost): what to run again."""
    from jointpay.service.flows import MAX_RESTORE, describe_amount, pending_request

    req = pending_request(client)
    if req is None:
        return None
    return {
        "amount": "max"
        if req.up_to and req.amount >= MAX_RESTORE
        else describe_amount(req.amount, cert),
        "up_to": req.up_to,
        "renew": req.renew,
        "seq": req.seq,
    }


@card_app.command("insert")
def card_insert(
    ctx: typer.Context,
    card: Annotated[str, typer.Option()],
    vpcd: Annotated[
        str, typer.Option(help="HOST:PORT of the vsmartcard-vpcd reader slot.")
    ] = "127.0.0.1:35963",
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Plug the card into a vsmartcard-vpcd reader and answer its APDUs until stopped."""
    from jointpay.adapters.vpcd import Endpoint

    h, out = _ctx(ctx, home, json_)
    with answering(out):
        try:
            endpoint = Endpoint.parse(vpcd)
        except ValueError as exc:
            raise BadInput("bad_input", f"--vpcd: {exc}") from exc
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())

        def connected() -> None:
            out.done(
                {"card": card, "connected": True, "vpcd": str(endpoint)},
                lambda c: c.print(
                    f"Card {card} is in the reader at {endpoint}; Ctrl-C pulls it out."
                ),
            )
            sys.stdout.flush()

        h.insert_card(card, endpoint, connected=connected, stop=stop)


@app.command("readers")
def readers(ctx: typer.Context, home: HomeOpt = None, json_: JsonOpt = False) -> None:
    """The PC/SC readers pcscd sees, and whether a card is in each."""
    from jointpay.adapters.pcsc import list_readers

    _, out = _ctx(ctx, home, json_)
    with answering(out):
        found = list_readers()
        rows = [{"name": r.name, "card_present": r.card_present} for r in found]

        def human(c: Console) -> None:
            if not rows:
                c.print("No readers. Is pcscd running, with a reader driver loaded?")
            for r in found:
                state = f"card present (ATR {r.atr.hex()})" if r.atr else "empty"
                c.print(styled((r.name, "bold"), f": {state}"))

        out.done({"readers": rows}, human)


@app.command("demo")
def demo(
    ctx: typer.Context,
    suite: Annotated[str, typer.Option(help="|".join(SUITES))] = SUITE_SECP256K1,
    home: HomeOpt = None,
    json_: JsonOpt = False,
) -> None:
    """The whole lifecycle on a fresh embedded bank, told step by step: in a temporary
    folder, or in the empty one given by --home or JOINTPAY_HOME (kept afterwards)."""
    _, out = _ctx(ctx, home, json_)
    from jointpay.cli.demo import run_demo

    with answering(out):
        result = run_demo(out, suite=suite, home=chosen_home(ctx, home))
        if not result["ok"]:
            failed = [s["step"] for s in result["steps"] if not s["ok"]]
            out.done(
                result,
                lambda c: c.print(
                    styled(("\nSteps that did not do what they should: ", "bold red"))
                    + styled("; ".join(failed) or "none (the ledger could not be read)")
                ),
            )
            raise typer.Exit(EXIT_REFUSED)
        out.done(
            result,
            lambda c: c.print(styled("\n", ("Every step did what it should.", "bold green"))),
        )


def run() -> None:
    """Console-script entry point.

    Click's usage errors (a missing option, an unknown command, a value out of range)
    keep Click's message on stderr and exit 2; with ``--json`` they also come as one
    ``{"error": "bad_usage", ...}`` object on stdout. An error no command mapped is
    ``internal`` (exit 1), its traceback shown only with JOINTPAY_DEBUG=1."""
    args = sys.argv[1:]
    as_json = "--json" in (args[: args.index("--")] if "--" in args else args)
    try:
        status = app(standalone_mode=False)
    except click_errors.ClickException as exc:  # usage errors, and a file option unreadable
        code = "bad_usage" if isinstance(exc, click_errors.UsageError) else "bad_input"
        if type(exc).__name__ == "NoArgsIsHelpError":  # its help is on stdout already
            message = "a command is missing (see --help)"
        else:
            message = exc.format_message()
        _answer_error(as_json, code, message)
        _show_click_error(exc)
        sys.exit(EXIT_BAD_INPUT)
    except typer.Abort:
        _answer_error(as_json, "aborted", "aborted")
        say_error("aborted", "aborted")
        sys.exit(EXIT_REFUSED)
    except Exception as exc:
        if os.environ.get(DEBUG_ENV):
            raise
        code, message, st = internal(exc)
        _answer_error(as_json, code, message)
        say_error(code, message)
        sys.exit(st)
    sys.exit(status if isinstance(status, int) else 0)


def _answer_error(as_json: bool, code: str, message: str) -> None:
    if as_json:
        sys.stdout.write(json.dumps({"error": code, "message": message}) + "\n")
        sys.stdout.flush()


def _show_click_error(exc: click_errors.ClickException) -> None:
    """Click's message on stderr, as Typer shows it."""
    try:
        from typer import rich_utils

        rich_utils.rich_format_error(exc)
    except ImportError:  # pragma: no cover - rich is a dependency
        exc.show()


_scheme_commands()
