"""schemathesis against the bank's OpenAPI description, on a real server process.

Every operation gets generated requests, valid and invalid (bounded: 20 examples per
operation and phase, fixed seed; `JOINTPAY_SCHEMATHESIS_EXAMPLES` for a longer run).
All of schemathesis's checks run but one: no 500,
every status code and content type documented, every response matching its schema,
problem+json for every error. Left out: ``positive_data_acceptance``, which expects
a schema-valid request to succeed; a deposit whose fields all have the right shape
still carries a signature that does not verify, and the bank must refuse it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_http import served  # noqa: F401 - the fixture: a bank server process

from bank_server import schemathesis_run


def test_openapi_contract_holds(served: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    print(schemathesis_run(f"{served['url']}/openapi.json", served["token"], tmp_path))
