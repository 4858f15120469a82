"""The Bento round trip: build -> export -> import into a fresh store -> serve -> answer.

What a user ships is the Bento, not the repo: it must carry the three models that the runners
resolved at build time, a Dockerfile for `bentoml containerize`, and everything the server
imports; served from another BENTOML_HOME (and another working directory) it must load
exactly the packed models.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from scripts.local_server import base_env, serving
from tests.conftest import REPO_ROOT
from tests.e2e.helpers import example_cases, example_path, load_rgb, png_bytes, post

pytestmark = pytest.mark.e2e

BENTOML = Path(sys.executable).parent / "bentoml"
BENTO_NAME = "inpaint-anything"
TINY_NAMES = {"sam": "sam-tiny", "lama": "lama-tiny", "sd": "sd-tiny", "sam3": "sam3-tiny"}


@dataclass(frozen=True)
class BuiltBento:
    tag: str
    path: Path
    home: Path  # the store it was built in
    models: dict[str, str]  # kind -> tag that the runners resolved at build time


def _bentoml(args: list[str], env: dict[str, str], cwd: Path = REPO_ROOT) -> str:
    result = subprocess.run(
        [str(BENTOML), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"bentoml {' '.join(args)} failed:\n{result.stderr[-5000:]}"
    return result.stdout


def _store_tags(env: dict[str, str]) -> set[str]:
    return {m["tag"] for m in json.loads(_bentoml(["models", "list", "-o", "json"], env))}


def _no_uv(tmp_path: Path) -> Path:
    """A `uv` that fails: without one on PATH, BentoML pip-installs uv into this venv at
    build time. With `lock_packages: false` it must never run."""
    folder = tmp_path / "no-uv"
    folder.mkdir()
    uv = folder / "uv"
    uv.write_text("#!/bin/sh\necho 'uv ran: is lock_packages still false?' >&2\nexit 1\n")
    uv.chmod(0o755)
    return folder


@pytest.fixture(scope="module")
def built(bentoml_home: Path, tmp_path_factory: pytest.TempPathFactory) -> BuiltBento:
    env = base_env(bentoml_home)
    env["PATH"] = f"{_no_uv(tmp_path_factory.mktemp('bin'))}{os.pathsep}{env['PATH']}"
    packed = {
        kind: next(t for t in _store_tags(env) if t.split(":")[0] == name)
        for kind, name in TINY_NAMES.items()
    }
    output = _bentoml(["build", "-o", "tag"], env)
    tag = output.strip().splitlines()[-1].removeprefix("__tag__:")
    name, version = tag.split(":")
    path = bentoml_home / "bentos" / name / version  # `bentoml get -o path` wraps long lines
    assert (path / "bento.yaml").is_file(), _bentoml(["list"], env)
    return BuiltBento(tag=tag, path=path, home=bentoml_home, models=packed)


def test_the_bento_carries_the_four_resolved_models(built: BuiltBento) -> None:
    assert built.tag.startswith(f"{BENTO_NAME}:")
    info = _read_yaml(built.path / "bento.yaml")
    services = {s["name"]: s for s in info["services"]}
    assert {s: [m["tag"] for m in services[s]["models"]] for s in services} == {
        "inpaint_anything": [],
        "sam_runner": [built.models["sam"]],
        "lama_runner": [built.models["lama"]],
        "sd_runner": [built.models["sd"]],
        "sam3_runner": [built.models["sam3"]],
    }
    assert {"name": "ENVIRONMENT", "value": "production", "stage": "all"} in info["envs"]


def test_the_bento_has_the_server_source_and_nothing_private(built: BuiltBento) -> None:
    src = built.path / "src"
    files = {p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file()}
    assert {"service.py", "models/big_lama_config.yaml", "scripts/import_models.py"} <= files
    for package in ("api", "config", "models", "runners", "utils"):
        expected = {p.relative_to(REPO_ROOT).as_posix() for p in REPO_ROOT.glob(f"{package}/*.py")}
        assert expected <= files, f"missing from the Bento: {sorted(expected - files)}"
    leaked = [f for f in files if f.startswith(("tests/", ".venv/", "pretrained_models/"))]
    assert not leaked and ".env" not in files and "pyproject.toml" not in files


def test_the_bento_dockerfile_installs_the_pyproject_pins(built: BuiltBento) -> None:
    dockerfile = (built.path / "env" / "docker" / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile
    assert "uv venv --python 3.11" in dockerfile
    assert "pip install -r $BENTO_PATH/env/python/requirements.txt" in dockerfile
    assert "ENV ENVIRONMENT=$ENVIRONMENT" in dockerfile
    requirements = (built.path / "env" / "python" / "requirements.txt").read_text().split()
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert set(pyproject["project"]["dependencies"]) <= set(requirements)
    # Not locked: the exact pins above are the only constraints (see bentofile.yaml).
    assert not (built.path / "env" / "python" / "requirements.lock.txt").exists()


@pytest.fixture(scope="module")
def imported_server(
    built: BuiltBento, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, str]]]:
    """The exported Bento imported into an empty BENTOML_HOME and served from there."""
    workdir = tmp_path_factory.mktemp("bento-roundtrip")
    # An uncompressed tar: the native `.bento` is tar.xz, 15x slower to write (~30 s here) for
    # the same content, and its compression is BentoML's to test, not ours.
    archive = workdir / "x.tar"
    _bentoml(["export", built.tag, str(archive)], base_env(built.home))
    # A second, empty store: the build's models are not visible, only what the archive carried.
    # The Bento serves with ENVIRONMENT=production, which refuses an open API unless told.
    settings = {"TORCH_THREADS": "1", "ALLOW_ANONYMOUS": "true"}
    env = {**base_env(workdir / "home"), **settings}
    _bentoml(["import", str(archive)], env)
    assert _store_tags(env) == set(built.models.values())
    # cwd outside the repo, so that nothing can be imported from the checkout.
    with serving(
        workdir / "home", workdir / "serve.log", settings, target=built.tag, cwd=workdir
    ) as server:
        ready = httpx.get(f"{server.url}/api/v1/ready", timeout=30).json()
        yield server.url, {kind: report["tag"] for kind, report in ready["models"].items()}


def test_the_imported_bento_serves_the_packed_models(
    built: BuiltBento, imported_server: tuple[str, dict[str, str]]
) -> None:
    _, ready_tags = imported_server
    assert ready_tags == built.models


def test_the_imported_bento_removes_an_object(
    built: BuiltBento, imported_server: tuple[str, dict[str, str]]
) -> None:
    url, _ = imported_server
    case = example_cases()["remove-baseball"]
    image = load_rgb(example_path(case))
    x, y = case["point_coords"][0]
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[y - 30 : y + 30, x - 30 : x + 30] = 255
    with httpx.Client(base_url=url, timeout=120) as client:
        response = post(client, "remove", example_path(case), mask=png_bytes(mask))
    assert response.status_code == 200, response.text
    metadata = response.json()["metadata"]
    assert (metadata["width"], metadata["height"]) == (image.shape[1], image.shape[0])
    assert metadata["models"] == {"lama": built.models["lama"]}


def _read_yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())
