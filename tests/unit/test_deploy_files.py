"""Structure of the shipping files: bentofile.yaml, docker/, .dockerignore, deploy/.

No Docker engine or BentoCloud here: these check what can be checked offline (BentoML's own
config classes where it has them) and what keeps the files consistent with each other and
with the code. The Bento itself is built and served in tests/e2e/test_bento.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import attr
import pytest
import yaml
from bentoml._internal.bento.build_config import BentoBuildConfig
from bentoml._internal.cloud.deployment import DeploymentAPI
from bentoml._internal.cloud.schemas.modelschemas import (
    DeploymentServiceConfig,
    DeploymentTargetHPAConf,
    HPAPolicy,
)
from bentoml._internal.cloud.schemas.schemasv2 import CreateDeploymentSchema
from bentoml._internal.utils.cattr import bentoml_cattr
from pathspec import PathSpec

from api.guard import FILE_FIELDS, FORM_OVERHEAD
from config.settings import Settings
from tests.conftest import REPO_ROOT

DOCKER = REPO_ROOT / "docker"
SOURCE_PACKAGES = ("api", "config", "flows", "jobs", "models", "runners", "utils")


# What web/build.sh vendors; the Bento must carry it (the Dockerfile builds it in a stage).
WEB_VENDOR = [f"web/static/vendor/{name}" for name in ("ort.wasm.min.mjs", "swagger-ui-bundle.js")]


def _yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def _default(field: str) -> Any:
    return Settings.model_fields[field].default


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines = [
        line
        for line in (DOCKER / "Dockerfile").read_text().splitlines()
        if not line.lstrip().startswith("#")
    ]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [
        (parts[0].upper(), parts[1] if len(parts) > 1 else "")
        for parts in (line.strip().split(None, 1) for line in joined.splitlines())
        if parts
    ]


def _instructions(name: str) -> list[str]:
    return [args for instruction, args in _dockerfile() if instruction == name]


def _docker_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in _instructions("ENV"):
        env.update(re.findall(r"(\w+)=(\S+)", args))
    return env


def _services_in_code() -> set[str]:
    sources = [REPO_ROOT / "service.py", *sorted((REPO_ROOT / "runners").glob("*.py"))]
    pattern = re.compile(r'@bentoml\.service\(\s*name="(\w+)"')
    return {name for path in sources for name in pattern.findall(path.read_text())}


# --- bentofile.yaml -----------------------------------------------------------------------


def test_bentofile_is_valid_for_bentoml() -> None:
    with (REPO_ROOT / "bentofile.yaml").open() as stream:
        config = BentoBuildConfig.from_yaml(stream)  # rejects unknown keys
    assert config.service == "service:InpaintAnything"
    assert config.python.lock_packages is False
    assert config.docker.distro == "debian"
    assert [(e.name, e.value) for e in config.envs] == [("ENVIRONMENT", "production")]
    # The runners resolve their models at build time; none are hard-wired here.
    assert config.models == []


def test_bentofile_packages_are_the_pyproject_dependencies() -> None:
    packages = _yaml(REPO_ROOT / "bentofile.yaml")["python"]["packages"]
    assert packages == _pyproject()["project"]["dependencies"]


def test_bentofile_includes_every_server_source_file_and_no_private_one() -> None:
    bentofile = _yaml(REPO_ROOT / "bentofile.yaml")
    include = PathSpec.from_lines("gitwildmatch", bentofile["include"])
    exclude = PathSpec.from_lines("gitwildmatch", bentofile["exclude"])

    def shipped(path: str) -> bool:
        return include.match_file(path) and not exclude.match_file(path)

    needed = ["service.py", "models/big_lama_config.yaml", "scripts/import_models.py"]
    needed += ["web/static/index.html", "web/static/js/main.js", *WEB_VENDOR]
    needed += [
        p.relative_to(REPO_ROOT).as_posix()
        for d in SOURCE_PACKAGES
        for p in (REPO_ROOT / d).glob("*.py")
    ]
    assert [path for path in needed if not shipped(path)] == []
    private = [
        ".env",
        "tests/conftest.py",
        "tooling/download.py",
        "pretrained_models/sam_vit_h_4b8939.pth",
        "api/__pycache__/app.cpython-311.pyc",
    ]
    assert [path for path in private if shipped(path)] == []


def test_python_version_agrees_everywhere() -> None:
    bento_python = _yaml(REPO_ROOT / "bentofile.yaml")["docker"]["python_version"]
    # The last stage is the image; earlier ones only build assets.
    base = _instructions("FROM")[-1]
    assert base.startswith(f"python:{bento_python}-")
    assert f">={bento_python}" in _pyproject()["project"]["requires-python"]


# --- docker/Dockerfile and .dockerignore --------------------------------------------------


def test_dockerfile_runs_as_a_numeric_non_root_user() -> None:
    user = _instructions("USER")[-1]
    uid = user.split(":")[0]
    assert uid.isdigit() and uid != "0", user


def test_dockerfile_serves_and_checks_health_on_port_8000() -> None:
    assert _instructions("EXPOSE") == ["8000"]
    assert _docker_env()["API_PORT"] == "8000" == str(_default("api_port"))
    (healthcheck,) = _instructions("HEALTHCHECK")
    assert "/api/v1/health" in healthcheck and "API_PORT" in healthcheck
    assert _instructions("ENTRYPOINT") == ['["/app/docker/entrypoint.sh"]']
    assert _instructions("CMD") == ['["serve"]']
    assert os.access(DOCKER / "entrypoint.sh", os.X_OK)


def test_dockerfile_installs_the_pyproject_pins_and_keeps_models_on_volumes() -> None:
    runs = " ".join(_instructions("RUN"))
    assert "tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']" in runs
    env = _docker_env()
    assert env["ENVIRONMENT"] == "production"
    volumes = yaml.safe_load(_instructions("VOLUME")[0])
    assert env["BENTOML_HOME"] in volumes and env["MODELS_DIR"] in volumes


def test_dockerignore_sends_the_server_and_nothing_private() -> None:
    # pathspec's gitwildmatch approximates Docker's matcher well for these plain patterns.
    ignored = PathSpec.from_lines(
        "gitwildmatch", (REPO_ROOT / ".dockerignore").read_text().splitlines()
    )
    needed = [
        "pyproject.toml",
        "service.py",
        "models/big_lama_config.yaml",
        "scripts/download_models.sh",
        "scripts/import_models.py",
        "docker/entrypoint.sh",
        "tooling/download.py",
        "tooling/model_import.py",
        "web/static/index.html",
        "web/package-lock.json",
        "web/build.sh",
    ]
    needed += [
        p.relative_to(REPO_ROOT).as_posix()
        for d in SOURCE_PACKAGES
        for p in (REPO_ROOT / d).glob("*.py")
    ]
    assert [path for path in needed if ignored.match_file(path)] == []
    private = [
        ".env",
        ".venv/bin/python",
        ".git/config",
        "pretrained_models/big-lama/models/best.ckpt",
        "tests/conftest.py",
        "utils/__pycache__/masks.cpython-311.pyc",
        # The image builds these in its own stage from the lockfile.
        "web/node_modules/redoc/package.json",
        "web/static/vendor/ort.wasm.min.mjs",
    ]
    assert [path for path in private if not ignored.match_file(path)] == []


def test_entrypoint_refuses_to_serve_without_models(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_MODEL")}
    env.update(
        BENTOML_HOME=str(tmp_path), PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    )
    result = subprocess.run(
        [DOCKER / "entrypoint.sh"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1, result.stderr
    assert "no sam model; no lama model; no sd model" in result.stderr
    assert "Traceback" not in result.stderr
    assert "scripts/download_models.sh" in result.stderr


def test_entrypoint_runs_other_commands_as_they_are() -> None:
    result = subprocess.run(
        [DOCKER / "entrypoint.sh", "echo", "download", "first"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (result.returncode, result.stdout) == (0, "download first\n")


# --- docker/docker-compose.yml and docker/nginx.conf ----------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _yaml(DOCKER / "docker-compose.yml")


def test_compose_reserves_an_nvidia_gpu_only_in_the_gpu_file(compose: dict[str, Any]) -> None:
    assert "deploy" not in compose["services"]["server"]  # the main file runs on a CPU host
    gpu = _yaml(DOCKER / "docker-compose.gpu.yml")["services"]["server"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert device["count"] == 1
    # One GPU: every runner on it. BentoML would give each `gpu: 1` runner its own index.
    assert compose["services"]["server"]["environment"]["RUNNER_GPUS"] == "${RUNNER_GPUS:-0}"


def test_compose_server_builds_the_dockerfile_and_uses_redis(compose: dict[str, Any]) -> None:
    server = compose["services"]["server"]
    context = (DOCKER / server["build"]["context"]).resolve()
    assert context == REPO_ROOT and (context / server["build"]["dockerfile"]).is_file()
    redis_url = server["environment"]["REDIS_URL"]
    host = re.fullmatch(r"redis://(\w+):6379/\d+", redis_url)
    assert host and host.group(1) in compose["services"], redis_url
    redis = compose["services"][host.group(1)]
    assert redis["image"].startswith("redis:7")
    assert server["depends_on"][host.group(1)] == {"condition": "service_healthy"}
    assert "redis-cli" in redis["healthcheck"]["test"]


def test_compose_health_ports_and_volumes_match_the_image(compose: dict[str, Any]) -> None:
    server = compose["services"]["server"]
    assert any("/api/v1/health" in part for part in server["healthcheck"]["test"])
    # Not published (nginx is the way in), so that the server can run as several replicas.
    assert "ports" not in server and server["expose"] == _instructions("EXPOSE")
    mounted = {volume.split(":")[1] for volume in server["volumes"]}
    env = _docker_env()
    # Only the store's models are shared between replicas, not all of BENTOML_HOME.
    assert mounted == {f"{env['BENTOML_HOME']}/models", env["MODELS_DIR"]}
    assert {volume.split(":")[0] for volume in server["volumes"]} <= set(compose["volumes"])


def test_compose_keys_come_from_the_env_file_only(compose: dict[str, Any]) -> None:
    server = compose["services"]["server"]
    assert server["env_file"] == ["${INPAINT_ENV_FILE:-inpaint.env}"]
    assert server["environment"]["ENVIRONMENT"] == "production"
    # An `environment:` entry would override the env file's value with the committed one.
    assert not {"API_KEYS", "WEBHOOK_SECRET", "ALLOWED_ORIGINS"} & set(server["environment"])
    example = (DOCKER / "inpaint.env.example").read_text()
    names = {line.split("=")[0] for line in example.splitlines() if "=" in line[:40]}
    assert {"API_KEYS", "WEBHOOK_SECRET", "ALLOWED_ORIGINS"} <= names
    ignored = (REPO_ROOT / ".gitignore").read_text().splitlines()
    assert "docker/inpaint.env" in ignored


def test_compose_nginx_is_the_entry_and_uses_the_shipped_config(compose: dict[str, Any]) -> None:
    nginx = compose["services"]["nginx"]
    assert "profiles" not in nginx and nginx["ports"] == ["${HOST_PORT:-8000}:80"]
    (config,) = nginx["volumes"]
    source, target, _ = config.split(":")
    assert (DOCKER / source).resolve() == DOCKER / "nginx.conf"
    assert target == "/etc/nginx/conf.d/default.conf"
    assert nginx["depends_on"]["server"] == {"condition": "service_healthy"}


def _nginx_size_mb(conf: str, directive: str) -> int:
    match = re.search(rf"^\s*{directive}\s+(\d+)m;", conf, re.MULTILINE)
    assert match, directive
    return int(match.group(1))


def test_nginx_lets_the_server_answer_oversize_uploads_and_slow_models() -> None:
    conf = (DOCKER / "nginx.conf").read_text()
    server_max_body = len(FILE_FIELDS) * _default("max_file_size") + FORM_OVERHEAD
    assert _nginx_size_mb(conf, "client_max_body_size") * 2**20 > server_max_body
    timeouts = re.findall(r"proxy_(?:read|send)_timeout\s+(\d+)s;", conf)
    assert len(timeouts) == 2
    assert all(int(t) > _default("processing_timeout_s") for t in timeouts)
    assert re.search(r"server\s+server:8000;", conf)


# --- deploy/bentocloud.yaml ---------------------------------------------------------------


@pytest.fixture(scope="module")
def cloud() -> dict[str, Any]:
    return _yaml(REPO_ROOT / "deploy" / "bentocloud.yaml")


def _unknown_keys(data: dict[str, Any], schema: type) -> set[str]:
    """BentoML's deployment schemas ignore unknown keys; a typo would be dropped silently."""
    return set(data) - {field.name for field in attr.fields(schema)}


