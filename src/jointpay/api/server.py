"""The bank as an HTTP service: a FastAPI app made by :func:`create_app`.

Thin: every endpoint parses, calls a :class:`~jointpay.service.bank.Bank` use case,
and answers. Errors are ``application/problem+json`` (RFC 9457) carrying the
contract's codes. Every state-changing endpoint takes an ``Idempotency-Key``
header: a retry with the same key and body gets the first answer back; the same
key with another body is refused (422). Admin endpoints need
``Authorization: Bearer <admin token>``; the server binds to 127.0.0.1 unless told
otherwise.
"""

import hashlib
import hmac
import json
import logging
import secrets
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TextIO

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jointpay.domain.money import RATE_PATTERN, format_amount, parse_rate
from jointpay.protocol.deposit import BatchError, canonical_json, loads_strict
from jointpay.service.bank import Bank
from jointpay.service.errors import Refused, ServiceError
from jointpay.service.verify_pool import SERVER_MIN_POOL_BATCH
from jointpay.storage.base import BalanceOutOfRange, Conflict

PROBLEM = "application/problem+json"
_STATUS = {
    "malformed": 400,
    "unknown_card": 404,
    "unknown_merchant": 404,
    "no_bank": 503,
    "no_clearing_house": 503,
    "unauthorised": 401,
    "replay": 409,
    "in_flight": 409,
    "idempotency_mismatch": 422,
    "too_many_checks": 429,
}


