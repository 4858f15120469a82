"""Fixtures shared by every test layer."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Tests never touch the user's own model store (~/bentoml); this runs before bentoml is imported.
os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="inpaint-tests-bentoml-")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")

REPO_ROOT = Path(__file__).resolve().parent.parent
# CI places the read-only shared folder (example photos, LaMa layout facts) beside the clone.
SHARED_DIR = Path(os.environ.get("INPAINT_SHARED_DIR", REPO_ROOT.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED_DIR.is_dir():
        pytest.fail(f"shared data folder not found at {SHARED_DIR} (set INPAINT_SHARED_DIR)")
    return SHARED_DIR


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (`pytest.mark.anyio`) run on asyncio, as BentoML does."""
    return "asyncio"
