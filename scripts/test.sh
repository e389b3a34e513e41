#!/usr/bin/env bash
# Installs what the test suite needs and runs all of it: ruff, mypy --strict, pytest.
# Usage: bash scripts/test.sh [extra pytest args]
# Fails (never skips) when a real component the tests need is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1

say() { printf '\n== %s\n' "$*"; }

# --- system packages: PC/SC stack for the smart-card tests, PostgreSQL client tools ---
need_apt=()
dpkg -s pcscd >/dev/null 2>&1 || need_apt+=(pcscd)
dpkg -s vsmartcard-vpcd >/dev/null 2>&1 || need_apt+=(vsmartcard-vpcd)
dpkg -s libpcsclite-dev >/dev/null 2>&1 || need_apt+=(libpcsclite-dev)
command -v swig >/dev/null 2>&1 || need_apt+=(swig)
if [ ${#need_apt[@]} -gt 0 ]; then
  say "installing system packages: ${need_apt[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# --- Python environment ---
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  python3 -m venv .venv
fi
say "installing jointpay and its test dependencies"
.venv/bin/pip install -q -e '.[dev,pcsc]' 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c 'import jointpay, gmpy2, coincurve, sqlalchemy, psycopg' \
  || { echo "FATAL: the Python dependencies did not install" >&2; exit 1; }

# --- PostgreSQL: the storage tests run against the real server ---
export JOINTPAY_TEST_PG="${JOINTPAY_TEST_PG:-postgresql://postgres@127.0.0.1:5432/test}"
if ! .venv/bin/python scripts/pg_ready.py "$JOINTPAY_TEST_PG"; then
  say "PostgreSQL is not answering; trying to start it"
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
  for _ in $(seq 1 30); do .venv/bin/python scripts/pg_ready.py "$JOINTPAY_TEST_PG" && break; sleep 1; done
  .venv/bin/python scripts/pg_ready.py "$JOINTPAY_TEST_PG" \
    || { echo "FATAL: PostgreSQL at $JOINTPAY_TEST_PG is unreachable; the storage tests need it" >&2; exit 1; }
fi

# --- pcscd with the vsmartcard-vpcd reader: the PC/SC tests drive the card through it ---
if ! .venv/bin/python scripts/pcsc_ready.py; then
  if ! pgrep -x pcscd >/dev/null 2>&1; then
    say "starting pcscd"
    if [ "$(id -u)" = 0 ]; then
      (pcscd --foreground --error >/tmp/jointpay-pcscd.log 2>&1 &)
    else
      sudo sh -c 'pcscd --foreground --error >/tmp/jointpay-pcscd.log 2>&1 &'
    fi
  fi
  for _ in $(seq 1 30); do .venv/bin/python scripts/pcsc_ready.py && break; sleep 0.5; done
  .venv/bin/python scripts/pcsc_ready.py --verbose \
    || { echo "FATAL: pcscd does not show the vsmartcard-vpcd reader; the PC/SC tests need it" >&2; exit 1; }
fi

say "ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check src
say "mypy --strict"
.venv/bin/mypy

say "pytest"
# pytest's exit status 5 means it ran no test: that is a failure here, never a pass
run_pytest() {
  set +e
  .venv/bin/pytest -p no:cacheprovider --cov=jointpay --cov-branch --cov-report= "$@"
  local rc=$?
  set -e
  if [ "$rc" -eq 5 ]; then
    echo "FATAL: pytest collected no tests ($*)" >&2
    exit 1
  fi
  [ "$rc" -eq 0 ] || exit "$rc"
}
if [ "$#" -gt 0 ]; then
  run_pytest "$@"  # the tests asked for, in one process
else
  # Every test but the PC/SC ones on all cores (pytest-xdist), then the PC/SC ones in
  # one process: the machine has one virtual reader, and their card timeouts are not
  # made for a machine busy with other tests. (On the ninth session's machine: 15.5
  # minutes in one process, 8 on two cores plus 2 for the PC/SC tests.)
  run_pytest -n auto -m "not pcsc"
  run_pytest -m pcsc --cov-append
fi

say "bench/deposit.py --smoke: every suite's deposit path, in process and over HTTP"
.venv/bin/python bench/deposit.py --smoke

say "coverage: crypto/ must stay at 100 % of branches"
.venv/bin/coverage report --include='src/jointpay/crypto/*' --fail-under=100 --skip-covered \
  || { echo "FATAL: crypto/ branch coverage fell below 100 %" >&2; exit 1; }
.venv/bin/coverage report --skip-covered | tail -n 25
