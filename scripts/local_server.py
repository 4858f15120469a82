"""Start a real `bentoml serve` of this project on 127.0.0.1, for the e2e tests and bench.py.

The server runs in its own process group with the given BENTOML_HOME and settings, its
output goes to a log file, and it is stopped (the whole group) on exit.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
BENTOML = Path(sys.executable).parent / "bentoml"


class ServerError(RuntimeError):
    """The server exited or did not become ready; the message ends with its log."""


@dataclass(frozen=True)
class LocalServer:
    url: str
    log: Path
    pid: int | None = None  # the `bentoml serve` process; its children are the services


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def base_env(bentoml_home: Path) -> dict[str, str]:
    """This environment minus the settings a developer's shell may carry, plus the store."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "SAM_MODEL", "LAMA_MODEL", "SD_MODEL", "SAM3_MODEL")
    }
    return {**env, "BENTOML_HOME": str(bentoml_home), "BENTOML_DO_NOT_TRACK": "True"}


def import_tiny_models(bentoml_home: Path) -> None:
    """Build and import the tiny models with the project's own command."""
    subprocess.run(
        [sys.executable, "scripts/import_models.py", "tiny"],
        cwd=REPO_ROOT,
        env=base_env(bentoml_home),
        check=True,
        capture_output=True,
        text=True,
    )


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(f"bentoml serve exited with {process.returncode}:\n{_tail(log)}")
        try:
            if httpx.get(f"{url}/api/v1/ready", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise ServerError(f"not ready after {timeout_s:.0f} s:\n{_tail(log)}")


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-5000:]


@contextmanager
def serving(
    bentoml_home: Path,
    log: Path,
    settings: Mapping[str, str] | None = None,
    target: str = "service:InpaintAnything",
    timeout_s: float = 300,
    cwd: Path = REPO_ROOT,
) -> Iterator[LocalServer]:
    """`bentoml serve target` (in `cwd`) until the block ends; ready on entry, i.e.
    GET /api/v1/ready answered 200."""
    port = free_port()
    env = {**base_env(bentoml_home), **(settings or {}), "PYTHONUNBUFFERED": "1"}
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(BENTOML), "serve", target, "--host", "127.0.0.1", "--port", str(port)],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process, log, timeout_s)
        yield LocalServer(url=url, log=log, pid=process.pid)
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server's whole process group (BentoML starts one process per service)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
