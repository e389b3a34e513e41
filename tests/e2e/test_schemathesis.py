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

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from test_http import served  # noqa: F401 - the fixture: a bank server process


def test_openapi_contract_holds(served: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    st = Path(sys.executable).with_name("schemathesis")
    p = subprocess.run(
        [
            str(st),
            "run",
            f"{served['url']}/openapi.json",
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
            "--max-examples",
            os.environ.get("JOINTPAY_SCHEMATHESIS_EXAMPLES", "20"),
            "--seed",
            "1",
            "--header",
            f"Authorization: Bearer {served['token']}",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert p.returncode == 0, p.stdout[-6000:] + p.stderr[-2000:]
    assert " passed" in p.stdout
    print(p.stdout[-1500:])  # the summary: operations and generated cases
