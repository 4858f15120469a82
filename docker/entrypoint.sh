#!/usr/bin/env bash
# Entry point of docker/Dockerfile.
#   serve [ARGS]   (default) check that the store holds every model the runners will load,
#                  then `bentoml serve` on API_HOST:API_PORT with ARGS. Unlike start_dev.sh it
#                  never imports the demo models: without weights a production container
#                  stops and says what to do, instead of serving noise.
#   COMMAND ...    anything else runs as is, e.g. scripts/download_models.sh or bash.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$#" -gt 0 ] && [ "$1" != serve ]; then
  exec "$@"
fi
[ "$#" -gt 0 ] && shift

if ! python scripts/import_models.py check >&2; then
  echo "(BENTOML_HOME=${BENTOML_HOME:-~/bentoml}; in compose: docker compose -f" \
    "docker/docker-compose.yml run --rm server scripts/download_models.sh; or bake the" \
    "weights in with --build-arg BAKE_MODELS=download; see docs/deployment.md)" >&2
  exit 1
fi

exec bentoml serve service:InpaintAnything \
  --host "${API_HOST:-0.0.0.0}" --port "${API_PORT:-8000}" "$@"
