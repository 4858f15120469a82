"""A real `bentoml serve` of this project on the tiny models, shared by the e2e tests.

The server runs in its own process group with a temporary BENTOML_HOME holding the tiny
random-weight models (imported through scripts/import_models.py, the same code as real
weights), and is stopped at the end of the session.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO_ROOT

STARTUP_TIMEOUT_S = 300
# Small limits keep the limit tests cheap; everything else runs at the defaults.
SERVER_ENV = {
    "MAX_FILE_SIZE": str(3 * 1024 * 1024),
    "MAX_IMAGE_PIXELS": str(6_000_000),
    "MAX_IMAGE_SIZE": "1024",
    "DEFAULT_INFERENCE_STEPS": "2",
    "TORCH_THREADS": "1",
    "EMBEDDING_CACHE_SIZE": "8",
    "BATCH_MAX_LATENCY_MS": "300",
}


@dataclass(frozen=True)
class Server:
    url: str
    log: Path
    bentoml_home: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"bentoml serve exited with {process.returncode}:\n{log.read_text()[-5000:]}"
            )
        try:
            if httpx.get(f"{url}/api/v1/ready", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    pytest.fail(f"server not ready after {STARTUP_TIMEOUT_S} s:\n{log.read_text()[-5000:]}")


@pytest.fixture(scope="session")
def bentoml_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model store holding the tiny models, imported by the project's own command."""
    home = tmp_path_factory.mktemp("bentoml-home")
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True"}
    subprocess.run(
        [sys.executable, "scripts/import_models.py", "tiny"],
        cwd=REPO_ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return home


@pytest.fixture(scope="session")
def server(bentoml_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("REDIS_URL",)},
        **SERVER_ENV,
        "BENTOML_HOME": str(bentoml_home),
        "BENTOML_DO_NOT_TRACK": "True",
        "PYTHONUNBUFFERED": "1",
    }
    bentoml = Path(sys.executable).parent / "bentoml"
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                str(bentoml),
                "serve",
                "service:InpaintAnything",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process, log)
        yield Server(url=url, log=log, bentoml_home=bentoml_home)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
