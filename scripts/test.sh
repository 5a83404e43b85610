#!/usr/bin/env bash
# The test suite (tiny real models, real MLflow store and servers, real S3 endpoint on loopback,
# real Prefect, PostgreSQL on 127.0.0.1:5432, the web app in a real headless Chromium).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
# The browser tests drive Debian's Chromium (Playwright's own browser download needs the internet).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium for the browser tests (apt-get)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
    || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
fi
# Two workers: much of a test's time is one busy core (imports, servers starting, git, DVC), so two
# tests at once finish the suite sooner on 2 cores. --dist loadscope keeps a module on one worker: the
# quality module's toy bases train their variants once (xdist_group marks do not group under pytest 9.2),
# and in collection order (tests/conftest.py puts that longest module first). CONCEPTLAB_TEST_WORKERS=0
# runs it in one process.
workers="${CONCEPTLAB_TEST_WORKERS:-2}"
# Torch threads: the cores shared out among the workers. Two workers each running as many OpenMP threads
# as there are cores spin-wait for each other: on 2 cores a toy training step ran 9x slower with 2 workers
# x 2 threads than with 2 x 1 (README, "The test suite"). The processes the tests start inherit it.
per_worker=$(( $(nproc) / (workers > 1 ? workers : 1) ))
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( per_worker > 0 ? per_worker : 1 ))}"
exec uv run --frozen pytest -n "$workers" --dist loadscope --no-loadscope-reorder "$@"
