"""The host's CPU as the tests see it, read from /proc/cpuinfo and the OS apart from the code
under test (models.backends, runners.runtime), so a wrong rule there cannot make its own
expectation."""

from __future__ import annotations

import os
import threading
from functools import cache
from pathlib import Path

import pytest


@cache
def cpu_flags() -> frozenset[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def has_bf16() -> bool:
    """bf16 matrix math in hardware: AVX-512 BF16 or AMX-BF16."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def expected_precision() -> str:
    """What the CPU fast paths should pick on this host: bf16 where the hardware has it."""
    return "bf16" if has_bf16() else "fp32"


needs_bf16 = pytest.mark.skipif(
    not has_bf16(), reason="this CPU has neither avx512_bf16 nor amx_bf16 (see /proc/cpuinfo)"
)


def thread_priority() -> int:
    """The calling thread's CPU priority (nice), as Linux keeps it: per thread."""
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
