"""SAM 3 (text-prompted segmentation) in its official Hugging Face layout: checks and loading.

The layout is `facebook/sam3`'s as transformers saves it: `config.json` + `model.safetensors`
(the `Sam3Model` state dict) + the processor files (`processor_config.json` and a CLIP
tokenizer: `tokenizer.json`, or `vocab.json` + `merges.txt`). The check reads only the
safetensors header and builds the model from `config.json` on the meta device, so verifying
the full-size model costs no weight memory; every key is compared by name and shape, and a
problem names the key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from transformers import Sam3Model, Sam3Processor

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PROCESSOR_FILE = "processor_config.json"
TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"))
# The video/tracker half of a `sam3_video` checkpoint; Sam3Model ignores it on load too.
IGNORED_PREFIXES = ("tracker_model.", "tracker_neck.")
_SHOWN = 5


class Sam3CheckpointError(ValueError):
    """A SAM 3 folder is incomplete or does not match its own config."""


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return shown + (f" (and {len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else "")


def _config(folder: Path) -> Any:
    from transformers import Sam3Config

    try:
        data = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise Sam3CheckpointError(f"{folder / CONFIG_FILE}: unreadable ({exc})") from exc
    if data.get("model_type") not in ("sam3", "sam3_video"):
        raise Sam3CheckpointError(
            f"{folder / CONFIG_FILE}: model_type {data.get('model_type')!r}, expected 'sam3'"
        )
    return Sam3Config.from_pretrained(folder)


def expected_shapes(config: Any) -> dict[str, tuple[int, ...]]:
    """Every persistent key of `Sam3Model(config)` and its shape, built on the meta device."""
    import torch
    from transformers import Sam3Model

    with torch.device("meta"):
        model = Sam3Model(config)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def verify_sam3_dir(folder: Path) -> dict[str, Any]:
    """Check a SAM 3 folder key by key against its config; return BentoML model metadata."""
    from safetensors import safe_open

    folder = Path(folder)
    for name in (CONFIG_FILE, WEIGHTS_FILE, PROCESSOR_FILE):
        if not (folder / name).is_file():
            raise Sam3CheckpointError(f"{folder}: missing {name} (the facebook/sam3 layout)")
    if not any(all((folder / n).is_file() for n in group) for group in TOKENIZER_FILES):
        raise Sam3CheckpointError(
            f"{folder}: no tokenizer (tokenizer.json, or vocab.json + merges.txt)"
        )
    expected = expected_shapes(_config(folder))
    try:
        with safe_open(folder / WEIGHTS_FILE, framework="pt") as handle:
            found = {
                key: tuple(handle.get_slice(key).get_shape())
                for key in handle.keys()  # noqa: SIM118 (safe_open is not a dict)
                if not key.startswith(IGNORED_PREFIXES)
            }
    except Exception as exc:  # safetensors raises its own error types for a bad header
        raise Sam3CheckpointError(f"{folder / WEIGHTS_FILE}: unreadable ({exc})") from exc
    problems = []
    if missing := sorted(set(expected) - set(found)):
        problems.append(f"missing keys: {_listing(missing)}")
    if unexpected := sorted(set(found) - set(expected)):
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    if wrong := [
        f"{key} {found[key]} != {expected[key]}"
        for key in sorted(set(found) & set(expected))
        if found[key] != expected[key]
    ]:
        problems.append(f"wrong shapes: {_listing(wrong)}")
    if problems:
        raise Sam3CheckpointError(f"{folder / WEIGHTS_FILE}: {'; '.join(problems)}")
    n_params = sum(_numel(shape) for shape in found.values())
    return {"model_type": "sam3", "num_parameters": n_params}


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def load_sam3(folder: Path, device: torch.device) -> tuple[Sam3Model, Sam3Processor]:
    """The checked model (eval, no gradients) and its processor, from a SAM 3 folder."""
    from transformers import Sam3Model, Sam3Processor

    verify_sam3_dir(folder)
    model = Sam3Model.from_pretrained(folder).to(device).eval()
    model.requires_grad_(False)
    return model, Sam3Processor.from_pretrained(folder)
