"""The editor's section of scripts/bench.py (`--sections editor`).

- decoder variants: the browser's decoder ONNX in fp32 and quantized to uint8 (as served at
  `/api/v1/sam-decoder.onnx?precision=uint8`), run with onnxruntime on the SAM embedding of
  each example photo with its published clicks: file sizes, decode time here, and the uint8
  masks' IoU against fp32's (the 3 candidates per case);
- hover preview: the editor page in headless Chromium (Debian's chromium) against a running
  server, the mouse kept moving over the photo (every 0.1 s); the page's own
  `performance.measure('hover-preview')` entries (pointer event to mask drawn) as p50/p95,
  for each decoder variant, with every core the browser reports and with one thread; and the
  default once more with a move every 0.4 s, so that no preview waits for another's decode.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

PHOTO = Path(__file__).resolve().parent.parent / "examples" / "remove" / "dog.jpg"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]


def _quantiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {"n": 0}

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 1)

    return {"n": len(ordered), "p50_ms": at(0.5), "p95_ms": at(0.95), "max_ms": at(1.0)}


def _decode(session: Any, embedding: np.ndarray, coords: np.ndarray, labels: np.ndarray, size):
    """SamOnnxModel's inputs as the page builds them (a padding point, no mask input)."""
    points = np.vstack([coords, [[0.0, 0.0]]]).astype(np.float32)[None]
    codes = np.asarray([*labels, -1], dtype=np.float32)[None]
    masks, scores, _ = session.run(
        None,
        {
            "image_embeddings": embedding,
            "point_coords": points,
            "point_labels": codes,
            "mask_input": np.zeros((1, 1, 256, 256), np.float32),
            "has_mask_input": np.zeros(1, np.float32),
            "orig_im_size": np.asarray(size, np.float32),
        },
    )
    return masks[0, 1:] > 0.0, scores[0, 1:]


def decoder_variants(sam: Any, cases: int, repeats: int = 5) -> dict[str, Any]:
    """fp32 vs uint8 decoder ONNX of `sam` on the example photos (SamPredictor's embedding)."""
    import onnxruntime
    import torch
    from segment_anything import SamPredictor

    from api.decoder import quantize_decoder
    from models.sam_agreement import example_cases, mask_iou
    from runners.sam_onnx import export_decoder

    files = {"fp32": export_decoder(sam)}
    started = time.perf_counter()
    files["uint8"] = quantize_decoder(files["fp32"])
    quantize_s = time.perf_counter() - started
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # the browser's fallback; threads are the hover figures
    sessions = {
        name: onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        for name, data in files.items()
    }
    predictor = SamPredictor(sam)
    ious: dict[str, list[float]] = {}
    seconds: dict[str, list[float]] = {name: [] for name in sessions}
    for case in example_cases(limit=cases):
        with torch.inference_mode():
            predictor.set_image(case.image)
        embedding = predictor.features.float().numpy()
        coords = predictor.transform.apply_coords(case.point_coords, case.image.shape[:2])
        size = case.image.shape[:2]
        masks = {}
        for name, session in sessions.items():
            masks[name], _ = _decode(session, embedding, coords, case.point_labels, size)
            for _ in range(repeats):
                begun = time.perf_counter()
                _decode(session, embedding, coords, case.point_labels, size)
                seconds[name].append((time.perf_counter() - begun) * 1000)
        ious[case.name] = [
            round(mask_iou(a, b), 5) for a, b in zip(masks["fp32"], masks["uint8"], strict=True)
        ]
    flat = [v for values in ious.values() for v in values]
    return {
        "bytes": {name: len(data) for name, data in files.items()},
        "quantize_s": round(quantize_s, 1),
        "onnxruntime_1_thread_decode": {name: _quantiles(v) for name, v in seconds.items()},
        "uint8_mask_iou_vs_fp32": {
            "mean": round(float(np.mean(flat)), 5),
            "min": round(float(np.min(flat)), 5),
            "per_case": ious,
        },
    }


def hover_preview(
    url: str, query: str, previews: int = 12, pace_s: float = 0.1, timeout_s: float = 240
) -> dict[str, Any]:
    """The page's hover-preview measures while the mouse keeps moving (one move every
    `pace_s`, so moves during a decode collapse), until `previews` were drawn."""
    from playwright.sync_api import sync_playwright

    chromium = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
    count = "performance.getEntriesByName('hover-preview').length"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{url}/{query}")
            page.set_input_files("[data-testid=open-image]", PHOTO)
            page.wait_for_selector(
                "body[data-state=ready], body[data-state=error]", state="attached", timeout=300_000
            )
            stats = page.evaluate("editorStats()")
            if stats["mode"] != "browser":
                return {"error": page.inner_text("#decoder-note") or "no browser decoder"}
            box = page.locator("[data-testid=stage]").bounding_box()
            assert box is not None
            moves = 0
            deadline = time.monotonic() + timeout_s
            while page.evaluate(count) < previews and time.monotonic() < deadline:
                t = (moves % 40) / 39  # sweeps across the dog and back
                x = box["x"] + box["width"] * (0.15 + 0.5 * abs(2 * t - 1))
                y = box["y"] + box["height"] * (0.55 + 0.2 * t)
                page.mouse.move(x, y)
                moves += 1
                time.sleep(pace_s)
            measures = page.evaluate(
                "performance.getEntriesByName('hover-preview').map((e) => e.duration)"
            )
            stats = page.evaluate("editorStats()")
        finally:
            browser.close()
    return {
        "variant": stats["variant"],
        "threads": stats["threads"],
        "webgpu_in_browser": stats["webgpu"],
        "moves": moves,
        "hover_preview": _quantiles(measures),
        "decode": _quantiles(stats["decodeMs"]),
    }


def editor_section(url: str, sam: Any, cases: int) -> dict[str, Any]:
    """Hover previews (fp32 / uint8, all cores / one thread) on the page at `url`, then the
    decoder variants' agreement on `sam`."""
    hover = {
        f"{variant}_{threads}": hover_preview(
            url, f"?decoder={variant}" + ("&threads=1" if threads == "1_thread" else "")
        )
        for variant in ("fp32", "uint8")
        for threads in ("all_threads", "1_thread")
    }
    # A move every 0.4 s: each preview starts on an idle decoder, so no waiting is measured.
    hover["fp32_all_threads_paced"] = hover_preview(url, "?decoder=fp32", pace_s=0.4)
    return {"hover": hover, "decoder_variants": decoder_variants(sam, cases)}
