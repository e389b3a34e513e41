"""An httpx client for ``jointpay bank serve``: the :class:`BankPort` over HTTP.

Every state-changing call carries an ``Idempotency-Key`` derived from the request
itself, so a retry after a lost answer gets the first answer and moves nothing twice.
Network failures are retried a few times with backoff; a refusal from the bank
(a problem+json answer) becomes the same :class:`Refused` / :class:`BadInput` the
embedded bank raises, so the commands behave the same either way.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

import httpx

from jointpay.crypto.certs import VerifyKey
from jointpay.crypto.fips186 import verify_bank_group
from jointpay.crypto.group import Group, GroupResolver, ModpParams, resolver
from jointpay.domain.records import HotlistEntry
from jointpay.protocol.deposit import canonical_json
from jointpay.service.errors import BadInput, Refused

RETRIES = 4


def wait_until_serving(
    url: str, *, alive: Callable[[], bool] = lambda: True, timeout: float = 30.0
) -> bool:
    """Poll ``GET {url}/health`` until it answers 200 (True), or until the server's
    process is gone (``alive`` says False) or ``timeout`` seconds have passed (False):
    for whoever starts a ``bank serve`` or ``clearing serve`` and must wait for it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url.rstrip('/')}/health", timeout=1).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        if not alive():
            return False
        time.sleep(0.05)
    return False


