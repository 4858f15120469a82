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
  # The pins of pyproject.toml, installed as requirements: the server is run from this
  # checkout, not installed as a package (no build step, no build/ or *.egg-info left here).
  .venv/bin/python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]
print("\n".join(p["dependencies"] + p["optional-dependencies"]["dev"]))' > .venv/requirements.txt
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r .venv/requirements.txt
  rm -f .venv/.installed-*
  touch "$stamp"
fi
# The editor's browser assets (onnxruntime-web, Swagger UI, ReDoc), pinned in web/package-lock.json.
web/build.sh
