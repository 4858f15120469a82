"""Offline tooling stays out of what the Bento serves.

The served path (service.py and the packages bentofile.yaml ships) never imports `tooling`, so
a Bento without it still starts; `scripts/import_models.py resolve`, shipped for `docker run`
diagnostics, works without it too.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT

SERVED = ["service.py", "api", "config", "models", "runners", "utils"]


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_served_code_never_imports_tooling() -> None:
    files = [REPO_ROOT / "service.py"]
    files += [p for d in SERVED[1:] for p in sorted((REPO_ROOT / d).rglob("*.py"))]
    offenders = {
        str(path.relative_to(REPO_ROOT)): sorted(m for m in mods if m.split(".")[0] == "tooling")
        for path in files
        if (mods := _imported_modules(path))
    }
    assert {path: mods for path, mods in offenders.items() if mods} == {}


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
