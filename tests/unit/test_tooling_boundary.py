"""Offline tooling stays out of what the Bento serves.

The served path (service.py and the packages bentofile.yaml ships) never imports `tooling`
(tests/unit/test_import_rules.py), so a Bento without it still starts;
`scripts/import_models.py resolve`, shipped for `docker run` diagnostics, works without it too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT

SERVED = ["service.py", "api", "config", "flows", "jobs", "models", "runners", "utils"]


def test_import_models_resolve_runs_without_the_tooling_package(tmp_path: Path) -> None:
    # A copy of what the Bento ships: the served packages and the script, no tooling/.
    for name in SERVED:
        source = REPO_ROOT / name
        if source.is_dir():
            (tmp_path / name).symlink_to(source, target_is_directory=True)
        else:
            (tmp_path / name).symlink_to(source)
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "import_models.py").write_text(
        (REPO_ROOT / "scripts" / "import_models.py").read_text()
    )
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "store"), "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "scripts/import_models.py", "resolve"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "lama: lama-tiny:latest" in result.stdout
