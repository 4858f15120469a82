"""The official big-lama folder: `config.yaml` + `models/best.ckpt`, read, checked and written.

`config.yaml` is LaMa's whole training config. Only its `generator` section is resolved:
elsewhere it holds interpolations such as `${env:TORCH_HOME}` that LaMa itself never resolves
at prediction time (and that omegaconf 2.1+ no longer knows how to resolve).

`best.ckpt` is a PyTorch Lightning checkpoint whose `state_dict` holds the generator under the
prefix `generator.` next to other modules (evaluators, and in training checkpoints the
discriminator and losses), which are ignored. The generator keys must match exactly.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from models.lama_network import FFCResNetGenerator, build_generator

CONFIG_FILE = "config.yaml"
CHECKPOINT_FILE = Path("models") / "best.ckpt"
GENERATOR_PREFIX = "generator."
PACKAGED_BIG_LAMA_CONFIG = Path(__file__).with_name("big_lama_config.yaml")
_MAX_LISTED = 20


class LamaCheckpointError(ValueError):
    """A big-lama folder that cannot be used; the message names the file, key or shape."""


def config_path(model_dir: Path) -> Path:
    return Path(model_dir) / CONFIG_FILE


def checkpoint_path(model_dir: Path) -> Path:
    return Path(model_dir) / CHECKPOINT_FILE


def read_generator_config(model_dir: Path, config_file: Path | None = None) -> dict[str, Any]:
    """The `generator` section of `<model_dir>/config.yaml` (or of `config_file`), with its
    interpolations resolved."""
    path = Path(config_file) if config_file else config_path(model_dir)
    if not path.is_file():
        raise LamaCheckpointError(f"LaMa config not found: {path}")
    try:
        config = OmegaConf.load(path)
    except (OSError, OmegaConfBaseException, ValueError) as exc:  # yaml errors are ValueErrors
        raise LamaCheckpointError(f"cannot read LaMa config {path}: {exc}") from exc
    if not isinstance(config, DictConfig) or "generator" not in config:
        raise LamaCheckpointError(f"LaMa config {path} has no 'generator' section")
    try:
        generator = OmegaConf.to_container(config.generator, resolve=True)
    except OmegaConfBaseException as exc:
        raise LamaCheckpointError(f"cannot resolve 'generator' in {path}: {exc}") from exc
    if not isinstance(generator, dict):
        raise LamaCheckpointError(f"'generator' in {path} is not a mapping")
    if generator.get("kind") != "ffc_resnet":
        raise LamaCheckpointError(
            f"{path}: generator kind {generator.get('kind')!r} is not supported (need ffc_resnet)"
        )
    return {str(key): value for key, value in generator.items()}


def _build(
    generator_config: Mapping[str, Any], model_dir: Path, device: str | torch.device
) -> FFCResNetGenerator:
    try:
        with torch.device(device):
            return build_generator(generator_config)
    except ValueError as exc:
        raise LamaCheckpointError(f"{config_path(model_dir)}: {exc}") from exc


def _load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise LamaCheckpointError(f"LaMa checkpoint not found: {path}")
    try:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            # Lightning pickles the training config (omegaconf containers) as hyper_parameters,
            # which the weights-only unpickler refuses. Full unpickling runs code from the file:
            # only the official release or files this project wrote belong in a model dir.
            checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for corrupt or truncated files
        raise LamaCheckpointError(f"cannot read LaMa checkpoint {path}: {exc}") from exc
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), Mapping):
        raise LamaCheckpointError(f"{path} is not a Lightning checkpoint with a 'state_dict'")
    return checkpoint


def _generator_state(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    return {
        key[len(GENERATOR_PREFIX) :]: value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(GENERATOR_PREFIX)
    }


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return f"{shown} (and {more} more)" if more > 0 else shown


def _check_state(
    expected: Mapping[str, torch.Tensor], found: Mapping[str, Any], path: Path
) -> None:
    """Raise LamaCheckpointError naming every missing, unexpected or misshapen generator key."""
    problems: list[str] = []
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing:
        keys = [GENERATOR_PREFIX + k for k in missing]
        problems.append(f"{len(missing)} missing generator keys: {_listed(keys)}")
    if unexpected:
        keys = [GENERATOR_PREFIX + k for k in unexpected]
        problems.append(f"{len(unexpected)} unexpected generator keys: {_listed(keys)}")
    misshapen = []
    for key in sorted(set(expected) & set(found)):
        value = found[key]
        if not isinstance(value, torch.Tensor):
            misshapen.append(f"{GENERATOR_PREFIX}{key}: expected a tensor, got {type(value)}")
        elif tuple(value.shape) != tuple(expected[key].shape):
            misshapen.append(
                f"{GENERATOR_PREFIX}{key}: expected shape {tuple(expected[key].shape)}, "
                f"got {tuple(value.shape)}"
            )
    if misshapen:
        problems.append(f"{len(misshapen)} misshapen generator keys: {_listed(misshapen)}")
    if problems:
        raise LamaCheckpointError(
            f"{path} does not match the config's generator: " + "; ".join(problems)
        )


def load_generator(model_dir: Path, device: torch.device | str = "cpu") -> FFCResNetGenerator:
    """Build the generator from config.yaml and load best.ckpt's `generator.*` weights strictly.

    Returns the network in eval mode, float32, without gradients, on `device`.
    """
    model_dir = Path(model_dir)
    generator_config = read_generator_config(model_dir)
    path = checkpoint_path(model_dir)
    state = _generator_state(_load_checkpoint(path))
    # Built on the meta device: the checkpoint's tensors become the parameters (assign=True),
    # so no random init runs and no second copy of the weights is made.
    model = _build(generator_config, model_dir, "meta")
    _check_state(model.state_dict(), state, path)
    model.load_state_dict(state, strict=True, assign=True)
    model = model.to(device=device, dtype=torch.float32)
    model.requires_grad_(False)
    return model.eval()


def verify_lama_dir(model_dir: Path, config_file: Path | None = None) -> dict[str, Any]:
    """Check a big-lama folder (its config.yaml, or `config_file` instead) without running the
    network; return metadata describing it."""
    model_dir = Path(model_dir)
    generator_config = read_generator_config(model_dir, config_file)
    path = checkpoint_path(model_dir)
    checkpoint = _load_checkpoint(path)
    state = _generator_state(checkpoint)
    model = _build(generator_config, model_dir, "meta")
    expected = model.state_dict()
    _check_state(expected, state, path)
    return {
        "generator_config": generator_config,
        "kind": generator_config["kind"],
        "input_nc": model.input_nc,
        "output_nc": model.output_nc,
        "ngf": model.ngf,
        "n_downsampling": model.n_downsampling,
        "n_blocks": model.n_blocks,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "num_generator_keys": len(expected),
        "num_skipped_keys": len(checkpoint["state_dict"]) - len(state),
        "checkpoint_file": str(CHECKPOINT_FILE),
        "checkpoint_bytes": path.stat().st_size,
        "pytorch_lightning_version": str(checkpoint.get("pytorch-lightning_version", "")),
    }
