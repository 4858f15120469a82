"""Soak test: many sequential `remove` calls against a real server, memory per process sampled.

    .venv/bin/python scripts/soak.py                         # own server, tiny models
    .venv/bin/python scripts/soak.py --requests 300 --out soak.json
    .venv/bin/python scripts/soak.py --url http://127.0.0.1:8000 --pid <bentoml serve pid>

Without --url it starts `bentoml serve` of this project on the tiny models in a temporary model
store. It cycles through the example photos (one click each), first once to warm the caches,
then for --requests calls, and samples the resident memory (RSS) of every process of the
server (the `bentoml serve` arbiter, the entry service, each runner) every --every calls,
with psutil over the server's process tree: RSS and its anonymous part (see `memory_mb`). The
report (JSON) gives the samples and, per process, the value after warm-up, the last, the peak
and the growth (last minus after warm-up). Not part of
CI: it takes minutes; see docs/soak.md for a run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.local_server import REPO_ROOT, import_tiny_models, serving  # noqa: E402

CASES = REPO_ROOT / "examples" / "cases.json"


def _remove_cases() -> list[tuple[Path, dict[str, Any]]]:
    cases = json.loads(CASES.read_text())["cases"]
    return [
        (REPO_ROOT / "examples" / c["image"], {"point_coords": c["point_coords"]})
        for c in cases
        if c["task"] == "remove"
    ]


def _process_name(process: psutil.Process) -> str:
    args = process.cmdline()
    if "--service-name" in args:
        return args[args.index("--service-name") + 1]
    return "arbiter" if "serve" in args else f"pid {process.pid}"


def server_processes(pid: int) -> dict[str, psutil.Process]:
    """The `bentoml serve` process and its descendants, by service name."""
    root = psutil.Process(pid)
    return {_process_name(p): p for p in [root, *root.children(recursive=True)]}


def memory_mb(processes: dict[str, psutil.Process]) -> dict[str, dict[str, float]]:
    """RSS, and its anonymous part (RSS minus file-backed and shared pages) per process.

    A leak grows the anonymous part. RSS alone also moves when the kernel drops clean pages of
    mapped libraries (torch's are hundreds of MB) under memory pressure from other processes.
    """
    sizes = {}
    for name, process in processes.items():
        try:
            info = process.memory_info()
            rss, anon = info.rss / 2**20, (info.rss - info.shared) / 2**20
            sizes[name] = {"rss": round(rss, 1), "anon": round(anon, 1)}
        except psutil.NoSuchProcess:  # a restarted worker: a finding in itself
            sizes[name] = {"rss": float("nan"), "anon": float("nan")}
    return sizes


@contextmanager
def _server(
    url: str | None, pid: int | None, settings: dict[str, str]
) -> Iterator[tuple[str, int]]:
    if url:
        if pid is None:
            raise SystemExit("--url needs --pid (the `bentoml serve` process) to sample memory")
        yield url, pid
        return
    with tempfile.TemporaryDirectory(prefix="inpaint-soak-") as tmp:
        home = Path(tmp) / "bentoml"
        home.mkdir()
        print("importing the tiny models ...", file=sys.stderr)
        import_tiny_models(home)
        print("starting bentoml serve ...", file=sys.stderr)
        with serving(home, Path(tmp) / "serve.log", settings) as server:
            assert server.pid is not None
            yield server.url, server.pid


def soak(url: str, pid: int, requests: int, every: int) -> dict[str, Any]:
    cases = _remove_cases()
    uploads = [(path.read_bytes(), json.dumps(request)) for path, request in cases]
    processes = server_processes(pid)
    samples: list[dict[str, Any]] = []
    statuses: dict[int, int] = {}
    latencies_ms: list[float] = []
    started = time.monotonic()

    def sample(done: int, phase: str) -> None:
        samples.append(
            {
                "requests": done,
                "phase": phase,
                "elapsed_s": round(time.monotonic() - started, 1),
                "memory_mb": memory_mb(processes),
            }
        )

    with httpx.Client(base_url=url, timeout=600) as client:

        def remove(index: int) -> None:
            image, request = uploads[index % len(uploads)]
            begin = time.perf_counter()
            response = client.post(
                "/api/v1/remove",
                files={"image": ("photo.jpg", image, "image/jpeg")},
                data={"request": request},
            )
            latencies_ms.append((time.perf_counter() - begin) * 1000)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        sample(0, "start")
        for index in range(len(uploads)):  # warm-up: every photo once (encoder, caches)
            remove(index)
        sample(0, "warm")
        latencies_ms.clear()
        statuses.clear()
        for done in range(1, requests + 1):
            remove(done - 1)
            if done % every == 0 or done == requests:
                sample(done, "soak")

    warm, last = samples[1]["memory_mb"], samples[-1]["memory_mb"]

    def per_process(kind: str) -> dict[str, dict[str, float]]:
        return {
            name: {
                "after_warmup": warm[name][kind],
                "last": last[name][kind],
                "peak": max(s["memory_mb"][name][kind] for s in samples[1:]),
                "growth": round(last[name][kind] - warm[name][kind], 1),
            }
            for name in warm
        }

    ordered = sorted(latencies_ms)
    return {
        "url": url,
        "requests": requests,
        "photos": [path.name for path, _ in cases],
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "latency_ms": {
            "p50": round(statistics.median(ordered), 1),
            "p95": round(ordered[int(0.95 * (len(ordered) - 1))], 1),
        },
        "anon_mb": per_process("anon"),
        "rss_mb": per_process("rss"),
        "samples": samples,
        "duration_s": round(time.monotonic() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--every", type=int, default=10, help="sample memory every N requests")
    parser.add_argument("--url", help="an already running server (default: start one)")
    parser.add_argument("--pid", type=int, help="with --url: the `bentoml serve` process id")
    parser.add_argument("--torch-threads", default="1", help="TORCH_THREADS of an own server")
    parser.add_argument("--out", type=Path, help="write the JSON report here too")
    args = parser.parse_args(argv)
    settings = {"TORCH_THREADS": args.torch_threads}
    with _server(args.url, args.pid, settings) as (url, pid):
        report = soak(url, pid, args.requests, max(1, args.every))
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    bad = {k: v for k, v in report["statuses"].items() if k != "200"}
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