class JsonHttp:
    """JSON over HTTP with retries; problem+json answers become service errors."""

    def __init__(
        self,
        url: str,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 60.0,
    ) -> None:
        self._http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def _call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        idempotency_key: str | None = None,
        content: bytes | None = None,
    ) -> Any:
        """``json_body`` is sent as its canonical JSON, or ``content``: the canonical
        JSON already made (to derive the idempotency key from, once)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        if json_body is not None:
            content = canonical_json(json_body)
        if content is not None:
            headers["Content-Type"] = "application/json"
        delay = 0.2
        for attempt in range(RETRIES + 1):
            try:
                resp = self._http.request(method, path, content=content, headers=headers)
            except httpx.TransportError as exc:
                if attempt == RETRIES:
                    raise Refused("bank_unreachable", f"the bank did not answer: {exc}") from exc
                time.sleep(delay)
                delay *= 2
                continue
            if resp.status_code >= 500 and attempt < RETRIES:
                time.sleep(delay)
                delay *= 2
                continue
            if resp.is_success:
                try:
                    return resp.json()
                except ValueError as exc:  # a proxy's page, a truncated body
                    raise Refused(
                        "bad_answer", f"the bank's answer is not JSON: {resp.text[:200]!r}"
                    ) from exc
            proof: bytes | None = None
            try:
                prob = resp.json()
                if not isinstance(prob, dict):
                    raise ValueError("a problem is a JSON object")
                code, detail = str(prob.get("code", "error")), str(prob.get("detail", ""))
                if isinstance(prob.get("proof"), str):
                    proof = bytes.fromhex(prob["proof"])
            except ValueError:
                code, detail = "error", resp.text[:200]
            if resp.status_code in (400, 404, 413):
                raise BadInput(code, detail)
            raise Refused(code, detail, proof=proof)
        raise AssertionError("unreachable")  # pragma: no cover


class HttpClearing(JsonHttp):
    """A clearing house over HTTP (``jointpay clearing serve``), as a bank reaches it."""

    def parameters(self) -> dict[str, Any]:
        return dict(self._call("GET", "/v1/clearing"))

    def clear(self, message: dict[str, Any]) -> dict[str, Any]:
        return dict(self._call("POST", "/v1/clear", json_body=message))

    def scheme_hotlist(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/hotlist")["entries"])

    def online_check(self, message: dict[str, Any]) -> dict[str, Any]:
        return dict(self._call("POST", "/v1/online-check", json_body=message))


class ClearingDeposit(JsonHttp):
    """A merchant's deposits through a clearing house (``deposit --clearing URL``).

    The house relays the session to ``bank_id``, the merchant's bank, whose signed
    receipt comes back; the MERCHANT-CERT lets the house check the session first.
    """

    def __init__(self, url: str, bank_id: str, merchant_cert: bytes, **kw: Any) -> None:
        super().__init__(url, **kw)
        self._bank_id = bank_id
        self._cert = merchant_cert

    @property
    def bank_id(self) -> str:
        return self._bank_id

    def deposit(self, message: object) -> dict[str, Any]:
        body = {"deposit": message, "merchant_cert": self._cert.hex()}
        return dict(self._call("POST", "/v1/deposits", json_body=body))


class HttpMember(JsonHttp):
    """A member bank over HTTP (``jointpay bank serve``), as a clearing house reaches it."""

    def interbank_deposit(self, message: dict[str, Any]) -> dict[str, Any]:
        return dict(self._call("POST", "/v1/interbank/deposits", json_body=message))

    def interbank_relayed(self, message: dict[str, Any]) -> dict[str, Any]:
        body = canonical_json(message)
        key = "relay-" + hashlib.sha256(body).hexdigest()
        return dict(self._call("POST", "/v1/interbank/relayed", content=body, idempotency_key=key))

    def interbank_settlement(self, message: dict[str, Any]) -> dict[str, Any]:
        return dict(self._call("POST", "/v1/interbank/settlements", json_body=message))

    def interbank_position(self, clearing_house: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/interbank/positions/{clearing_house}"))

    def interbank_online_check(self, message: dict[str, Any]) -> dict[str, Any]:
        return dict(self._call("POST", "/v1/interbank/online-check", json_body=message))

    def hotlist(self, since: int = 0) -> list[HotlistEntry]:
        return _hotlist(self._call("GET", f"/v1/hotlist?since={int(since)}"))


def _hotlist(out: Any) -> list[HotlistEntry]:
    return [
        HotlistEntry(int(e["version"]), str(e["card"]), str(e["reason"]), int(e["added_at"]))
        for e in out["entries"]
    ]


class HttpBank(JsonHttp):
    """A remote bank. ``pinned_key`` (raw Ed25519) is checked against what it publishes."""

    def __init__(
        self,
        url: str,
        *,
        pinned_key: bytes | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 60.0,
    ) -> None:
        super().__init__(url, transport=transport, timeout=timeout)
        self._pinned_key = pinned_key
        self._params: dict[str, Any] | None = None
        self._resolver: GroupResolver | None = None

    def _parameters(self) -> dict[str, Any]:
        """The bank's published parameters, fetched on first need (and checked once)."""
        if self._params is None:
            params = self._call("GET", "/v1/bank")
            raw = bytes.fromhex(params["public_key"])
            if self._pinned_key is not None and raw != self._pinned_key:
                raise Refused("wrong_bank_key", "the server's bank key is not the one we trust")
            own: dict[str, ModpParams] = {}
            if params.get("group_record") is not None:  # a bank's own group: re-check it
                rec = verify_bank_group(params["group_record"])
                own[rec.name] = rec.params
            self._resolver = resolver(own)
            self._params = params
        return self._params

    def parameters(self) -> dict[str, Any]:
        return dict(self._parameters())

    @property
    def bank_id(self) -> str:
        return str(self._parameters()["bank_id"])

    @property
    def currency(self) -> str:
        return str(self._parameters()["currency"])

    @property
    def verify_key(self) -> VerifyKey:
        return VerifyKey(self.bank_id, bytes.fromhex(self._parameters()["public_key"]))

    def resolve_group(self, suite: str, name: str | None) -> Group:
        self._parameters()
        assert self._resolver is not None
        return self._resolver(suite, name)

    def deposit(self, message: object) -> dict[str, Any]:
        # the body's bytes made once, for the key and to send: serializing a batch of
        # thousands of payments costs about what digesting it for the signature does
        body = canonical_json(message)
        key = "dep-" + hashlib.sha256(body).hexdigest()
        return dict(self._call("POST", "/v1/deposits", content=body, idempotency_key=key))

    def withdraw(self, request: bytes) -> bytes:
        key = "wd-" + hashlib.sha256(request).hexdigest()
        out = self._call(
            "POST", "/v1/withdrawals", json_body={"request": request.hex()}, idempotency_key=key
        )
        return bytes.fromhex(out["ack"])

    def hotlist(self, since: int = 0) -> list[HotlistEntry]:
        return _hotlist(self._call("GET", f"/v1/hotlist?since={int(since)}"))

    def scheme(self) -> dict[str, Any]:
        return dict(self._call("GET", "/v1/scheme"))

    def scheme_hotlist(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/scheme/hotlist")["entries"])

    def rates(self) -> dict[str, Any]:
        return dict(self._call("GET", "/v1/rates"))

    def online_check(self, message: dict[str, Any]) -> dict[str, Any]:
        """A service provider's signed on-line check (:class:`OnlineCheck`)."""
        return dict(self._call("POST", "/v1/online-check", json_body=message))