class Problem(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


def problem(
    status: int,
    code: str,
    detail: str,
    proof: bytes | None = None,
    retry_after: int | None = None,
) -> JSONResponse:
    """A refusal as application/problem+json; ``retry_after`` (seconds until the refusal
    lifts by itself) also as the body's ``retry_after`` and the ``Retry-After`` header."""
    body: dict[str, Any] = {
        "type": f"https://jointpay.invalid/problems/{code}",
        "title": code,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if proof is not None:
        body["proof"] = proof.hex()
    headers: dict[str, str] | None = None
    if retry_after is not None:
        body["retry_after"] = retry_after
        headers = {"Retry-After": str(retry_after)}
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


class ProblemDetail(BaseModel):
    """RFC 9457 problem details, with the contract's reason code."""

    type: str
    title: str
    status: int
    detail: str
    code: str = Field(description="the contract's stable reason code")
    proof: str | None = Field(
        default=None, description="the bank's signed refusal for the card, hex (withdrawals)"
    )
    retry_after: int | None = Field(
        default=None,
        description="seconds until the refusal lifts by itself, as in the Retry-After header "
        "(too_many_checks)",
    )


def _problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses for the error statuses an endpoint can answer."""
    why = {
        400: "malformed request",
        401: "admin credential missing or wrong",
        404: "unknown card, merchant or deposit",
        409: "replayed sequence number, or the same request in flight",
        413: "body too large",
        422: "refused by the protocol (the code says why)",
        429: "too many on-line checks by this merchant about this card (too_many_checks);"
        " Retry-After says in how many seconds it may ask again",
        503: "the bank is not set up",
    }
    return {
        s: {
            "model": ProblemDetail,
            "description": why[s],
            "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/ProblemDetail"}}},
        }
        for s in statuses
    }


PUBLIC_ERRORS: Final = (400, 422, 503)
ADMIN_ERRORS: Final = (400, 401, 404, 409, 422, 503)
_HEX = r"^([0-9a-f]{2})+$"

DEPOSIT_SCHEMA: Final = {
    "type": "object",
    "description": "the merchant's signed deposit session (docs/protocol.md, Deposit)",
    "required": ["format", "bank_id", "sid", "seq", "time", "batch", "signature"],
    "properties": {
        "format": {"type": "string"},
        "bank_id": {"type": "string"},
        "sid": {"type": "string"},
        "seq": {"type": "integer", "minimum": 1},
        "time": {"type": "integer", "minimum": 0},
        "signature": {"type": "string", "pattern": r"^[0-9a-f]{128}$"},
        "batch": {
            "type": "object",
            "required": ["format", "bank_id", "sid", "cards"],
            "properties": {
                "format": {"type": "string"},
                "bank_id": {"type": "string"},
                "sid": {"type": "string"},
                "cards": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["cert", "payments"],
                        "properties": {
                            "cert": {"type": "string", "pattern": _HEX},
                            "payments": {"type": "array", "items": {"type": "object"}},
                        },
                    },
                },
            },
        },
    },
}


class StrictBody(BaseModel):
    """A typed request body read as the protocol reads JSON: an integer is a JSON
    integer (not ``"100"``, ``100.0``, ``1e5`` or ``true``), no field is unknown (and
    :func:`strict_json` refuses duplicate keys)."""

    model_config = ConfigDict(strict=True, extra="forbid")


class WithdrawBody(StrictBody):
    request: str = Field(
        description="the card's withdrawal request, hex",
        min_length=2,
        max_length=4096,
        pattern=_HEX,
    )


class WithdrawAnswer(BaseModel):
    ack: str = Field(description="the bank's acknowledgement, hex")


_IDENT = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"


class OnlineCheckBody(StrictBody):
    """A service provider's on-line question about one card, signed with its key
    (Ed25519 over the canonical JSON of the other fields, tag
    ``jointpay/v1/online-check``; docs/protocol.md)."""

    format: Literal["jointpay-online-check/1"]
    bank_id: str = Field(pattern=_IDENT, description="this bank")
    sid: str = Field(pattern=_IDENT, description="the asking service provider's S_id")
    card: str = Field(pattern=r"^[0-9]{8,19}$")
    amount: int = Field(ge=1, lt=1 << 63, description="minor units of the card's currency")
    issuer: str | None = Field(default=None, pattern=_IDENT)
    """The card's bank, when it is another bank of the scheme (asked through a house)."""
    time: int = Field(ge=0, lt=1 << 63, description="seconds since the epoch, for freshness")
    signature: str = Field(pattern=_HEX, max_length=256)


SIGNED_MESSAGE: Final = {
    "type": "object",
    "description": "a message between scheme members, signed by the sender (docs/variants.md)",
    "required": ["format", "signature"],
    "properties": {"format": {"type": "string"}, "signature": {"type": "string"}},
}


INLINE_PARSE: Final = 1 << 20
"""Bodies up to this size are parsed on the event loop; larger ones (a deposit of
thousands of payments: 0.1 s for 10,000) in the thread pool, so that the server
answers everyone else meanwhile."""


def _too_large(limit: int) -> Problem:
    return Problem(413, "too_large", f"the body is at most {limit} bytes")


def _refuse_declared(request: Request, limit: int) -> None:
    """Refuse, before a byte is read, a body whose declared length passes ``limit``."""
    if _declared_above(request.headers, limit):
        raise _too_large(limit)


def _declared_above(headers: Headers, limit: int) -> bool:
    declared = headers.get("content-length", "")
    return declared.isdigit() and int(declared) > limit


LARGE_BODY: Final = 256 * 1024 * 1024
"""The most bytes of any request body (a deposit of many thousands of payments)."""


async def read_json(request: Request, limit: int = LARGE_BODY) -> Any:
    """The request's body as strict JSON (no floats, no duplicate keys), bounded: a
    declared length above ``limit`` is refused before a byte is read, and a body
    sent without one as soon as it passes ``limit``."""
    _refuse_declared(request, limit)
    parts, size = [], 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise _too_large(limit)
        parts.append(part)
    raw = b"".join(parts)
    try:
        if size <= INLINE_PARSE:
            return loads_strict(raw)
        return await run_in_threadpool(loads_strict, raw)
    except BatchError as exc:
        raise Problem(400, "malformed", str(exc)) from exc


SMALL_BODY: Final = 64 * 1024
"""The most bytes of a typed request body (a withdrawal, an admin request)."""


async def strict_json(request: Request) -> None:
    """The dependency of every endpoint with a typed body: its JSON read strictly
    (:func:`loads_strict`: no duplicate keys, no floats) before the framework
    validates it against its model (:class:`StrictBody`). The framework has read the
    body already, within :data:`SMALL_BODY` (:class:`BodyLimit`)."""
    raw = await request.body()  # the framework's copy: read once, within the bound
    if len(raw) > SMALL_BODY:  # only an app built without BodyLimit gets here
        raise _too_large(SMALL_BODY)
    try:
        loads_strict(raw)
    except BatchError as exc:
        raise Problem(400, "malformed", str(exc)) from exc


def body_limit(route: object) -> int:
    """The most bytes of a request body for ``route`` (the one the router chose): a
    typed body, which the framework reads whole before anything of ours runs,
    :data:`SMALL_BODY`; any other (read by its endpoint, :func:`read_json`, within
    its own bound) :data:`LARGE_BODY`."""
    if isinstance(route, APIRoute) and route.body_field is not None:
        return SMALL_BODY
    return LARGE_BODY


class _BodyTooLarge(Exception):
    """Raised into the app by :class:`BodyLimit` when a body passes its bound."""


class BodyLimit:
    """Bounds every request body while it streams in, before the framework buffers
    it (a pure ASGI middleware: it wraps ``receive``).

    The bound is the route's (:func:`body_limit`), known at the first ``receive``:
    the router has chosen the route before anything reads the body. A declared
    length above it is refused before a byte is read; a body sent without one as
    soon as the bytes received pass it. The refusal is raised into the app, which
    stops reading and never runs the endpoint, and this middleware answers 413
    ``too_large`` itself, the problem the app's own refusals are: whatever the app
    then tries to answer (the framework turns a failed body read into a 400) is
    dropped. A body passing its bound after the answer has started (no endpoint
    here reads its body that late) leaves the app's exception to the server."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit: int | None = None
        size = 0
        refusal: Problem | None = None
        started = False

        async def bounded() -> Message:
            nonlocal limit, size, refusal
            if limit is None:  # the first receive: the router has chosen the route
                limit = body_limit(scope.get("route"))
                if _declared_above(Headers(scope=scope), limit):
                    refusal = _too_large(limit)
            if refusal is None:
                message = await receive()
                if message["type"] == "http.request":
                    size += len(message.get("body", b""))
                    if size > limit:
                        refusal = _too_large(limit)
                if refusal is None:
                    return message
            raise _BodyTooLarge

        async def answer(message: Message) -> None:
            nonlocal started
            if refusal is not None and not started:
                return  # the app's answer to the refusal: ours goes instead
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, bounded, answer)
        except Exception:
            if refusal is None or started:
                raise
            # else the refusal, as the app let it out: itself, in a group, or another error
        if refusal is not None and not started:
            await problem(refusal.status, refusal.code, refusal.detail)(scope, receive, send)


def serve_problems_and_bounds(app: FastAPI) -> None:
    """What every jointpay HTTP app has: its refusals as problems
    (:func:`add_problem_handlers`) and its request bodies bounded while they stream
    (:class:`BodyLimit`)."""
    add_problem_handlers(app)
    app.add_middleware(BodyLimit)


class KeyLocks:
    """One lock per Idempotency-Key in use, so that two requests with the same key
    run one after the other: the second then finds the first's answer."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, tuple[threading.Lock, list[int]]] = {}

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._lock:
            lock, users = self._held.setdefault(key, (threading.Lock(), [0]))
            users[0] += 1
        try:
            with lock:
                yield
        finally:
            with self._lock:
                users[0] -= 1
                if not users[0]:
                    del self._held[key]


class OnlineCheckAnswer(BaseModel):
    approved: bool
    reason: str | None
    topup: int = 0
    """Credit cards: minor units the bank would restore the card's C_balance by now."""


class AccountBody(StrictBody):
    holder: str = Field(min_length=1, max_length=64)
    balance: int = Field(ge=0, lt=1 << 63, description="minor units")


class MerchantBody(StrictBody):
    name: str = Field(min_length=1, max_length=64)
    public_key: str = Field(pattern=r"^[0-9a-f]{64}$")


class BlacklistBody(StrictBody):
    card: str = Field(pattern=r"^[0-9]{8,19}$")
    reason: str = Field(default="reported", max_length=64, pattern=r"^[^\x00-\x1f\x7f]*$")


class RateBody(StrictBody):
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    rate: str = Field(pattern=RATE_PATTERN)
    """Units of the bank's currency per unit of ``currency`` (at most 6 decimals)."""
    effective_from: int | None = Field(default=None, ge=0, lt=1 << 63)


def add_problem_handlers(app: FastAPI) -> None:
    """Every refusal is application/problem+json with a stable ``code``."""

    @app.exception_handler(Problem)
    async def _problem(_: Request, exc: Problem) -> JSONResponse:
        return problem(exc.status, exc.code, exc.detail)

    @app.exception_handler(ServiceError)
    async def _service(_: Request, exc: ServiceError) -> JSONResponse:
        default = 422 if isinstance(exc, Refused) else 400
        proof = exc.proof if isinstance(exc, Refused) else None
        retry = exc.retry_after if isinstance(exc, Refused) else None
        return problem(_STATUS.get(exc.code, default), exc.code, exc.message, proof, retry)

    @app.exception_handler(BalanceOutOfRange)
    async def _out_of_range(_: Request, exc: BalanceOutOfRange) -> JSONResponse:
        return problem(422, "amount_out_of_range", str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # The framework's own refusals (a body that is not UTF-8 JSON, an unknown
        # path, a wrong method) are problems too.
        codes = {400: "malformed", 404: "not_found", 405: "method_not_allowed"}
        response = problem(
            exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail)
        )
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return problem(400, "malformed", str(exc.errors()[:3]))


SIGNED_BODY: Final = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": SIGNED_MESSAGE}},
    }
}
"""The request body of every message between scheme members (``openapi_extra``)."""


