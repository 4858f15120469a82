"""A real `bentoml serve` of this project on the tiny models, shared by the e2e tests.

The server runs with a temporary BENTOML_HOME holding the tiny random-weight models,
imported through scripts/import_models.py (the same code as real weights).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from scripts.local_server import ServerError, import_tiny_models, serving

# Small limits keep the limit tests cheap; everything else runs at the defaults.
SERVER_ENV = {
    "MAX_FILE_SIZE": str(3 * 1024 * 1024),
    "MAX_IMAGE_PIXELS": str(6_000_000),
    "MAX_IMAGE_SIZE": "1024",
    "DEFAULT_INFERENCE_STEPS": "2",
    "TORCH_THREADS": "1",
    "EMBEDDING_CACHE_SIZE": "8",
    "MAX_CANVAS_PIXELS": "2000000",  # fill's upscaled-canvas limit, reached by a 2000x50 strip
    "ALLOWED_ORIGINS": "https://app.example",  # one origin, so CORS is checked exactly
}


@dataclass(frozen=True)
class Server:
    url: str
    log: Path
    bentoml_home: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120)


@pytest.fixture(scope="session")
def bentoml_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model store holding the tiny models."""
    home = tmp_path_factory.mktemp("bentoml-home")
    import_tiny_models(home)
    return home


@pytest.fixture(scope="session")
def server(bentoml_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    try:
        with serving(bentoml_home, log, SERVER_ENV) as running:
            yield Server(url=running.url, log=running.log, bentoml_home=bentoml_home)
    except ServerError as exc:
        pytest.fail(str(exc))
