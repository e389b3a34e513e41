#!/usr/bin/env bash
# Installs jointpay into .venv and runs the whole lifecycle on a fresh embedded bank.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -e . 2>&1 | grep -v '^WARNING: Location' || true
exec .venv/bin/jointpay demo "$@"
