"""Benchmarks of the real server, measured side by side in one run and reported as ratios.

    .venv/bin/python scripts/bench.py                              # tiny models (minutes)
    .venv/bin/python scripts/bench.py --full --out bench-results/full.json
        # full-size random-weight SAM vit_b + big-lama: the figures in docs/benchmarks.md

What it measures (sections, `--sections` picks some), every model on the same weights and the
same number of threads (every usable core, as the runners use):

- encoder: the SAM image encoder, eager fp32 vs the default backend (and OpenVINO fp32), and
  the default backend's mask agreement with eager on the example photos;
- decoder: SAM's prompt encoder + mask decoder for one click, eager fp32 vs the default
  backend, and the default's mask agreement with SamPredictor on the example photos;
- lama: LaMa at 1024 px, eager fp32 vs the default backend, and its max error;
- reference: Inpaint-Anything's remove logic for one mask, in this process: load SAM + LaMa,
  embed, predict, dilate, inpaint (segment_anything's SamPredictor, eager fp32);
- server: a `bentoml serve` of this project: cold `/remove` on a new photo, cached `/segment`
  vs bare `SamPredictor.predict`, the HTTP cost of `remove` vs the same flow in-process;
- throughput: concurrent `/segment` clients on new photos with adaptive batching on and off;
- before: the same lone `/remove` and throughput on the settings before issue 9 (1 torch
  thread per runner, eager fp32, no compute lock, no warm-up);
- clicks (not run unless named; scripts/bench_clicks.py): cached `/segment` vs bare predict,
  `/embedding` as bytes vs JSON, a cached click while another photo encodes vs idle;
- routes, http (not run unless named): every route's first and repeated call; `remove` over
  HTTP vs the same flow code in this process;
- batch (not run unless named): photos per minute for 20 photos, one click each: the batch
  command, a one-at-a-time loop, Inpaint-Anything's per-photo logic (scripts/bench_batch.py);
- editor (not run unless named; needs Debian's chromium): hover-preview p50/p95 in headless
  Chromium, fp32 vs uint8 decoder, and uint8's mask IoU vs fp32 (scripts/bench_editor.py);
- sam3 (not run unless named; scripts/bench_sam3.py): SAM 3's image features and one text
  query on kept features, eager vs OpenVINO/ONNX Runtime where the backbone converts;
- unet (not run unless named; ~5 minutes, ~20 GB peak memory): an SD-1.5-size random-weight
  inpainting UNet, one guided step at 512 px: eager fp32 vs OpenVINO fp32 vs bf16, the
  conversion time, and each path's error vs eager (torch fp16, the CUDA default, for scale).

Timings on a shared machine are noisy: compare the ratios, and rerun before trusting a gap.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config.settings import get_settings  # noqa: E402
from scripts.local_server import REPO_ROOT, import_tiny_models, serving  # noqa: E402

EXAMPLES = REPO_ROOT / "examples"
PHOTO = EXAMPLES / "remove" / "dog.jpg"  # 800x534
CLICK = {"point_coords": [[200, 450]]}
PROMPT = {"text_prompt": "a teddy bear on a bench", "num_inference_steps": 10, "seed": 1}
ROUTES: dict[str, dict[str, Any]] = {
    "segment": CLICK,
    "remove": CLICK,
    "fill": {**CLICK, **PROMPT},
    "replace": {**CLICK, **PROMPT},
}


def _variant(photo: np.ndarray, index: int) -> bytes:
    """The photo with one pixel changed: a new image for the embedding cache, same size."""
    pixels = photo.copy()
    pixels[0, index % pixels.shape[1], 0] ^= 1 + index // pixels.shape[1]
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


async def _post(client: httpx.AsyncClient, route: str, image: bytes, request: dict) -> float:
    started = time.perf_counter()
    response = await client.post(
        f"/api/v1/{route}",
        files={"image": ("photo.png", image, "image/png")},
        data={"request": json.dumps(request)},
    )
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"{route}: {response.status_code} {response.text[:300]}")
    return elapsed


BEFORE_SETTINGS = {  # the server as it was before issue 9, for the before/after figures
    "TORCH_THREADS": "1",
    "SAM_BACKEND": "eager",
    "LAMA_BACKEND": "eager",
    "SD_BACKEND": "eager",
    "COMPUTE_LOCK": "false",
    "WARM_UP": "false",
}
SECTIONS = ("encoder", "decoder", "lama", "reference", "server", "throughput", "before")
# every route's latency; HTTP vs in-process remove; the SD UNet's backends; what a click costs;
# scripts/batch.py; a fill as a job vs the synchronous route (scripts/bench_jobs.py; with
# --redis-url also on the Redis store); hover previews in Chromium; SAM 3
EXTRA_SECTIONS = ("routes", "http", "unet", "clicks", "batch", "jobs", "editor", "sam3")


def _summary(seconds: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(seconds) * 1000, 1),
        "min_ms": round(min(seconds) * 1000, 1),
        "runs": len(seconds),
    }


async def route_latencies(url: str, photo: np.ndarray, repeats: int) -> dict[str, Any]:
    """Per route: first call on a new image (encoder runs) vs. a repeat (cache hit)."""
    results: dict[str, Any] = {}
    counter = 1000
    async with httpx.AsyncClient(base_url=url, timeout=3600) as client:
        for route, request in ROUTES.items():
            first, repeat = [], []
            for _ in range(repeats):
                counter += 1
                image = _variant(photo, counter)
                first.append(await _post(client, route, image, request))
                repeat.append(await _post(client, route, image, request))
            results[route] = {"first_call": _summary(first), "repeat_call": _summary(repeat)}
            print(
                f"  {route:8s} first {results[route]['first_call']['median_ms']:>9} ms, "
                f"repeat {results[route]['repeat_call']['median_ms']:>9} ms"
            )
    return results


async def http_vs_in_process(url: str, photo: np.ndarray, repeats: int) -> dict[str, Any]:
    """`remove` over HTTP vs. the same flow in this process, both on a cached embedding."""
    from flows.registry import run_flow
    from service import InpaintAnything

    service = InpaintAnything()  # runners are instantiated locally (bentoml.depends)
    image = _variant(photo, 1)

    async def in_process() -> float:
        started = time.perf_counter()
        response = await run_flow(service.flows, "remove", CLICK, image)
        response.model_dump_json()  # the serialisation BentoML does for HTTP
        return time.perf_counter() - started

    http_times, local_times = [], []
    async with httpx.AsyncClient(base_url=url, timeout=3600) as client:
        await _post(client, "remove", image, CLICK)  # warm both caches and both model copies
        await in_process()
        for _ in range(repeats):
            http_times.append(await _post(client, "remove", image, CLICK))
            local_times.append(await in_process())
    http, local = _summary(http_times), _summary(local_times)
    return {
        "http": http,
        "in_process": local,
        "http_over_in_process": round(http["median_ms"] / local["median_ms"], 3),
        "http_overhead_ms": round(http["median_ms"] - local["median_ms"], 1),
    }


async def throughput(url: str, photo: np.ndarray, concurrency: int, requests: int) -> dict:
    """Concurrent `segment` calls, each on a new image (so each runs the SAM encoder)."""
    images = [_variant(photo, 5000 + i) for i in range(requests)]
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for image in images:
        queue.put_nowait(image)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            await _post(client, "segment", queue.get_nowait(), CLICK)

    async with httpx.AsyncClient(base_url=url, timeout=3600) as client:
        await _post(client, "segment", _variant(photo, 4999), CLICK)  # warm-up
        batches_before, items_before = _embed_batches((await client.get("/metrics")).text)
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        batches_after, items_after = _embed_batches((await client.get("/metrics")).text)
    batches = batches_after - batches_before
    return {
        "requests": requests,
        "concurrency": concurrency,
        "seconds": round(elapsed, 2),
        "requests_per_s": round(requests / elapsed, 3),
        "encoder_batches": batches,
        "mean_batch_size": round((items_after - items_before) / batches, 2) if batches else None,
    }


def _embed_batches(metrics: str) -> tuple[float, float]:
    """(batches run, items in them) so far by SAM's embed API, from BentoML's histogram."""
    totals = {"_count": 0.0, "_sum": 0.0}
    for line in metrics.splitlines():
        for suffix in totals:
            if line.startswith(f"bentoml_service_adaptive_batch_size{suffix}{{") and (
                'method_name="embed"' in line
            ):
                totals[suffix] += float(line.rsplit(" ", 1)[1])
    return totals["_count"], totals["_sum"]


def _prepare_store(home: Path, full: bool) -> dict[str, str]:
    """Tiny models, plus full-size random-weight SAM vit_b and big-lama when `full`; returns
    the settings that select them. BENTOML_HOME must already name `home`."""
    import_tiny_models(home)
    if not full:
        return {}
    from omegaconf import OmegaConf

    from models.lama_checkpoint import PACKAGED_BIG_LAMA_CONFIG
    from models.lama_network import build_generator
    from models.sam_checkpoint import SAM_ARCHITECTURES
    from tooling.model_import import import_lama, import_sam
    from tooling.tiny import random_generator_state, write_lama_dir, write_random_sam_checkpoint

    checkpoint = write_random_sam_checkpoint(home / "sam_vit_b.pth", SAM_ARCHITECTURES["vit_b"])
    sam = import_sam(checkpoint, "vit_b", "sam-vit_b-random", demo=True)
    config = OmegaConf.load(PACKAGED_BIG_LAMA_CONFIG)
    generator_config = OmegaConf.to_container(config.generator, resolve=True)
    assert isinstance(generator_config, dict)
    with torch_device("meta"):
        model = build_generator({str(k): v for k, v in generator_config.items()})
    lama_dir = write_lama_dir(home / "big-lama", config, random_generator_state(model, 0))
    lama = import_lama(lama_dir, "big-lama-random", demo=True)
    return {"SAM_MODEL": sam, "LAMA_MODEL": lama}


def torch_device(name: str) -> Any:
    import torch

    return torch.device(name)


def _store_entry(tag: str) -> tuple[Path, dict[str, Any]]:
    import bentoml

    stored = bentoml.models.get(tag)
    return Path(stored.path), dict(stored.info.metadata)


def _load_sam(tag: str) -> tuple[Any, Path]:
    from models.sam_checkpoint import SamArchitecture, load_sam

    path, metadata = _store_entry(tag)
    architecture = SamArchitecture.from_metadata(metadata["architecture"])
    return load_sam(path / metadata["checkpoint_file"], architecture, "cpu"), path


def _clock(run: Callable[[], Any]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def _side_by_side(runs: dict[str, Callable[[], Any]], repeats: int) -> dict[str, Any]:
    """One untimed call each, then `repeats` rounds of one call each, interleaved."""
    for run in runs.values():
        run()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            seconds[name].append(_clock(run))
    return {name: _summary(values) for name, values in seconds.items()}


def encoder_section(sam_tag: str, repeats: int, cases: int) -> dict[str, Any]:
    """SAM image encoder: eager fp32 vs the default backend vs OpenVINO fp32."""
    import torch

    from models.backends import BackendChoice, accelerate
    from models.sam_agreement import example_cases, mask_agreement
    from runners.fast_paths import fast_forward, store_key
    from runners.runtime import compiled_models_dir

    sam, path = _load_sam(sam_tag)
    threads = torch.get_num_threads()
    example = torch.zeros(1, 3, 1024, 1024)
    started = time.perf_counter()
    default, details = fast_forward(
        "sam",
        sam.image_encoder,
        example,
        path=path,
        device=torch_device("cpu"),
        threads=threads,
        dynamic=[0],
    )
    details["prepare_s"] = round(time.perf_counter() - started, 1)
    fp32, _ = accelerate(
        sam.image_encoder,
        example,
        choice=BackendChoice("openvino", "fp32", "bench"),
        cache_root=compiled_models_dir(get_settings()),
        tag=f"sam-{store_key(path)}",
        threads=threads,
        dynamic=[0],
    )
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        timings = _side_by_side(
            {
                "eager_fp32": lambda: sam.image_encoder(x),
                "default": lambda: default(x),
                "openvino_fp32": lambda: fp32(x),
            },
            repeats,
        )
        reference = sam.image_encoder(x)
        error = (default(x) - reference).abs().max() / reference.abs().max()
    ious = mask_agreement(sam, default, example_cases(limit=cases))
    flat = [iou for values in ious.values() for iou in values]
    eager_ms = timings["eager_fp32"]["median_ms"]
    return {
        "threads": threads,
        "default_backend": details,
        **timings,
        "default_speedup": round(eager_ms / timings["default"]["median_ms"], 2),
        "openvino_fp32_speedup": round(eager_ms / timings["openvino_fp32"]["median_ms"], 2),
        "default_embedding_rel_max_error": round(float(error), 5),
        "default_mask_iou_vs_eager": {
            "mean": round(float(np.mean(flat)), 5),
            "min": round(float(np.min(flat)), 5),
            "per_case": {case: [round(v, 5) for v in values] for case, values in ious.items()},
        },
    }


def decoder_section(sam_tag: str, repeats: int, cases: int) -> dict[str, Any]:
    """SAM prompt encoder + mask decoder for one click: eager fp32 vs the default backend."""
    import torch

    from models.sam_agreement import decoder_agreement, example_cases
    from models.sam_prompt_decoder import PromptDecoder, prompt_points
    from runners.fast_paths import sam_decoder

    sam, path = _load_sam(sam_tag)
    default, details = sam_decoder(sam, path, torch_device("cpu"), torch.get_num_threads())
    eager = PromptDecoder(sam).eval()
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(1, 256, 64, 64, generator=generator)
    coords, labels = prompt_points([[300.0, 500.0]], None, None)
    inputs = (features, torch.from_numpy(coords), torch.from_numpy(labels))
    with torch.inference_mode():
        timings = _side_by_side(
            {"eager_fp32": lambda: eager(*inputs), "default": lambda: default(*inputs)},
            max(repeats, 10),
        )
        error = (default(*inputs)[0] - eager(*inputs)[0]).abs().max()
    flat = [
        iou
        for ious in decoder_agreement(sam, default, example_cases(limit=cases)).values()
        for iou in ious
    ]
    return {
        "default_backend": details,
        **timings,
        "default_speedup": round(
            timings["eager_fp32"]["median_ms"] / timings["default"]["median_ms"], 2
        ),
        "default_logits_max_abs_error": float(error),
        "default_mask_iou_vs_eager": {
            "mean": round(float(np.mean(flat)), 5),
            "min": round(float(np.min(flat)), 5),
        },
    }


def lama_section(lama_tag: str, repeats: int, size: int) -> dict[str, Any]:
    """LaMa's generator at `size` px: eager fp32 vs the default backend."""
    import torch

    from models.lama_checkpoint import load_generator
    from models.store import LAMA_FOLDER
    from runners.fast_paths import fast_forward

    path, _ = _store_entry(lama_tag)
    generator = load_generator(path / LAMA_FOLDER, "cpu")
    started = time.perf_counter()
    default, details = fast_forward(
        "lama",
        generator,
        torch.rand(1, 4, 256, 256),
        path=path,
        device=torch_device("cpu"),
        threads=torch.get_num_threads(),
        dynamic=[0, 2, 3],
    )
    details["prepare_s"] = round(time.perf_counter() - started, 1)
    rng = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, size, size, generator=rng)
    mask = torch.zeros(1, 1, size, size)
    mask[..., size // 4 : size // 2, size // 3 : 2 * size // 3] = 1
    x = torch.cat([image * (1 - mask), mask], dim=1)
    with torch.inference_mode():
        timings = _side_by_side(
            {"eager_fp32": lambda: generator(x), "default": lambda: default(x)}, repeats
        )
        error = (default(x) - generator(x)).abs().max()
    return {
        "size": size,
        "default_backend": details,
        **timings,
        "default_speedup": round(
            timings["eager_fp32"]["median_ms"] / timings["default"]["median_ms"], 2
        ),
        "default_max_error": round(float(error), 5),
        "default_max_error_in_levels": round(float(error) * 255, 2),
    }


def _relative_error(output: Any, reference: Any) -> dict[str, float]:
    """RMS of the difference over RMS of the reference, and the largest difference."""
    difference = (output.float() - reference).flatten()
    return {
        "relative_rms": float(f"{float(difference.norm() / reference.norm()):.3g}"),
        "max_abs": float(f"{float(difference.abs().max()):.3g}"),
    }


def _denoise(forward: Callable[..., Any], config: dict[str, Any], steps: int) -> Any:
    """`steps` DDIM steps of an inpainting loop at guidance 7.5 (what the pipeline does with
    the UNet), from fixed random latents, mask, masked-image latents and text embeddings."""
    import torch
    from diffusers import DDIMScheduler

    rng = torch.Generator().manual_seed(2)
    size = config["sample_size"]
    latents = torch.randn(1, 4, size, size, generator=rng)
    mask = torch.zeros(2, 1, size, size)
    mask[..., size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    masked = torch.randn(1, 4, size, size, generator=rng).expand(2, -1, -1, -1)
    text = torch.randn(2, 77, config["cross_attention_dim"], generator=rng)
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
        clip_sample=False, set_alpha_to_one=False,
    )  # fmt: skip
    scheduler.set_timesteps(steps)
    for timestep in scheduler.timesteps:
        sample = scheduler.scale_model_input(torch.cat([latents] * 2), timestep)
        noise = forward(torch.cat([sample, mask, masked], dim=1), timestep, text)
        unconditional, conditional = noise.chunk(2)
        noise = unconditional + 7.5 * (conditional - unconditional)
        latents = scheduler.step(noise, timestep, latents).prev_sample
    return latents


def unet_section(repeats: int, steps: int, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The SD UNet (random weights), one guided step (batch 2) at its native size: eager fp32
    vs OpenVINO fp32 vs OpenVINO bf16 (where the CPU has it), the conversion time, each
    path's error vs eager for that step and after `steps` DDIM steps; torch fp16 (the CUDA
    default) on the same step as the yardstick for bf16."""
    import copy

    import torch
    from diffusers import UNet2DConditionModel

    from models.backends import BackendChoice, accelerate, host_has_bf16
    from models.sd_unet import SD15_INPAINTING_UNET, UNetCore, compiled_forward, example_inputs
    from runners.runtime import process_memory_mb

    config = config or SD15_INPAINTING_UNET
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**config).eval()
    rng = torch.Generator().manual_seed(1)
    size = config["sample_size"]
    step = (
        torch.randn(2, config["in_channels"], size, size, generator=rng),
        torch.tensor(500),
        torch.randn(2, 77, config["cross_attention_dim"], generator=rng),
    )
    report: dict[str, Any] = {
        "parameters_m": round(sum(p.numel() for p in unet.parameters()) / 1e6)
    }
    with torch.inference_mode():
        reference = unet(*step, return_dict=False)[0]
        half = copy.deepcopy(unet).half()
        started = time.perf_counter()
        fp16 = half(step[0].half(), step[1], step[2].half(), return_dict=False)[0]
        report["torch_fp16_s"] = round(time.perf_counter() - started, 1)
        del half
    gc.collect()
    report["memory_mb"] = {"eager": process_memory_mb()}
    example = example_inputs(unet, text_length=77)
    cache = Path(tempfile.mkdtemp(prefix="bench-unet-"))
    paths: dict[str, Callable[..., Any]] = {"eager_fp32": unet}
    precisions = ("fp32", "bf16") if host_has_bf16() else ("fp32",)
    for precision in precisions:
        started = time.perf_counter()
        run, details = accelerate(
            UNetCore(unet, ()).eval(),
            example,
            choice=BackendChoice("openvino", precision, "bench"),
            cache_root=cache,
            tag="sd15-inpainting-unet",
            threads=torch.get_num_threads(),
            dynamic=tuple([0] for _ in example),
        )
        assert details["backend"] == "openvino", details
        # The first includes the conversion to IR (once per model); the second compiles only.
        report[f"prepare_openvino_{precision}_s"] = round(time.perf_counter() - started, 1)
        gc.collect()
        report["memory_mb"][f"with_openvino_{precision}"] = process_memory_mb()
        paths[f"openvino_{precision}"] = compiled_forward(unet, run, example)

    def noise(forward: Callable[..., Any]) -> Callable[..., Any]:
        return lambda *inputs: forward(*inputs, return_dict=False)[0]

    with torch.inference_mode():
        timings = _side_by_side(
            {name: partial(noise(f), *step) for name, f in paths.items()}, repeats
        )
        errors = {name: _relative_error(noise(f)(*step), reference) for name, f in paths.items()}
        errors["torch_fp16"] = _relative_error(fp16, reference)
        final = {name: _denoise(noise(f), config, steps) for name, f in paths.items()}
    eager_ms = timings["eager_fp32"]["median_ms"]
    return {
        **report,
        "batch": 2,
        "size_px": size * 8,
        **timings,
        "speedup_vs_eager": {
            name: round(eager_ms / timing["median_ms"], 2) for name, timing in timings.items()
        },
        "one_step_error_vs_eager": errors,
        f"latents_after_{steps}_steps_error_vs_eager": {
            name: _relative_error(latents, final["eager_fp32"]) for name, latents in final.items()
        },
    }


def reference_remove(sam_tag: str, lama_tag: str, photo: np.ndarray, repeats: int) -> dict:
    """Inpaint-Anything's remove for one mask, in this process: load both models, embed,
    predict, dilate, LaMa on the whole photo (its own steps, on the same weights)."""
    import torch
    from segment_anything import SamPredictor, sam_model_registry

    from models.lama_checkpoint import load_generator
    from models.lama_inference import inpaint
    from models.store import LAMA_FOLDER
    from utils.masks import dilate_mask

    sam_path, metadata = _store_entry(sam_tag)
    lama_path, _ = _store_entry(lama_tag)
    model_type = metadata["architecture"]["name"]
    click = np.asarray(CLICK["point_coords"], dtype=np.float64)
    steps: dict[str, list[float]] = {"load": [], "embed": [], "predict": [], "lama": []}
    totals = []
    for _ in range(repeats):
        started = time.perf_counter()
        if model_type in sam_model_registry:
            checkpoint = str(sam_path / metadata["checkpoint_file"])
            sam = sam_model_registry[model_type](checkpoint=checkpoint)
        else:  # the tiny test model: not an official architecture
            sam, _ = _load_sam(sam_tag)
        predictor = SamPredictor(sam.eval())
        generator = load_generator(lama_path / LAMA_FOLDER, "cpu")
        loaded = time.perf_counter()
        with torch.inference_mode():
            predictor.set_image(photo)
        embedded = time.perf_counter()
        masks, _, _ = predictor.predict(click, np.array([1]), multimask_output=True)
        predicted = time.perf_counter()
        mask = dilate_mask(masks[0], 15).astype(np.uint8) * 255
        inpaint(generator, photo, mask, "cpu")
        finished = time.perf_counter()
        for name, (a, b) in {
            "load": (started, loaded),
            "embed": (loaded, embedded),
            "predict": (embedded, predicted),
            "lama": (predicted, finished),
        }.items():
            steps[name].append(b - a)
        totals.append(finished - started)
        del sam, predictor, generator
    return {
        "total": _summary(totals),
        "steps_median_ms": {k: round(statistics.median(v) * 1000, 1) for k, v in steps.items()},
    }


async def cached_segment_vs_predict(
    client: httpx.AsyncClient, photo: np.ndarray, image: bytes, sam_tag: str, rounds: int
) -> tuple[list[float], list[float]]:
    """Seconds of `/segment` on `image` once its embedding is cached, and of a bare
    `SamPredictor.predict` of the same click on the same weights and threads; alternated, the
    server idle while predict runs."""
    from segment_anything import SamPredictor

    await _post(client, "segment", image, CLICK)  # the embedding is now cached
    sam, _ = _load_sam(sam_tag)
    predictor = SamPredictor(sam)
    predictor.set_image(photo)
    click = np.asarray(CLICK["point_coords"], dtype=np.float64)

    def predict() -> None:
        predictor.predict(click, np.array([1]), multimask_output=True)

    predict()
    segment, bare = [], []
    for _ in range(rounds):
        segment.append(await _post(client, "segment", image, CLICK))
        bare.append(_clock(predict))
    return segment, bare


async def server_section(url: str, photo: np.ndarray, sam_tag: str, repeats: int) -> dict:
    """Cold `/remove` on new photos, and cached `/segment` vs bare `SamPredictor.predict`."""
    cold = []
    async with httpx.AsyncClient(base_url=url, timeout=3600) as client:
        for index in range(repeats):
            cold.append(await _post(client, "remove", _variant(photo, 7000 + index), CLICK))
        segment, bare = await cached_segment_vs_predict(
            client, photo, _variant(photo, 7999), sam_tag, max(repeats, 5)
        )
    ready = httpx.get(f"{url}/api/v1/ready", timeout=30).json()
    return {
        "cold_remove": _summary(cold),
        "cached_segment": _summary(segment),
        "bare_predict": _summary(bare),
        "ready": ready,
    }


async def lone_remove(url: str, photo: np.ndarray, repeats: int) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=3600) as client:
        cold = [
            await _post(client, "remove", _variant(photo, 8000 + i), CLICK) for i in range(repeats)
        ]
    return _summary(cold)


def run_jobs_section(
    record: Callable[[str, Callable[[], Any]], None],
    home: Path,
    work: Path,
    settings: dict[str, str],
    photo: np.ndarray,
    repeats: int,
    redis_url: str,
) -> None:
    from scripts.bench_jobs import jobs_section

    image = _variant(photo, 7)
    stores = {"memory": settings}
    if redis_url:
        stores["redis"] = {**settings, "REDIS_URL": redis_url}
    for store, env in stores.items():
        with serving(home, work / f"serve-jobs-{store}.log", env, timeout_s=3600) as server:
            record(f"jobs_{store}", lambda: asyncio.run(jobs_section(server.url, image, repeats)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="full-size SAM vit_b + big-lama")
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"of {SECTIONS + EXTRA_SECTIONS}"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--agreement-cases", type=int, default=6)
    parser.add_argument("--lama-size", type=int, default=1024)
    parser.add_argument("--unet-steps", type=int, default=5, help="DDIM steps for agreement")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--redis-url", default="", help="jobs section: also on this Redis")
    args = parser.parse_args()
    sections = set(args.sections.split(","))

    work = Path(tempfile.mkdtemp(prefix="inpaint-bench-"))
    home = work / "bentoml"
    # The in-process sections read the same store (and converted-model cache) as the server.
    os.environ["BENTOML_HOME"] = str(home)
    # Long queues of slow requests (the "before" settings, 8 clients) must not time out.
    settings = {**_prepare_store(home, args.full), "PROCESSING_TIMEOUT_S": "3600"}
    os.environ.update(settings)
    import torch

    from models.backends import cpu_report, openvino_version, usable_cores
    from models.store import resolve_tags

    get_settings.cache_clear()
    tags = resolve_tags(get_settings())
    torch.set_num_threads(usable_cores())
    photo = np.asarray(Image.open(PHOTO).convert("RGB"))
    report: dict[str, Any] = {
        "models": {"sam": tags["sam"], "lama": tags["lama"]},
        "photo": f"{PHOTO.name} {photo.shape[1]}x{photo.shape[0]}",
        "host": cpu_report(),
        "torch_threads": torch.get_num_threads(),
        "openvino": openvino_version(),
    }

    def record(name: str, run: Callable[[], Any]) -> None:
        print(f"{name} ...", flush=True)
        started = time.perf_counter()
        report[name] = run()
        print(f"  {name} done in {time.perf_counter() - started:.0f} s: {report[name]}", flush=True)

    # In-process first: they also convert the models once, so the servers start from the cache.
    if "encoder" in sections:
        record("encoder", lambda: encoder_section(tags["sam"], args.repeats, args.agreement_cases))
    if "decoder" in sections:
        record("decoder", lambda: decoder_section(tags["sam"], args.repeats, args.agreement_cases))
    if "lama" in sections:
        record("lama", lambda: lama_section(tags["lama"], args.repeats, args.lama_size))
    if "unet" in sections:
        record("unet", lambda: unet_section(args.repeats, args.unet_steps))
    if "sam3" in sections:
        from scripts.bench_sam3 import sam3_section

        record("sam3", lambda: sam3_section(args.full, args.repeats))
    if "reference" in sections:
        record("reference", lambda: reference_remove(tags["sam"], tags["lama"], photo, 2))
    serve = {"timeout_s": 3600}
    if sections & {"server", "throughput", "routes", "http", "clicks", "batch", "editor"}:
        with serving(home, work / "serve.log", settings, **serve) as server:
            if "editor" in sections:
                from scripts.bench_editor import editor_section

                sam = _load_sam(tags["sam"])[0]
                record("editor", lambda: editor_section(server.url, sam, args.agreement_cases))
            if "routes" in sections:
                record(
                    "routes",
                    lambda: asyncio.run(route_latencies(server.url, photo, args.repeats)),
                )
            if "http" in sections:
                record(
                    "http_vs_in_process",
                    lambda: asyncio.run(http_vs_in_process(server.url, photo, args.repeats)),
                )
            if "server" in sections:
                record(
                    "server",
                    lambda: asyncio.run(
                        server_section(server.url, photo, tags["sam"], args.repeats)
                    ),
                )
            if "clicks" in sections:
                from scripts.bench_clicks import clicks_section

                record(
                    "clicks",
                    lambda: asyncio.run(
                        clicks_section(server.url, photo, tags["sam"], args.repeats)
                    ),
                )
            if "batch" in sections:  # photos per minute over a folder (scripts/bench_batch.py)
                from scripts.bench_batch import batch_section

                per_photo = partial(reference_remove, tags["sam"], tags["lama"], photo, 2)
                record("batch", lambda: batch_section(server.url, photo, _variant, per_photo))
            if "throughput" in sections:
                record(
                    "throughput_no_batching",
                    lambda: asyncio.run(
                        throughput(server.url, photo, args.concurrency, args.requests)
                    ),
                )
    if "jobs" in sections:
        run_jobs_section(record, home, work, settings, photo, args.repeats, args.redis_url)
    if "throughput" in sections:
        batched = {**settings, "SAM_MAX_BATCH_SIZE": "4"}
        with serving(home, work / "serve-batching.log", batched, **serve) as server:
            record(
                "throughput_batching",
                lambda: asyncio.run(throughput(server.url, photo, args.concurrency, args.requests)),
            )
    if "before" in sections:
        before = {**settings, **BEFORE_SETTINGS}
        with serving(home, work / "serve-before.log", before, **serve) as server:
            record("before_cold_remove", lambda: asyncio.run(lone_remove(server.url, photo, 2)))
            record(
                "before_throughput_no_batching",
                lambda: asyncio.run(throughput(server.url, photo, args.concurrency, args.requests)),
            )
    report["ratios"] = _ratios(report)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


def _ratios(report: dict[str, Any]) -> dict[str, float]:
    """The done-when figures of issue 9, from whatever sections ran."""
    ratios: dict[str, float] = {}

    def value(path: str) -> float | None:
        """`a.b` = report["a"]["b"]; a timing summary stands for its median."""
        node: Any = report
        for key in path.split("."):
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return float(node["median_ms"] if isinstance(node, dict) else node)

    pairs = {
        "cold_remove_over_reference": ("server.cold_remove", "reference.total"),
        "cached_segment_over_bare_predict": ("server.cached_segment", "server.bare_predict"),
        "encoder_eager_over_default": ("encoder.eager_fp32", "encoder.default"),
        "lama_eager_over_default": ("lama.eager_fp32", "lama.default"),
        "unet_eager_over_openvino_fp32": ("unet.eager_fp32", "unet.openvino_fp32"),
        "unet_eager_over_openvino_bf16": ("unet.eager_fp32", "unet.openvino_bf16"),
        "cold_remove_before_over_after": ("before_cold_remove", "server.cold_remove"),
        "throughput_after_over_before": (
            "throughput_no_batching.requests_per_s",
            "before_throughput_no_batching.requests_per_s",
        ),
        "batching_on_over_off": (
            "throughput_batching.requests_per_s",
            "throughput_no_batching.requests_per_s",
        ),
    }
    for name, (top, bottom) in pairs.items():
        a, b = value(top), value(bottom)
        if a is not None and b:
            ratios[name] = round(a / b, 3)
    return ratios


if __name__ == "__main__":
    sys.exit(main())
