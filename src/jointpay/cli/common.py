"""What every command module shares: the global options and the command context."""

from __future__ import annotations

import errno
import os
import socket
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Final
from urllib.parse import urlsplit

import typer
from typer.core import TyperGroup

try:  # typer 0.2x parses with its own copy of Click
    from typer._click import Context as ClickContext
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - an older typer: Click itself
    from click import Context as ClickContext  # type: ignore[assignment]
    from click import exceptions as click_errors  # type: ignore[no-redef]

from jointpay.cli.output import Output
from jointpay.home import Home
from jointpay.service.errors import BadInput


class Group(TyperGroup):
    """A command group that, with ``--json``, answers a missing command as a usage
    error (one JSON object) instead of printing its help on stdout."""

    def parse_args(self, ctx: ClickContext, args: list[str]) -> list[str]:
        wants_json = bool((ctx.find_root().obj or {}).get("json"))
        if not args and self.no_args_is_help and not ctx.resilient_parsing and wants_json:
            raise click_errors.UsageError("a command is missing (see --help)", ctx)
        return super().parse_args(ctx, args)


HomeOpt = Annotated[
    Path | None, typer.Option("--home", help="State folder (JOINTPAY_HOME).", show_default=False)
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
AdminTokenFileOpt = Annotated[Path | None, typer.Option(help="file holding the admin credential")]


class LogLevel(StrEnum):
    """How much a server logs on standard error (``--log-level``)."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"
    DEBUG = "debug"


LogLevelOpt = Annotated[
    LogLevel,
    typer.Option(
        "--log-level",
        help="info: a line per request, and per deposit where its time went",
        case_sensitive=False,
    ),
]


def command_context(ctx: typer.Context, home: Path | None, as_json: bool) -> tuple[Home, Output]:
    """The home and the output of a command: its own options, else the global ones."""
    g = ctx.find_root().obj or {}
    out = Output.make(as_json or bool(g.get("json")))
    return Home.at(home or g.get("home")), out


def chosen_home(ctx: typer.Context, home: Path | None) -> Path | None:
    """The folder the user chose: the command's --home, the global one, or
    JOINTPAY_HOME; None if none was (``demo`` then makes a temporary one)."""
    g = ctx.find_root().obj or {}
    env = os.environ.get("JOINTPAY_HOME")
    chosen: Path | None = home or g.get("home") or (Path(env) if env else None)
    return chosen


def hex_bytes(text: str, what: str, code: str = "malformed") -> bytes:
    """An option given in hexadecimal; :class:`BadInput` ``code`` if it is not."""
    try:
        return bytes.fromhex(text)
    except ValueError as exc:
        raise BadInput(code, f"{what} is not hex") from exc


def unix_time(text: str, option: str) -> int:
    """A moment given as Unix seconds (``1800000000``, ASCII digits, below 2^63) or an
    ISO 8601 date or date and time from 1970 on (``2026-11-30``,
    ``2026-11-30T23:59:59``, UTC unless it names its offset:
    ``2026-12-01T00:00:00+01:00``; a fraction of a second counts from its second);
    :class:`BadInput` ``bad_time`` else."""
    text = text.strip()
    bad = BadInput(
        "bad_time",
        f"{option} is Unix seconds or an ISO 8601 date/time from 1970 on, not {text!r}",
    )
    if text.isascii() and text.isdigit():  # str.isdigit alone takes "²" and "١٢"
        value = int(text)
    else:
        try:
            t = datetime.fromisoformat(text)
        except ValueError as exc:
            raise bad from exc
        if t.tzinfo is None:
            t = t.replace(tzinfo=UTC)
        value = (t - _EPOCH) // timedelta(seconds=1)  # exact, and floored
    if not 0 <= value < 1 << 63:  # a store keeps 64-bit times
        raise bad
    return value


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def service_url(text: str, option: str) -> str:
    """A service's address, ``http(s)://host[:port][/path]``; :class:`BadInput`
    ``bad_input`` for anything else (``notaurl``, ``ftp://x``, ``127.0.0.1:8421``,
    ``http://[::1``), before any connection is tried."""
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port that is not one
    except ValueError as exc:
        raise BadInput("bad_input", f"{option}: {text!r} is not a URL ({exc})") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadInput(
            "bad_input", f"{option} is an http:// or https://host[:port] URL, not {text!r}"
        )
    return text


def check_listenable(host: str, port: int) -> None:
    """Fail at once, clearly, where a server could not listen on HOST:PORT (bound as
    asyncio's server binds it: every address of HOST, SO_REUSEADDR):
    ``address_in_use`` when another process listens there, ``bad_input`` for a host
    that does not resolve or an address this machine does not have."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (socket.gaierror, UnicodeError) as exc:
        raise BadInput("bad_input", f"--host {host!r} does not resolve: {exc}") from exc
    for family, kind, proto, _, addr in dict.fromkeys(infos):
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(addr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise BadInput(
                        "address_in_use",
                        f"{host}:{port} is in use: another server listens there "
                        "(stop it, or choose another --port)",
                    ) from exc
                raise BadInput(
                    "bad_input", f"cannot listen on {host}:{port}: {exc.strerror or exc}"
                ) from exc


__all__ = [
    "AdminTokenFileOpt",
    "ClickContext",
    "Group",
    "HomeOpt",
    "JsonOpt",
    "LogLevel",
    "LogLevelOpt",
    "check_listenable",
    "chosen_home",
    "click_errors",
    "command_context",
    "hex_bytes",
    "service_url",
]
