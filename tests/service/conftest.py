"""Runner services instantiated in this process on the tiny models (no HTTP)."""

from __future__ import annotations

import pytest

from tooling import model_import


@pytest.fixture(scope="session")
def tiny_tags() -> dict[str, str]:
    """The tiny models, imported once into the session's model store (see tests/conftest.py)."""
    return model_import.import_tiny()


@pytest.fixture(scope="session", autouse=True)
def eager_reference_backends() -> None:
    """These tests hold the runners to the reference code bit for bit, so they run the eager
    fp32 reference path; the fast paths have their own parity tests (test_fast_paths.py,
    tests/unit/test_backends.py)."""
    import os

    from config.settings import get_settings

    os.environ.setdefault("SAM_BACKEND", "eager")
    os.environ.setdefault("LAMA_BACKEND", "eager")
    get_settings.cache_clear()
