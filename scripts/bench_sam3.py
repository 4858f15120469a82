"""SAM 3's cost on this host: image features and one text query, eager vs converted backends.

    .venv/bin/python scripts/bench_sam3.py            # the tiny SAM 3 (seconds)
    .venv/bin/python scripts/bench_sam3.py --full     # full-size random weights (3.4 GB)

Also `scripts/bench.py --sections sam3 [--full]`. Random weights: the timings are the real
model's, the masks are noise. The vision encoder (the half a kept photo skips) is tried on
OpenVINO and ONNX Runtime; a backend that does not convert is reported with its error.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

PHOTO = Path(__file__).resolve().parent.parent / "examples" / "remove" / "dog.jpg"


def _timed(run: Callable[[], Any], repeats: int) -> tuple[dict[str, float], Any]:
    started = time.perf_counter()
    run()  # first call: lazy allocations, conversion caches
    first = time.perf_counter() - started
    seconds, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - started)
    timing = {
        "first_s": round(first, 4),
        "median_s": round(float(np.median(seconds)), 4),
        "min_s": round(min(seconds), 4),
    }
    # As it goes: a full-size run takes long, and a host short of memory may stop it midway.
    print(f"  {timing}", file=sys.stderr, flush=True)
    return timing, result


def _openvino_encoder(model: Any, pixels: torch.Tensor) -> Callable[[], Any]:
    import openvino as ov

    converted = ov.convert_model(model.vision_encoder.backbone, example_input=pixels)
    compiled = ov.Core().compile_model(converted, "CPU")
    return lambda: compiled(pixels.numpy())


def _onnx_encoder(model: Any, pixels: torch.Tensor, folder: Path) -> Callable[[], Any]:
    import onnxruntime

    path = folder / "sam3_backbone.onnx"
    torch.onnx.export(model.vision_encoder.backbone, (pixels,), str(path), dynamo=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda: session.run(None, {name: pixels.numpy()})


def sam3_section(full: bool, repeats: int, *, backends: bool = True) -> dict[str, Any]:
    from models.sam3_checkpoint import load_sam3
    from tooling.tiny import write_random_sam3_dir

    with tempfile.TemporaryDirectory(prefix="bench-sam3-") as work:
        folder = write_random_sam3_dir(Path(work) / "sam3", {} if full else None)
        model, processor = load_sam3(folder, torch.device("cpu"))
        photo = np.asarray(Image.open(PHOTO).convert("RGB"))
        pixels = processor(images=photo, return_tensors="pt")["pixel_values"]
        text = processor(text="person", return_tensors="pt")
        report: dict[str, Any] = {
            "model": "full-size random weights" if full else "tiny",
            "input": list(pixels.shape[-2:]),
            "photo": f"{PHOTO.name} {photo.shape[1]}x{photo.shape[0]}",
            "torch_threads": torch.get_num_threads(),
        }
        with torch.inference_mode():
            report["features_eager"], features = _timed(
                lambda: model.get_vision_features(pixel_values=pixels), repeats
            )
            report["backbone_eager"], eager = _timed(
                lambda: model.vision_encoder.backbone(pixels), repeats
            )
            report["text_query_on_kept_features_eager"], _ = _timed(
                lambda: model(vision_embeds=features, **text), repeats
            )
        reference = eager.last_hidden_state.numpy()
        converted = (
            ("backbone_openvino", lambda: _openvino_encoder(model, pixels)),
            ("backbone_onnxruntime", lambda: _onnx_encoder(model, pixels, Path(work))),
        )
        for name, build in converted if backends else ():
            try:
                run = build()
                report[name], outputs = _timed(run, repeats)
                error = np.abs(np.asarray(outputs[0]) - reference).max()
                report[name]["max_abs_error_vs_eager"] = float(error)
            except Exception as exc:  # a backend that does not convert is a finding, not a crash
                report[name] = {"converted": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="full-size random-weight SAM 3")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--eager-only", action="store_true", help="skip the conversions (their memory peaks)"
    )
    args = parser.parse_args()
    report = sam3_section(args.full, args.repeats, backends=not args.eager_only)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
