"""Fast CPU inference for the heavy networks (SAM image encoder, LaMa generator).

PyTorch eager fp32 is the reference and the fallback. On a CPU host the default is OpenVINO,
in bf16 where the CPU has bf16 hardware (AVX512_BF16 or AMX) and fp32 otherwise: measured on
a 2-core AMD EPYC (Zen 4, AVX512_BF16), OpenVINO ran the SAM ViT-B encoder 2.2x faster than
eager in fp32 and 3.3x in bf16 (docs/benchmarks.md; ONNX Runtime fp32 was no faster than
OpenVINO fp32 and has no bf16 CPU path, torch autocast bf16 was ~1.7x).
On CUDA the runners stay on torch (see scripts/gpu_check.py).

The OpenVINO IR is converted once per model and cached on disk under
`<cache>/<model tag>/openvino-<version>/`; the compiled blobs for each precision are cached
beside it by OpenVINO itself, so a restart neither converts nor recompiles.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

if TYPE_CHECKING:
    import torch

    Example = torch.Tensor | tuple[torch.Tensor, ...]  # a network's input, or its inputs

logger = logging.getLogger("inpaint.backends")

BackendName = Literal["auto", "eager", "openvino"]
# The dimensions of a network's example input that may vary; for several inputs, per input.
Dynamic = list[int] | tuple[list[int], ...]
PrecisionName = Literal["auto", "fp32", "bf16"]
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
FEATURE_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")


@lru_cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of this host (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_report() -> dict[str, Any]:
    """The host facts that decide the backend, for /ready and the benchmarks."""
    flags = cpu_flags()
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": usable_cores(),
        "features": [flag for flag in FEATURE_FLAGS if flag in flags],
    }


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, not the whole machine)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def host_has_bf16() -> bool:
    return any(flag in cpu_flags() for flag in BF16_FLAGS)


def openvino_version() -> str | None:
    try:
        import openvino
    except ImportError:
        return None
    return openvino.__version__.split("-")[0]


class BackendChoice(NamedTuple):
    """Which backend runs a network, in which precision, and why."""

    backend: Literal["eager", "openvino"]
    precision: Literal["fp32", "bf16"]
    reason: str


def choose_backend(
    backend: BackendName, precision: PrecisionName, device_type: str, *, bf16_ok: bool
) -> BackendChoice:
    """The fastest path this host supports, unless a setting forces one.

    `bf16_ok`: the network's bf16 output agrees well enough with fp32 to be a default (mean
    mask IoU >= 0.98 for SAM, max error within 1/255 for LaMa, within 5% relative RMS for the
    SD UNet; docs/benchmarks.md).
    """
    if device_type != "cpu":
        return BackendChoice("eager", "fp32", f"torch on {device_type}")
    if backend == "eager":
        return BackendChoice("eager", "fp32", "forced by setting")
    if openvino_version() is None:
        return BackendChoice("eager", "fp32", "openvino is not installed")
    if precision == "auto":
        if host_has_bf16() and bf16_ok:
            return BackendChoice("openvino", "bf16", "auto: the CPU has bf16 hardware")
        return BackendChoice("openvino", "fp32", "auto: no bf16 hardware, or bf16 not default")
    if precision == "bf16" and not host_has_bf16():
        return BackendChoice("openvino", "fp32", "bf16 asked, but the CPU has no bf16 hardware")
    return BackendChoice("openvino", precision, "forced by setting")


class OpenVinoModule:
    """A compiled OpenVINO model called like the torch module it replaces (tensor -> tensor).

    Each call gets its own infer request, so concurrent callers do not share state.
    """

    def __init__(self, compiled: Any, min_input_side: int | None = None) -> None:
        self._compiled = compiled
        if min_input_side is not None:
            self.min_input_side = min_input_side

    def __call__(self, *inputs: torch.Tensor) -> Any:
        """The output tensor, or a tuple of them for a model with several outputs."""
        import torch

        request = self._compiled.create_infer_request()
        request.infer([tensor.detach().float().contiguous().numpy() for tensor in inputs])
        outputs = tuple(
            torch.from_numpy(request.get_output_tensor(i).data.copy())
            for i in range(len(self._compiled.outputs))
        )
        return outputs[0] if len(outputs) == 1 else outputs

    def parameters(self) -> Iterator[Any]:
        """None: the inputs it takes are float32 whatever precision runs inside."""
        return iter(())


def _sanitized(tag: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in tag)


def openvino_ir(module: torch.nn.Module, example: Example, cache: Path, dynamic: Dynamic) -> Path:
    """Convert `module` to OpenVINO IR once; later calls reuse the file in `cache`.

    `dynamic` lists the input dimensions that may vary (0 = batch, 2/3 = height/width); for
    a tuple of example inputs, one such list per input.
    """
    target = cache / "model.xml"
    if target.is_file():
        return target
    import openvino as ov

    examples, dynamics = (
        (example, dynamic) if isinstance(example, tuple) else ((example,), (dynamic,))
    )
    shapes = [
        ov.PartialShape([-1 if i in dims else d for i, d in enumerate(tensor.shape)])
        for tensor, dims in zip(examples, dynamics, strict=True)
    ]
    logger.info("converting %s to OpenVINO IR in %s (once per model)", type(module).__name__, cache)
    converted = ov.convert_model(module, example_input=example, input=shapes)
    cache.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".convert-", dir=cache.parent))
    try:
        ov.save_model(converted, scratch / "model.xml", compress_to_fp16=False)
        try:
            scratch.rename(cache)  # atomic: a concurrent converter may have won the race
        except OSError:
            if not target.is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def compile_openvino(ir: Path, precision: str, threads: int) -> Any:
    import openvino as ov

    core = ov.Core()
    # One blob cache per precision: OpenVINO 2026.4 gives fp32 and bf16 compilations the same
    # cache key, and a bf16 compile that imports the fp32 blob of the SD UNet outputs NaN.
    core.set_property({"CACHE_DIR": str(ir.parent / "compiled" / precision)})
    return core.compile_model(
        str(ir),
        "CPU",
        {
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
        },
    )


def accelerate(
    module: torch.nn.Module,
    example: Example,
    *,
    choice: BackendChoice,
    cache_root: Path,
    tag: str,
    threads: int,
    dynamic: Dynamic,
) -> tuple[Callable[..., Any], dict[str, Any]]:
    """`module` itself, or its OpenVINO twin; a failed conversion logs and falls back to eager.

    Returns the callable and the facts for the runner's status report.
    """
    if choice.backend == "eager":
        return module, {"backend": "eager", "precision": "fp32", "reason": choice.reason}
    version = openvino_version()
    cache = cache_root / _sanitized(tag) / f"openvino-{version}"
    try:
        ir = openvino_ir(module, example, cache, dynamic)
        compiled = compile_openvino(ir, choice.precision, threads)
    except Exception as exc:  # OpenVINO raises its own types; any failure means eager
        logger.exception("OpenVINO conversion of %s failed; falling back to eager fp32", tag)
        reason = f"openvino failed ({type(exc).__name__}); eager fallback"
        return module, {"backend": "eager", "precision": "fp32", "reason": reason}
    side = getattr(module, "min_input_side", None)
    details = {
        "backend": "openvino",
        "precision": choice.precision,
        "reason": choice.reason,
        "openvino": version,
        "artefact": str(ir),
    }
    return OpenVinoModule(compiled, side), details


def cuda_forward(
    module: torch.nn.Module, *, bf16: bool, channels_last: bool
) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict[str, Any]]:
    """`module` prepared for a GPU as scripts/gpu_check.py measures it: bf16 weights where
    asked (inputs cast in, float32 out, so callers see the eager interface) and channels-last
    memory for convolution-heavy networks. Changes `module` in place."""
    import torch

    if channels_last:
        module.to(memory_format=torch.channels_last)
    details = {"backend": "torch-cuda", "precision": "bf16" if bf16 else "fp32"}
    details["channels_last"] = channels_last
    if not bf16:
        return module, details
    module.to(torch.bfloat16)

    def run(inputs: torch.Tensor) -> torch.Tensor:
        return module(inputs.to(torch.bfloat16)).float()

    return run, details
