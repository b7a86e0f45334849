#!/usr/bin/env bash
# Set up a fresh machine for the test suite and run it: the README's test command, and CI's.
#   bash tests/run.sh [pytest args]            # everything (CI)
#   bash tests/run.sh --fast [pytest args]     # all but the tests marked slow (tests/e2e and the integration
#                                              # tests tests/conftest.py names in SLOW): the loop while editing,
#                                              # on 2 workers (VLFACTORY_TEST_WORKERS), a test file per worker
#   bash tests/run.sh tests/unit               # one folder: unit, stages, store, cli, e2e
set -euo pipefail
cd "$(dirname "$0")/.."

# PostgreSQL backs the shared-catalog tests; install it where it is missing and we may.
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 && ! command -v pg_ctl >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing postgresql (apt-get)"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "note: PostgreSQL is not installed; the shared-catalog test will be skipped" >&2
  fi
fi

# Chromium renders the HTML reports in their tests.
command -v chromium >/dev/null 2>&1 || { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || echo "note: chromium is not installed; the HTML report browser tests will be skipped" >&2

bash setup.sh cpu,dev
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}
if [ "${1:-}" = "--fast" ]; then
  shift
  # A file's tests stay on one worker (loadfile), so a module's fixture builds its lake once; tests/e2e is all
  # slow, and not even collected (its modules import torch: seconds on every worker).
  exec .venv/bin/python -m pytest -q -m "not slow" -n "${VLFACTORY_TEST_WORKERS:-2}" --dist loadfile \
    --ignore=tests/e2e "$@"
fi
exec .venv/bin/python -m pytest -q "$@"
