"""What every model runner shares: its BentoML config, device, threads and load state.

Imports torch lazily: the entry service imports the runner classes (for `bentoml.depends`)
but never runs a model, so it must not pay for torch.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import psutil
from bentoml.exceptions import ServiceUnavailable

from config.settings import Settings, get_settings
from models.store import host_has_gpu
from utils.log_setup import configure_logging

if TYPE_CHECKING:
    import torch

logger = logging.getLogger("inpaint.runners")
T = TypeVar("T")


def expired(deadline: float | None) -> bool:
    """Whether a caller's absolute deadline (epoch seconds) has passed."""
    return deadline is not None and time.time() > deadline


def runner_service_config(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of `@bentoml.service` for a model runner."""
    config: dict[str, Any] = {
        "workers": 1,
        # Model calls can be long on a CPU; the entry service enforces the user-facing timeout.
        "traffic": {"timeout": settings.processing_timeout_s + 60},
        # The entry's client to this runner would otherwise close its whole session every
        # 100 calls / 300 s, dropping calls in flight (runners.client retries none of those).
        "runner_connection": {"max_requests": 2**31 - 1, "max_age": 1e9},
    }
    if settings.runner_gpus:
        config["resources"] = {"gpu": settings.runner_gpus}
    return config


AUTO_GPU_BATCH_SIZE = 4


def batching(max_batch_size: int, settings: Settings) -> dict[str, Any]:
    """`@bentoml.api` arguments for a batch API. 0 = auto: batch on a GPU host only; 1 turns
    adaptive batching off (the API still takes a list, of one item per call)."""
    if max_batch_size == 0:
        max_batch_size = AUTO_GPU_BATCH_SIZE if host_has_gpu(settings) else 1
    if max_batch_size == 1:
        return {"batchable": False}
    return {
        "batchable": True,
        "max_batch_size": max_batch_size,
        "max_latency_ms": settings.batch_max_latency_ms,
    }


def select_device(settings: Settings) -> torch.device:
    import torch

    if settings.device == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", 0)
    if settings.device == "cuda":
        logger.warning(
            "DEVICE=cuda but no GPU is visible to this runner (CUDA_VISIBLE_DEVICES=%r); with "
            "RUNNER_GPUS=1 BentoML gives each runner its own GPU index, which fails on hosts "
            "with fewer GPUs than runners: use RUNNER_GPUS=0 there. Falling back to the CPU.",
            os.environ.get("CUDA_VISIBLE_DEVICES"),
        )
    return torch.device("cpu")


def configure_threads(settings: Settings, device: torch.device) -> int:
    """Every usable core for torch (and the CPU backends): a lone request uses the whole
    machine, and the compute lock keeps concurrent heavy forwards from oversubscribing it."""
    import torch

    from models.backends import usable_cores

    threads = settings.torch_threads or usable_cores()
    if device.type == "cpu":
        torch.set_num_threads(threads)
    return torch.get_num_threads()


COMPUTE_LOCK_FILE = Path(tempfile.gettempdir()) / f"inpaint-anything-compute-{os.getuid()}.lock"


@contextmanager
def compute_slot(device: torch.device | None) -> Iterator[None]:
    """Hold the host-wide compute lock (a file lock every runner process shares) while a
    heavy forward runs on the CPU. Each forward uses every core, so two at once would only
    thrash; queued behind one another each finishes sooner. No-op on a GPU or when off."""
    if device is None or device.type != "cpu" or not get_settings().compute_lock:
        yield
        return
    with open(COMPUTE_LOCK_FILE, "a+b") as handle:  # its own open file: threads exclude too
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class _HeavyWorkThread(threading.local):
    on_thread = False  # True on the heavy-work thread itself


_heavy = _HeavyWorkThread()


def run_heavy(device: torch.device | None, work: Callable[[], T]) -> T:
    """`work()`, a heavy forward (SAM's encoder, LaMa, an SD UNet step, SAM 3), in torch's
    inference mode. On a CPU it runs holding the compute slot, on this process's heavy-work
    thread, whose CPU priority is HEAVY_WORK_NICE: a click's mask decoding shares the cores
    with these forwards, and must not wait seconds behind another photo's encoder run. The
    caller's own thread keeps its priority."""
    if _heavy.on_thread:  # within a heavy forward: in the slot already
        return work()
    if device is None or device.type != "cpu":
        return _in_slot(device, work)
    return _heavy_thread().submit(_in_slot, device, work).result()


def _in_slot(device: torch.device | None, work: Callable[[], T]) -> T:
    import torch

    with torch.inference_mode(), compute_slot(device):
        return work()


@functools.cache
def _heavy_thread() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(
        1,
        thread_name_prefix="heavy-work",
        initializer=_start_heavy_thread,
        initargs=(get_settings().heavy_work_nice,),
    )


def _start_heavy_thread(nice: int) -> None:
    _heavy.on_thread = True
    lower_thread_priority(nice)


def lower_thread_priority(nice: int) -> None:
    """Run the calling thread, and the threads it starts from now on (a backend's worker
    pool), at CPU priority `nice` or lower. Linux keeps priority per thread, and only a
    privileged process raises it again."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    thread = threading.get_native_id()
    if os.getpriority(os.PRIO_PROCESS, thread) < nice:
        os.setpriority(os.PRIO_PROCESS, thread, nice)


def compiled_models_dir(settings: Settings) -> Path:
    """Where converted models are cached: the setting, or beside the BentoML store."""
    if settings.compiled_models_dir:
        return settings.compiled_models_dir
    home = os.environ.get("BENTOML_HOME") or str(Path.home() / "bentoml")
    return Path(home) / "compiled"


def process_memory_mb() -> float:
    """Resident memory of this process."""
    return round(psutil.Process().memory_info().rss / 2**20, 1)


def _gpu_report(device: torch.device) -> dict[str, Any] | None:
    if device.type != "cuda":
        return None
    import torch

    properties = torch.cuda.get_device_properties(device)
    return {
        "name": properties.name,
        "memory_total_mb": round(properties.total_memory / 2**20, 1),
        "memory_allocated_mb": round(torch.cuda.memory_allocated(device) / 2**20, 1),
    }


@dataclass
class LoadState:
    """Whether a runner's model loaded, what it is, and why not when it failed."""

    kind: str
    tag: str
    device: torch.device | None = None
    demo: bool = False
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def loaded(self) -> bool:
        return self.error is None and self.device is not None

    def succeed(
        self, tag: str, device: torch.device, metadata: dict[str, Any], **details: Any
    ) -> None:
        """Record (and log) a loaded model; a demo model is announced as such."""
        self.tag, self.device, self.details = tag, device, details
        self.demo = bool(metadata.get("demo"))
        logger.info("%s model %s loaded on %s %s", self.kind, tag, device, details)
        if self.demo:
            logger.warning(
                "%s model %s is a tiny random-weight DEMO model: the API works, the pictures "
                "are noise. Real weights: scripts/download_models.sh",
                self.kind,
                tag,
            )

    def fail(self, exc: BaseException) -> None:
        self.error = f"{type(exc).__name__}: {exc}"
        logger.error(
            "%s runner could not load %s:\n%s", self.kind, self.tag, traceback.format_exc()
        )

    def require(self) -> None:
        """Raise BentoML's 503 when the model is not there to run."""
        if not self.loaded:
            raise ServiceUnavailable(f"{self.kind} model {self.tag} is not loaded: {self.error}")

    def report(self, counts: dict[str, int] | None = None) -> dict[str, Any]:
        """The load state, with the runner's `counts` (runners.bookkeeping.Counters) among
        its details."""
        return {
            "loaded": self.loaded,
            "tag": self.tag,
            "device": str(self.device) if self.device is not None else None,
            "demo": self.demo,
            "error": self.error,
            "gpu": _gpu_report(self.device) if self.device is not None else None,
            "process_memory_mb": process_memory_mb(),
            "details": {**self.details, **(counts or {})},
        }


class ModelRunner:
    """The life cycle every runner shares: load its store entry once at start-up, or stay up
    and answer 503 with the reason (a crash loop would hide it)."""

    kind: ClassVar[str]
    model_ref: ClassVar[Any]  # a bentoml.models.BentoModel; instance access resolves it

    def __init__(self) -> None:
        settings = get_settings()
        configure_logging(settings.log_level)
        self.state = LoadState(self.kind, str(type(self).model_ref))
        try:
            stored = self.model_ref
            metadata = dict(stored.info.metadata)
            device = select_device(settings)
            threads = configure_threads(settings, device)
            self.threads = threads
            details = self.load(Path(stored.path), metadata, device)
            if settings.warm_up:
                details["warm_up_s"] = self._warm_up(device)
            if device.type == "cpu":
                from models.backends import cpu_report

                details["host"] = cpu_report()
            self.state.succeed(str(stored.tag), device, metadata, torch_threads=threads, **details)
        except Exception as exc:
            self.state.fail(exc)

    def load(self, path: Path, metadata: dict[str, Any], device: torch.device) -> dict[str, Any]:
        """Load the model from its store folder; return facts for the status report."""
        raise NotImplementedError

    def warm_up(self, device: torch.device) -> None:
        """One dummy forward, so the first user request pays no one-time costs (lazy
        allocations, OpenVINO's first-inference set-up). Runners override it."""

    def _warm_up(self, device: torch.device) -> float:
        import torch

        started = time.perf_counter()
        with torch.inference_mode():
            self.warm_up(device)
        return round(time.perf_counter() - started, 2)
