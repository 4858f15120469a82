"""The layers import only downwards: config <- utils <- models <- runners <- api <- jobs <- flows
<- service;
the batch client talks to a server over HTTP and imports none of what it serves.

Read from the source with `ast` (every import, also those inside functions), so a new module
that breaks a rule fails here before anyone has to notice it in review.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PROJECT = {
    "config",
    "utils",
    "models",
    "runners",
    "api",
    "flows",
    "jobs",
    "service",
    "tooling",
    "scripts",
    "batch",
}
BEYOND_SERVED = {"tooling", "scripts", "tests", "batch"}
# The layers each layer must not import (its own layer and those below it are allowed).
FORBIDDEN: dict[str, set[str]] = {
    "config": PROJECT - {"config"},
    "utils": PROJECT - {"utils", "config"},
    "models": {"runners", "api", "flows", "service"} | BEYOND_SERVED,
    "runners": {"api", "flows", "jobs", "service"} | BEYOND_SERVED,
    "api": {"flows", "jobs", "service"} | BEYOND_SERVED,
    "jobs": {"models", "runners", "flows", "service"} | BEYOND_SERVED,
    "flows": {"service"} | BEYOND_SERVED,
    "service": BEYOND_SERVED,
    "batch": PROJECT - {"batch", "config"},
}


def _imported_layers(path: Path) -> set[str]:
    layers: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            layers.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            layers.add(node.module.split(".")[0])
    return layers


def _files(layer: str) -> list[Path]:
    if layer == "service":
        return [REPO_ROOT / "service.py"]
    return sorted((REPO_ROOT / layer).rglob("*.py"))


def _violations(layer: str) -> dict[str, list[str]]:
    found = {}
    for path in _files(layer):
        bad = sorted(_imported_layers(path) & FORBIDDEN[layer])
        if bad:
            found[str(path.relative_to(REPO_ROOT))] = bad
    return found


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_only_what_it_may(layer: str) -> None:
    assert _files(layer), f"no sources found for layer {layer}"
    assert _violations(layer) == {}


def test_the_rule_catches_a_violation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A runner that knows the HTTP edge: the very defect the rule exists for.
    (tmp_path / "runners").mkdir()
    (tmp_path / "runners" / "bad.py").write_text("def f():\n    from api.metrics import m\n")
    monkeypatch.setattr(f"{__name__}.REPO_ROOT", tmp_path)
    assert _violations("runners") == {"runners/bad.py": ["api"]}
