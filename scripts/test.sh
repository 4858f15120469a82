#!/usr/bin/env bash
# Set up .venv and run the whole test suite: unit, runner and real `bentoml serve` tests.
# Extra arguments go to pytest, e.g. `scripts/test.sh -k remove -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
