"""Safe defaults with ENVIRONMENT=production: CORS closed unless ALLOWED_ORIGINS names the
sites, and no start without API_KEYS unless ALLOW_ANONYMOUS=true says the open API is meant."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from api.production import UnsafeProductionSettings, check_production_settings
from config.settings import Settings
from tests.conftest import REPO_ROOT


@pytest.fixture(autouse=True)
def _no_env_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(Settings.model_config, "env_file", None)
    for name in ("ENVIRONMENT", "ALLOWED_ORIGINS", "API_KEYS", "ALLOW_ANONYMOUS"):
        monkeypatch.delenv(name, raising=False)


def test_cors_is_open_in_development_and_closed_in_production(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().allowed_origins == ["*"]
    monkeypatch.setenv("ENVIRONMENT", "production")
    assert Settings().allowed_origins == []
    monkeypatch.setenv("ALLOWED_ORIGINS", "https://editor.example, https://b.example")
    assert Settings().allowed_origins == ["https://editor.example", "https://b.example"]
    monkeypatch.setenv("ALLOWED_ORIGINS", "")  # empty is unset: still closed
    assert Settings().allowed_origins == []


def test_production_without_keys_is_refused_with_a_clear_message() -> None:
    with pytest.raises(UnsafeProductionSettings, match="API_KEYS.*ALLOW_ANONYMOUS=true"):
        check_production_settings(Settings(environment="production"))


@pytest.mark.parametrize(
    "settings",
    [
        {"environment": "production", "api_keys": ["k1"]},
        {"environment": "production", "allow_anonymous": True},
        {"environment": "development"},
    ],
)
def test_keys_or_an_explicit_opt_out_or_development_may_start(settings: dict) -> None:
    check_production_settings(Settings(**settings))


def test_allow_anonymous_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("ALLOW_ANONYMOUS", "true")
    check_production_settings(Settings())


# The service module itself, in a fresh interpreter with only these variables: the refusal
# and the CORS origins are what `bentoml serve` (and a container) would get.
_PROBE = """
import json
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient
import service

middlewares = service.InpaintAnything.middlewares
cors, options = next(m for m in middlewares if m[0].__name__ == "CORSMiddleware")
app = cors(Starlette(routes=[Route("/", lambda r: PlainTextResponse("ok"))]), **options)
response = TestClient(app).get("/", headers={"Origin": "https://evil.example"})
print(json.dumps({"origins": options["allow_origins"],
                  "allow_origin": response.headers.get("access-control-allow-origin")}))
"""


def _import_service(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "BENTOML_HOME": str(tmp_path)}
    return subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=REPO_ROOT,
        env={**clean, "BENTOML_DO_NOT_TRACK": "True", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_service_refuses_to_load_in_production_without_keys(tmp_path: Path) -> None:
    result = _import_service(tmp_path, ENVIRONMENT="production")
    assert result.returncode != 0
    assert "UnsafeProductionSettings: ENVIRONMENT=production needs API_KEYS" in result.stderr


@pytest.mark.parametrize(
    ("env", "origins", "allowed"),
    [
        ({"ENVIRONMENT": "production", "API_KEYS": "k1"}, [], None),
        ({"ENVIRONMENT": "production", "ALLOW_ANONYMOUS": "true"}, [], None),
        (
            {
                "ENVIRONMENT": "production",
                "API_KEYS": "k1",
                "ALLOWED_ORIGINS": "https://evil.example",
            },
            ["https://evil.example"],
            "https://evil.example",
        ),
        ({"ENVIRONMENT": "development"}, ["*"], "*"),
    ],
)
def test_the_service_cors_follows_the_environment(
    tmp_path: Path, env: dict[str, str], origins: list[str], allowed: str | None
) -> None:
    result = _import_service(tmp_path, **env)
    assert result.returncode == 0, result.stderr[-2000:]
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    assert probe == {"origins": origins, "allow_origin": allowed}
