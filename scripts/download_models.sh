#!/usr/bin/env bash
# Download the official weights (SAM, big-lama, a diffusers inpainting model) and import them
# into the BentoML model store. Safe to rerun: finished files are verified and skipped, partial
# ones resume.
#
#   SAM_MODEL_TYPE  vit_h (default), vit_l or vit_b
#   SD_MODEL_ID     Hub id of the inpainting pipeline
#                   (default stable-diffusion-v1-5/stable-diffusion-inpainting)
#   SD_VARIANT      fp16 (default: half the bytes) or full
#   MODELS_DIR      where the files go (default ./pretrained_models)
#   HF_TOKEN        only for gated Hub models; HF_ENDPOINT selects a Hub mirror
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY=.venv/bin/python
if [[ ! -x "$PY" ]]; then
    echo "error: $PY not found; run scripts/test.sh or scripts/start_dev.sh first to create .venv" >&2
    exit 1
fi

SAM_MODEL_TYPE="${SAM_MODEL_TYPE:-vit_h}"
SD_MODEL_ID="${SD_MODEL_ID:-stable-diffusion-v1-5/stable-diffusion-inpainting}"
SD_VARIANT="${SD_VARIANT:-fp16}"
MODELS_DIR="${MODELS_DIR:-./pretrained_models}"

download() {
    "$PY" -m models.download "$@" --models-dir "$MODELS_DIR" --print-path
}

echo "==> SAM $SAM_MODEL_TYPE -> $MODELS_DIR" >&2
SAM_CHECKPOINT="$(download sam --type "$SAM_MODEL_TYPE")"
echo "==> big-lama -> $MODELS_DIR" >&2
LAMA_DIR="$(download lama)"
echo "==> $SD_MODEL_ID ($SD_VARIANT) -> $MODELS_DIR" >&2
SD_DIR="$(download sd --model-id "$SD_MODEL_ID" --variant "$SD_VARIANT")"

echo "==> importing into the BentoML model store" >&2
"$PY" scripts/import_models.py sam --type "$SAM_MODEL_TYPE" --checkpoint "$SAM_CHECKPOINT"
"$PY" scripts/import_models.py lama --checkpoint "$LAMA_DIR"
"$PY" scripts/import_models.py sd --model "$SD_DIR"

echo "done: SAM $SAM_CHECKPOINT, big-lama $LAMA_DIR, SD $SD_DIR" >&2
