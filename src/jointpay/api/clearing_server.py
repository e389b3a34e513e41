"""``jointpay clearing serve``: a clearing house as an HTTP service (OpenAPI at /docs).

Members reach it with messages they sign (``POST /v1/clear``, ``/v1/online-check``);
the read-only endpoints publish its certificate, its members and the scheme's hot
list; the admin endpoints (bearer token) settle and audit.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from jointpay.api.server import (
    ADMIN_ERRORS,
    DEPOSIT_SCHEMA,
    SIGNED_BODY,
    StrictBody,
    _problems,
    admin_guard,
    load_admin_token,
    log_to_stderr,
    read_json,
    serve_problems_and_bounds,
    strict_json,
)
from jointpay.service.clearing import ClearingHouse


class MemberBody(StrictBody):
    bank_cert: str = Field(pattern=r"^([0-9a-f]{2}){1,1024}$")
    url: str | None = Field(default=None, max_length=512)


def create_clearing_app(house_factory: Callable[[], ClearingHouse], *, admin_token: str) -> FastAPI:
    app = FastAPI(
        title="jointpay clearing house",
        version="1",
        description="Clears payments between the banks of a jointpay scheme: "
        "pre-verification, forwarding to issuers, net positions.",
    )
    holder: dict[str, ClearingHouse] = {}

    def get_house() -> ClearingHouse:
        if "house" not in holder:
            holder["house"] = house_factory()
        return holder["house"]

    admin = admin_guard(admin_token)

    House = Annotated[ClearingHouse, Depends(get_house)]
    serve_problems_and_bounds(app)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/clearing", responses=_problems(422, 503))
    def parameters(house: House) -> dict[str, Any]:
        """Our BANK-CERT (role clearing) and our members' BANK-CERTs."""
        return house.parameters()

    @app.get("/v1/hotlist", responses=_problems(503))
    def hotlist(house: House) -> dict[str, Any]:
        """Every member's hot list, brought up to date."""
        return {"entries": house.scheme_hotlist()}

    @app.post(
        "/v1/clear",
        responses=_problems(400, 413, 422, 503),
        openapi_extra=SIGNED_BODY,
    )
    async def clear(request: Request, house: House) -> dict[str, Any]:
        """An acquirer's payments made with other members' cards."""
        body = await read_json(request)
        return dict(await run_in_threadpool(house.clear, body))

    @app.post(
        "/v1/deposits",
        responses=_problems(400, 404, 409, 413, 422, 503),
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["deposit", "merchant_cert"],
                            "properties": {
                                "deposit": DEPOSIT_SCHEMA,
                                "merchant_cert": {"type": "string", "pattern": "^[0-9a-f]+$"},
                            },
                        }
                    }
                },
            }
        },
    )
    async def deposit(request: Request, house: House) -> dict[str, Any]:
        """A merchant of a member bank deposits here: we pre-verify its payments, clear
        the other banks' cards with their issuers, and relay the session to its bank,
        whose signed receipt we return."""
        body = await read_json(request)
        return dict(await run_in_threadpool(house.relay, body))

    @app.post(
        "/v1/online-check",
        responses=_problems(400, 413, 422, 503),
        openapi_extra=SIGNED_BODY,
    )
    async def online_check(request: Request, house: House) -> dict[str, Any]:
        """An acquirer asks the card's bank, through us, whether a payment may go on."""
        body = await read_json(request, 64 * 1024)
        return dict(await run_in_threadpool(house.online_check, body))

    @app.post(
        "/v1/admin/members",
        dependencies=[Depends(admin), Depends(strict_json)],
        responses=_problems(*ADMIN_ERRORS, 413),
    )
    def add_member(body: MemberBody, house: House) -> dict[str, Any]:
        return house.add_member(body.bank_cert, body.url)

    @app.get("/v1/admin/positions", dependencies=[Depends(admin)], responses=_problems(401, 503))
    def positions(house: House) -> dict[str, Any]:
        return {"clearing_house": house.ch_id, "positions": house.positions()}

    @app.post("/v1/admin/settle", dependencies=[Depends(admin)], responses=_problems(401, 503))
    def settle(house: House) -> dict[str, Any]:
        return house.settle()

    @app.get("/v1/admin/audit", dependencies=[Depends(admin)], responses=_problems(401, 503))
    def audit(house: House) -> dict[str, Any]:
        return house.audit()

    return app


def serve_clearing(
    home: Any, *, host: str, port: int, admin_token_file: Path | None, log_level: str = "warning"
) -> None:
    """``jointpay clearing serve``: uvicorn on the clearing house's app; ``log_level``
    as in :func:`jointpay.api.server.log_to_stderr`."""
    import uvicorn

    log_to_stderr(log_level)
    store = home.store()
    token = load_admin_token(home.root, admin_token_file)
    app = create_clearing_app(lambda: ClearingHouse(store, clock=home.clock), admin_token=token)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
