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

python - <<'PY'
import os
import sys

from config.settings import get_settings
from models import store

settings = get_settings()
tags = store.resolve_tags(settings)
problems = []
for kind, tag in tags.items():
    if not store.has_entry(tag):
        named = getattr(settings, f"{kind}_model")
        problems.append(f"{kind.upper()}_MODEL={named} is missing" if named else f"no {kind} model")
    elif store.is_demo_tag(tag):
        print(f"serving {kind}: {tag} (tiny random-weight DEMO model)", file=sys.stderr)
    else:
        print(f"serving {kind}: {tag}", file=sys.stderr)
if problems:
    home = os.environ.get("BENTOML_HOME", "~/bentoml")
    sys.exit(
        f"error: in the model store at {home}: {'; '.join(problems)}. Download and import the "
        "weights with scripts/download_models.sh (in compose: docker compose -f "
        "docker/docker-compose.yml run --rm server scripts/download_models.sh), or bake them "
        "in with --build-arg BAKE_MODELS=download; see docs/deployment.md."
    )
PY

exec bentoml serve service:InpaintAnything \
  --host "${API_HOST:-0.0.0.0}" --port "${API_PORT:-8000}" "$@"