def admin_guard(admin_token: str) -> Callable[..., None]:
    """The dependency of every admin endpoint: the admin bearer token, compared in
    constant time."""
    want = f"Bearer {admin_token}".encode()

    def admin(authorization: Annotated[str | None, Header()] = None) -> None:
        if authorization is None or not hmac.compare_digest(authorization.encode(), want):
            raise Problem(401, "unauthorised", "admin endpoints need the admin bearer token")

    return admin


def create_app(bank_factory: Callable[[], Bank], *, admin_token: str) -> FastAPI:
    """Build the app from explicit dependencies: a bank factory and the admin credential."""
    app = FastAPI(
        title="jointpay bank",
        version="1",
        description="The bank of an offline smart-card payment system "
        "(WO 98/25220): deposits, withdrawals, hot list.",
    )
    bank_holder: dict[str, Bank] = {}
    bank_lock = threading.Lock()

    def get_bank() -> Bank:
        # sync dependencies run in the thread pool: without the lock, the first
        # concurrent requests would each build a bank (and a verification pool)
        with bank_lock:
            if "bank" not in bank_holder:
                bank_holder["bank"] = bank_factory()
            bank = bank_holder["bank"]
        bank.refresh()  # a policy or a scheme membership changed by the CLI meanwhile
        return bank

    admin = admin_guard(admin_token)

    BankDep = Annotated[Bank, Depends(get_bank)]
    IdemKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=128)]

    serve_problems_and_bounds(app)
    key_locks = KeyLocks()
    Strict = Depends(strict_json)

    def idempotent(bank: Bank, key: str | None, body: object, run: Callable[[], Any]) -> Any:
        """Run once per key: a retry returns the stored answer (exactly-once over HTTP)."""
        if key is None:
            return run()
        with key_locks.hold(key):
            return _idempotent(bank, key, body, run)

    def _idempotent(bank: Bank, key: str, body: object, run: Callable[[], Any]) -> Any:
        digest = hashlib.sha256(canonical_json(body)).hexdigest()
        with bank.store.transaction() as tx:
            hit = tx.get_idempotent(key)
        if hit is not None:
            if hit[0] != digest:
                raise Problem(
                    422,
                    "idempotency_mismatch",
                    "this Idempotency-Key was used with another request body",
                )
            return json.loads(hit[1])
        result = run()
        try:
            with bank.store.transaction() as tx:
                # orjson's bytes (a deposit's receipt: json.dumps was a tenth of its CPU)
                tx.put_idempotent(key, digest, canonical_json(result).decode(), bank.clock())
        except Conflict:
            pass  # another server process's twin stored its answer first (the use case is
            # idempotent for deposits and withdrawals; see operations.md)
        return result

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/bank", responses=_problems(503))
    def parameters(bank: BankDep) -> dict[str, Any]:
        return bank.parameters()

    @app.get("/v1/rates", responses=_problems(503))
    def rates(bank: BankDep) -> dict[str, Any]:
        """The bank's exchange-rate table: a converted payment is checked against it."""
        return bank.rates()

    @app.get("/v1/hotlist", responses=_problems(*PUBLIC_ERRORS))
    def hotlist(
        bank: BankDep, since: Annotated[int, Query(ge=0, lt=1 << 63)] = 0
    ) -> dict[str, Any]:
        entries = bank.hotlist(since)
        return {
            "version": max([e.version for e in entries], default=since),
            "entries": [
                {
                    "card": e.card_number,
                    "version": e.version,
                    "reason": e.reason,
                    "added_at": e.added_at,
                }
                for e in entries
            ],
        }

    @app.post(
        "/v1/deposits",
        responses=_problems(400, 404, 409, 413, 422, 503),
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": DEPOSIT_SCHEMA}},
            }
        },
    )
    async def deposit(request: Request, bank: BankDep, key: IdemKey = None) -> dict[str, Any]:
        body = await read_json(request)
        return dict(
            await run_in_threadpool(idempotent, bank, key, body, lambda: bank.deposit(body))
        )

    @app.get(
        "/v1/deposits/{deposit_id}",
        dependencies=[Depends(admin)],
        responses=_problems(400, 401, 404, 503),
    )
    def deposit_status(
        deposit_id: Annotated[str, PathParam(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,160}$")],
        bank: BankDep,
    ) -> dict[str, Any]:
        """A deposit's receipt, for the bank's operators: it names every card and amount
        of the deposit, and its id (S_id:seq) is no secret. A merchant gets its receipt
        again by sending its signed session again (a retried session: the same receipt)."""
        with bank.store.transaction() as tx:
            rec = tx.get_deposit(deposit_id)
        if rec is None:
            raise Problem(404, "not_found", f"no deposit {deposit_id}")
        return dict(json.loads(rec.receipt))

    @app.post(
        "/v1/withdrawals",
        dependencies=[Strict],
        responses=_problems(400, 404, 409, 413, 422, 503),
    )
    def withdraw(body: WithdrawBody, bank: BankDep, key: IdemKey = None) -> WithdrawAnswer:
        try:
            request = bytes.fromhex(body.request)
        except ValueError as exc:
            raise Problem(400, "malformed", "request is not hex") from exc
        out = idempotent(
            bank, key, body.model_dump(), lambda: {"ack": bank.withdraw(request).hex()}
        )
        return WithdrawAnswer(ack=out["ack"])

    @app.post(
        "/v1/online-check",
        dependencies=[Strict],
        responses=_problems(400, 404, 413, 422, 429, 503),
    )
    def online_check(body: OnlineCheckBody, bank: BankDep) -> OnlineCheckAnswer:
        """FIG. 8's optional on-line clearance, for our service providers: would the
        amount clear on the card now (its record at the bank, the hot list)? Past the
        policy's ``online_checks`` by one merchant about one card within
        ``online_checks_window``: 429 ``too_many_checks``."""
        # the fields as sent (an absent issuer stays absent): the signature covers them
        return OnlineCheckAnswer(**bank.online_check(body.model_dump(exclude_unset=True)))

    # -- the scheme: what terminals need, what clearing houses send -------------------
    @app.get("/v1/scheme", responses=_problems(503))
    def scheme(bank: BankDep) -> dict[str, Any]:
        """The scheme root key, our BANK-CERT and the member banks whose cards we take."""
        return bank.scheme()

    @app.get("/v1/scheme/hotlist", responses=_problems(503))
    def scheme_hotlist(bank: BankDep) -> dict[str, Any]:
        """The other member banks' hot lists, through our clearing houses."""
        return {"entries": bank.scheme_hotlist()}

    @app.post(
        "/v1/interbank/deposits",
        responses=_problems(400, 413, 422, 503),
        openapi_extra=SIGNED_BODY,
    )
    async def interbank_deposit(request: Request, bank: BankDep) -> dict[str, Any]:
        """A clearing house brings our cards' payments at other banks' merchants."""
        body = await read_json(request)
        return dict(await run_in_threadpool(bank.interbank_deposit, body))

    @app.post(
        "/v1/interbank/relayed",
        responses=_problems(400, 404, 409, 413, 422, 503),
        openapi_extra=SIGNED_BODY,
    )
    async def interbank_relayed(request: Request, bank: BankDep) -> dict[str, Any]:
        """A clearing house relays one of our merchants' deposits, with its clearing of
        the other banks' cards in it; the answer is our signed receipt."""
        body = await read_json(request)
        return dict(await run_in_threadpool(bank.interbank.relayed, body))

    @app.post(
        "/v1/interbank/settlements",
        responses=_problems(400, 413, 422, 503),
        openapi_extra=SIGNED_BODY,
    )
    async def interbank_settlement(request: Request, bank: BankDep) -> dict[str, Any]:
        """A clearing house settles our net position with it."""
        body = await read_json(request, SMALL_BODY)
        return dict(await run_in_threadpool(bank.interbank_settlement, body))

    @app.post(
        "/v1/interbank/online-check",
        responses=_problems(400, 413, 422, 503),
        openapi_extra=SIGNED_BODY,
    )
    async def interbank_online_check(request: Request, bank: BankDep) -> dict[str, Any]:
        """Another bank's terminal asks, through a house, whether our card may pay."""
        body = await read_json(request, SMALL_BODY)
        return dict(await run_in_threadpool(bank.interbank_online_check, body))

    @app.get("/v1/interbank/positions/{clearing_house}", responses=_problems(400, 503))
    def interbank_position(
        clearing_house: Annotated[str, PathParam(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")],
        bank: BankDep,
    ) -> dict[str, Any]:
        """Our balance with a clearing house, signed: its audit compares both sides."""
        return bank.interbank_position(clearing_house)

    # -- admin ------------------------------------------------------------------------
    @app.post(
        "/v1/admin/accounts",
        dependencies=[Depends(admin), Strict],
        responses=_problems(*ADMIN_ERRORS, 413),
    )
    def open_account(body: AccountBody, bank: BankDep, key: IdemKey = None) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            acc = bank.open_account(body.holder, body.balance)
            return {"account": acc.id, "balance": format_amount(acc.balance, acc.currency)}

        return dict(idempotent(bank, key, body.model_dump(), run))

    @app.post(
        "/v1/admin/merchants",
        dependencies=[Depends(admin), Strict],
        responses=_problems(*ADMIN_ERRORS, 413),
    )
    def open_merchant(body: MerchantBody, bank: BankDep, key: IdemKey = None) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            rec, cert = bank.open_merchant(body.name, bytes.fromhex(body.public_key))
            return {"merchant": rec.name, "sid": rec.sid, "cert": cert.hex()}

        return dict(idempotent(bank, key, body.model_dump(), run))

    @app.post(
        "/v1/admin/blacklist",
        dependencies=[Depends(admin), Strict],
        responses=_problems(*ADMIN_ERRORS, 413),
    )
    def blacklist(body: BlacklistBody, bank: BankDep) -> dict[str, Any]:
        entry = bank.blacklist(body.card, body.reason)
        return {"card": body.card, "blacklisted": True, "version": entry.version}

    @app.post(
        "/v1/admin/rates",
        dependencies=[Depends(admin), Strict],
        responses=_problems(*ADMIN_ERRORS, 413),
    )
    def set_rate(body: RateBody, bank: BankDep) -> dict[str, Any]:
        try:
            micro = parse_rate(body.rate)
        except ValueError as exc:
            raise Problem(422, "bad_rate", str(exc)) from exc
        bank.set_rate(body.currency, micro, body.effective_from)
        return bank.rates()

    @app.get("/v1/admin/audit", dependencies=[Depends(admin)], responses=_problems(400, 401, 503))
    def audit(
        bank: BankDep,
        signatures: bool = False,
        bank_key: Annotated[str | None, Query(pattern="^[0-9a-fA-F]{64}$")] = None,
    ) -> dict[str, Any]:
        """``bank audit``: the books; with ``signatures``, every signature too (under
        ``bank_key``, hex, if given: the key the auditor holds)."""
        key = None if bank_key is None else bytes.fromhex(bank_key)
        r = bank.audit(signatures=signatures, bank_key=key)
        return {"ok": r.ok, "violations": r.violations, **r.figures}

    @app.get("/v1/admin/alerts", dependencies=[Depends(admin)], responses=_problems(401, 503))
    def alerts(bank: BankDep) -> dict[str, Any]:
        return {
            "alerts": [
                {"card": a.card_number, "kind": a.kind, "detail": a.detail, "at": a.created_at}
                for a in bank.alerts()
            ]
        }

    return app


def load_admin_token(root: Path, admin_token_file: Path | None) -> str:
    """The admin bearer token: from the given file, or ``admin.token`` in the home
    (made on first start, readable by its owner only)."""
    if admin_token_file is not None:
        return admin_token_file.read_text(encoding="utf-8").strip()
    token_path = root / "admin.token"
    if not token_path.exists():
        from jointpay.adapters.card_file import atomic_write

        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(token_path, secrets.token_urlsafe(32).encode())
    return token_path.read_text(encoding="utf-8").strip()


class _ServerLog(logging.StreamHandler[TextIO]):
    """The handler :func:`log_to_stderr` installs (one a process)."""


def log_to_stderr(level: str) -> None:
    """A server's logging: jointpay's loggers at ``level`` (error, warning, info or
    debug) on standard error, one timestamped line a record. At info the bank logs
    where each deposit's time went (logger ``jointpay.deposit``, operations.md);
    uvicorn's own lines follow the same level (its line per request on standard
    output). No record carries a secret: the deposit's line names the deposit, its
    counts and its phases' milliseconds."""
    handler = _ServerLog(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("jointpay")
    for old in [h for h in root.handlers if isinstance(h, _ServerLog)]:  # started again
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False  # the server's own lines only once, whatever the root has


def serve(
    home: Any, *, host: str, port: int, admin_token_file: Path | None, log_level: str = "warning"
) -> None:
    """``jointpay bank serve``: uvicorn on the app, bank from the home's database;
    ``log_level`` as in :func:`log_to_stderr`."""
    import uvicorn

    log_to_stderr(log_level)
    store = home.store()

    # The bank and its verification workers are ready before the first request (and
    # before /health answers): no deposit waits for keys, group checks or workers.
    bank = Bank(store, clock=home.clock)
    token = load_admin_token(home.root, admin_token_file)  # once there is a bank
    # deposits share this process's interpreter lock: verify from small sizes on
    bank.verifier.min_batch = SERVER_MIN_POOL_BATCH
    bank.verifier.start()  # with the bank's modp group built in every worker
    app = create_app(lambda: bank, admin_token=token)
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level)
    finally:
        bank.close()
