#!/usr/bin/env bash
# Set up .venv and serve the Inpaint Anything server on API_HOST:API_PORT (0.0.0.0:8000).
# Serves the best models in the BentoML store (BENTOML_HOME); with none, it imports and
# serves the tiny random-weight demo models and says so (here and in /api/v1/ready).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

# Model tags (SAM_MODEL, LAMA_MODEL, SD_MODEL, SAM3_MODEL) pinned for every server process.
exports="$(.venv/bin/python scripts/import_models.py prepare --shell)"
eval "$exports"
echo "$exports" | sed 's/^export /serving /'

read -r host port environment < <(.venv/bin/python -c \
  'from config.settings import get_settings as g; s = g(); print(s.api_host, s.api_port, s.environment)')
reload=()
if [ "$environment" = "development" ] && [ "${RELOAD:-0}" = "1" ]; then reload=(--reload); fi

exec .venv/bin/bentoml serve service:InpaintAnything --host "$host" --port "$port" "${reload[@]}"
