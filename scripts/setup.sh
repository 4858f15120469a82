#!/usr/bin/env bash
# Create (or reuse) the virtual environment at .venv and install the pinned dependencies.
# Re-runs are instant: the install is redone only when pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
fi

stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing dependencies (torch is large: the first run takes a few minutes)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check ".[dev]"
  rm -f .venv/.installed-*
  touch "$stamp"
fi
