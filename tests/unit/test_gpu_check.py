"""scripts/gpu_check.py keeps working: its CPU + tiny-model mode, as CI runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "gpu_check.py"


def test_gpu_check_tiny_cpu_mode_writes_every_section(tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    command = [sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--repeats", "1"]
    completed = subprocess.run(
        [*command, "--out", str(out)], capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    report = json.loads(out.read_text())
    assert report["device"] == "cpu" and report["tiny"] is True
    sam = report["sam"]
    assert sam["embed_fp32"]["runs"] == 1 and sam["embed_bf16"]["median_ms"] > 0
    assert 0.0 <= sam["bf16_mask_iou"]["min"] <= sam["bf16_mask_iou"]["mean"] <= 1.0
    assert report["lama"]["size"] == 256
    # Non-zero: the autocast really ran in bf16; small: on the same weights and input.
    assert 0 < report["lama"]["bf16_autocast_max_error"] < 0.25
    sd = report["sd"]
    assert sd["steps"] == 2 and sd["batch_2"]["per_image_ms"] > 0
