"""What every command module shares: the global options and the command context."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from jointpay.cli.output import Output
from jointpay.home import Home
from jointpay.service.errors import BadInput

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


def hex_bytes(text: str, what: str, code: str = "malformed") -> bytes:
    """An option given in hexadecimal; :class:`BadInput` ``code`` if it is not."""
    try:
        return bytes.fromhex(text)
    except ValueError as exc:
        raise BadInput(code, f"{what} is not hex") from exc
