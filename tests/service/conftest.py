"""Runner services instantiated in this process on the tiny models (no HTTP)."""

from __future__ import annotations

import pytest

from tooling import model_import


@pytest.fixture(scope="session")
def tiny_tags() -> dict[str, str]:
    """The tiny models, imported once into the session's model store (see tests/conftest.py)."""
    return model_import.import_tiny()
