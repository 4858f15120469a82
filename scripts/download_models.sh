#!/usr/bin/env bash
# Download the official weights (SAM, big-lama, a diffusers inpainting model, SAM 3) into MODELS_DIR
# and import them into the BentoML model store. Safe to rerun: finished files are verified and
# skipped, partial ones resume.
#
# Every choice comes from the settings (environment or .env; see .env.example):
#   SAM_MODEL_TYPE (vit_h | vit_l | vit_b), SD_MODEL_ID, SD_VARIANT (fp16 | full), MODELS_DIR.
#   HF_TOKEN only for gated Hub models; HF_ENDPOINT selects a Hub mirror.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY=.venv/bin/python
if [[ ! -x "$PY" ]]; then
    echo "error: $PY not found; run scripts/start_dev.sh or scripts/test.sh first" >&2
    exit 1
fi

download() { "$PY" -m tooling.download "$@" --print-path; }

echo "==> SAM checkpoint" >&2
SAM_CHECKPOINT="$(download sam)"
echo "==> big-lama" >&2
LAMA_DIR="$(download lama)"
echo "==> Stable Diffusion inpainting pipeline" >&2
SD_DIR="$(download sd)"
echo "==> SAM 3 (text selection; gated on the Hub: accept its licence and set HF_TOKEN)" >&2
SAM3_DIR="$(download sam3)"

echo "==> importing into the BentoML model store (${BENTOML_HOME:-~/bentoml})" >&2
"$PY" scripts/import_models.py sam --checkpoint "$SAM_CHECKPOINT"
"$PY" scripts/import_models.py lama --checkpoint "$LAMA_DIR"
"$PY" scripts/import_models.py sd --model "$SD_DIR"
"$PY" scripts/import_models.py sam3 --checkpoint "$SAM3_DIR"
echo "done: the server now serves these (scripts/start_dev.sh)" >&2