def test_bentocloud_config_fits_bentomls_deployment_schema(cloud: dict[str, Any]) -> None:
    config = {key: value for key, value in cloud.items() if key != "cluster"}
    schema = bentoml_cattr.structure(config, CreateDeploymentSchema)
    DeploymentAPI._fix_and_validate_schema(schema)  # min <= max replicas, max > 0
    assert _unknown_keys(config, CreateDeploymentSchema) == set()
    for service in cloud["services"].values():
        assert _unknown_keys(service, DeploymentServiceConfig) == set()
        assert _unknown_keys(service["scaling"], DeploymentTargetHPAConf) == set()
        assert _unknown_keys(service["scaling"].get("policy", {}), HPAPolicy) == set()


def test_bentocloud_config_deploys_this_bento_and_all_its_services(cloud: dict[str, Any]) -> None:
    assert cloud["bento"].split(":")[0] == _yaml(REPO_ROOT / "bentofile.yaml")["name"]
    assert set(cloud["services"]) == _services_in_code()


def test_bentocloud_config_puts_models_on_gpus_and_redis_in_a_secret(
    cloud: dict[str, Any],
) -> None:
    instance_types = {name: s["instance_type"] for name, s in cloud["services"].items()}
    assert instance_types.pop("inpaint_anything").startswith("cpu.")
    assert all(kind.startswith("gpu.") for kind in instance_types.values())
    envs = {env["name"]: env["value"] for env in cloud["envs"]}
    # REDIS_URL and WEBHOOK_SECRET come from secrets. Anonymous only as far as the server's
    # own keys go: BentoCloud's token guards every route.
    assert envs == {"ENVIRONMENT": "production", "ALLOW_ANONYMOUS": "true"}
    assert cloud["secrets"] == ["inpaint-redis", "inpaint-secrets"]
    assert cloud["access_authorization"] is True
