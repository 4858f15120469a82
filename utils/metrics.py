"""The project's Prometheus metrics, served on BentoML's own `/metrics` beside its metrics.

`bentoml serve` runs every process (entry service and runners) with PROMETHEUS_MULTIPROC_DIR
set and answers /metrics with a MultiProcessCollector over that folder, so a metric created
with prometheus_client in any of its processes shows up there. prometheus_client picks its
value store when it is first imported, so it is imported, and the metrics created, on first
use inside a worker, never when `bentoml serve` or `bentoml build` imports the service.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge, Histogram

# Seconds: from a cache lookup (ms) to SD on a CPU (minutes).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class Metrics:
    requests: Counter
    stage_duration: Histogram
    embedding_cache: Counter
    runner_queue: Histogram
    runner_batch_size: Histogram
    breaker_open: Gauge


@cache
def metrics() -> Metrics:
    """The metric objects of this process, created on first use."""
    from prometheus_client import Counter, Gauge, Histogram

    return Metrics(
        requests=Counter(
            "inpaint_requests",
            "Requests to /api/v1 by route and HTTP status (401 and 429 included).",
            ["route", "status"],
        ),
        stage_duration=Histogram(
            "inpaint_stage_duration_seconds",
            "Time one request spent in a stage of its flow (summed when a stage repeats).",
            ["route", "stage"],
            buckets=DURATION_BUCKETS,
        ),
        embedding_cache=Counter(
            "inpaint_embedding_cache",
            "SAM embedding cache lookups by result (hit or miss).",
            ["result"],
        ),
        runner_queue=Histogram(
            "inpaint_runner_queue_seconds",
            "Time a call waited in a model runner between arriving and its model work starting.",
            ["runner", "method"],
            buckets=DURATION_BUCKETS,
        ),
        runner_batch_size=Histogram(
            "inpaint_runner_batch_size",
            "Items per model call in a runner (1 while adaptive batching is off).",
            ["runner", "method"],
            buckets=BATCH_BUCKETS,
        ),
        breaker_open=Gauge(
            "inpaint_redis_breaker_open",
            "1 while a Redis circuit breaker skips Redis after failures (utils/breaker.py).",
            ["breaker"],
            multiprocess_mode="livemax",
        ),
    )


def count_embedding_cache(hit: bool) -> None:
    metrics().embedding_cache.labels(result="hit" if hit else "miss").inc()


def record_breaker(name: str, is_open: bool) -> None:
    metrics().breaker_open.labels(breaker=name).set(1 if is_open else 0)
