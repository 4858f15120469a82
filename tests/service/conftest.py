"""Runner services instantiated in this process on the tiny models (no HTTP)."""

from __future__ import annotations

import pytest

from tooling import model_import

BACKEND_SETTINGS = ("SAM_BACKEND", "LAMA_BACKEND", "SD_BACKEND")


@pytest.fixture(scope="session")
def tiny_tags() -> dict[str, str]:
    """The tiny models, imported once into the session's model store (see tests/conftest.py)."""
    return model_import.import_tiny()


@pytest.fixture(scope="session", autouse=True)
def eager_reference_backends() -> None:
    """These tests hold the runners to the reference code bit for bit, so they run the eager
    fp32 reference path; the fast paths have their own parity tests (test_fast_paths.py,
    tests/unit/test_backends.py, tests/unit/test_sd_unet.py). SD too: its tests compare runs
    with each other to a level or two, which holds on OpenVINO as well (within 1e-5), but
    eager keeps them on the reference and spares each SD runner a UNet conversion."""
    import os

    from config.settings import get_settings

    for name in BACKEND_SETTINGS:
        os.environ.setdefault(name, "eager")
    get_settings.cache_clear()
