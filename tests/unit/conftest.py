"""Fixtures and helpers of the unit tests that touch the BentoML model store."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from bentoml._internal.configuration.containers import BentoMLContainer
from bentoml._internal.models import ModelStore

from tests.conftest import REPO_ROOT


@pytest.fixture
def model_store(tmp_path: Path) -> Iterator[Path]:
    """A fresh, empty BentoML model store for one test."""
    (tmp_path / "models").mkdir()
    BentoMLContainer.model_store.set(ModelStore(tmp_path / "models"))
    yield tmp_path / "models"
    BentoMLContainer.model_store.reset()


def import_models(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    """`scripts/import_models.py ARGS` as a user runs it, with BENTOML_HOME=home."""
    return subprocess.run(
        [sys.executable, "scripts/import_models.py", *args],
        cwd=REPO_ROOT,
        env={**os.environ, "BENTOML_HOME": str(home)},
        capture_output=True,
        text=True,
    )
