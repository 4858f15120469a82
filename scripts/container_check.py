"""The body of scripts/container_check.sh: build both images, run each, then compose with two
replicas behind nginx; print one JSON summary.

Every check records what it saw (status codes, seconds, bytes), so that the summary says why
a check failed.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
BENTOML = Path(sys.executable).parent / "bentoml"
COMPOSE_FILE = "docker/docker-compose.yml"
PROJECT = "inpaintcheck"
PHOTO = REPO_ROOT / "examples/remove/dog.jpg"
CLICK = {"point_coords": [[200, 450]], "point_labels": [1]}
IMAGES = {"bento": "inpaint-anything:bento", "docker": "inpaint-anything:docker"}
PORTS = {"bento": 3000, "docker": 8000}  # what each image serves on with no arguments
NICE = ["nice", "-n", "15"]


def log(message: str) -> None:
    print(f"container_check: {message}", file=sys.stderr, flush=True)


def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    log("$ " + " ".join(cmd))
    kwargs.setdefault("check", True)
    if not kwargs.get("capture_output"):
        kwargs.setdefault("stdout", sys.stderr)  # stdout is the JSON summary's alone
    return subprocess.run(cmd, text=True, **kwargs)


def timed(cmd: list[str], **kwargs: Any) -> float:
    start = time.monotonic()
    run(cmd, **kwargs)
    return round(time.monotonic() - start, 1)


def image_size(tag: str) -> int:
    out = run(["docker", "image", "inspect", "-f", "{{.Size}}", tag], capture_output=True)
    return int(out.stdout.strip())


def wait_for(probe: Callable[[], bool], timeout_s: float, every_s: float = 2.0) -> float | None:
    """Seconds until `probe()` is true, or None after `timeout_s`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        try:
            if probe():
                return round(time.monotonic() - start, 1)
        except httpx.HTTPError:
            pass
        time.sleep(every_s)
    return None


# --- builds ------------------------------------------------------------------------------


def build_bento(work: Path) -> dict[str, Any]:
    """`bentoml build` with the tiny models in a fresh store, then `bentoml containerize`."""
    env = {**os.environ, "BENTOML_HOME": str(work / "bentoml")}
    start = time.monotonic()
    run([sys.executable, "scripts/import_models.py", "tiny"], env=env, cwd=REPO_ROOT)
    out = run([str(BENTOML), "build", "-o", "tag"], env=env, cwd=REPO_ROOT, capture_output=True)
    tag = out.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    bento_s = round(time.monotonic() - start, 1)
    containerize = [str(BENTOML), "containerize", tag, "-t", IMAGES["bento"]]
    # The host network for the RUN steps (pip, uv and apt reach their registries here only so).
    containerize += ["--backend", "docker", "--opt", "network=host"]
    build_s = timed(NICE + containerize, env=env, cwd=REPO_ROOT)
    return {"bento_tag": tag, "bento_build_s": bento_s, "build_s": build_s}


def build_dockerfile() -> dict[str, Any]:
    cmd = ["docker", "build", "--network", "host", "-f", "docker/Dockerfile"]
    cmd += ["--build-arg", "BAKE_MODELS=tiny", "-t", IMAGES["docker"], "."]
    return {"build_s": timed(NICE + cmd, cwd=REPO_ROOT)}


# --- one image ----------------------------------------------------------------------------


def refuses_production_without_keys(tag: str) -> dict[str, Any]:
    """The images default to ENVIRONMENT=production: with no API_KEYS they must not serve."""
    name = f"ia-check-refuse-{tag.split(':')[1]}"
    run(["docker", "rm", "-f", name], check=False, capture_output=True)
    try:
        out = run(
            ["docker", "run", "--name", name, tag], check=False, capture_output=True, timeout=300
        )
        said = "needs API_KEYS" in out.stdout + out.stderr
        return {"pass": out.returncode != 0 and said, "exit_code": out.returncode, "message": said}
    except subprocess.TimeoutExpired:
        return {"pass": False, "error": "still running after 300 s"}
    finally:
        run(["docker", "rm", "-f", name], check=False, capture_output=True)


def check_image(kind: str) -> dict[str, Any]:
    tag, port = IMAGES[kind], PORTS[kind]
    name, host_port = f"ia-check-{kind}", 18000 + port % 1000
    result: dict[str, Any] = {"image": tag, "size_bytes": image_size(tag)}
    result["size_mb"] = round(result["size_bytes"] / 2**20)
    result["refuses_production_without_keys"] = refuses_production_without_keys(tag)
    run(["docker", "rm", "-f", name], check=False, capture_output=True)
    # Tiny demo models: in production /ready stays 503 on purpose, so development here.
    cmd = ["docker", "run", "-d", "--name", name, "-p", f"127.0.0.1:{host_port}:{port}"]
    cmd += ["-e", "ENVIRONMENT=development", tag]
    start = time.monotonic()
    run(cmd, capture_output=True)
    url = f"http://127.0.0.1:{host_port}"
    try:
        with httpx.Client(base_url=url, timeout=300) as client:
            ready_s = wait_for(lambda: client.get("/api/v1/ready").status_code == 200, 1800)
            result["run_to_ready_s"] = (
                round(time.monotonic() - start, 1) if ready_s is not None else None
            )
            result["ready"] = {"pass": ready_s is not None}
            uid = run(["docker", "exec", name, "id", "-u"], capture_output=True).stdout.strip()
            user = run(["docker", "inspect", "-f", "{{.Config.User}}", name], capture_output=True)
            result["non_root"] = {"pass": uid != "0", "uid": uid, "user": user.stdout.strip()}
            result["remove"] = post_remove(client)
            page = client.get("/")
            result["editor"] = {
                "pass": page.status_code == 200 and "<html" in page.text.lower(),
                "status": page.status_code,
                "bytes": len(page.content),
            }
    except Exception as exc:  # the summary says what broke; the others still run
        result["error"] = repr(exc)
    finally:
        logs = run(["docker", "logs", "--tail", "30", name], check=False, capture_output=True)
        result["log_tail"] = (logs.stdout + logs.stderr).splitlines()[-30:]
        run(["docker", "rm", "-f", name], check=False, capture_output=True)
    checks = ("ready", "non_root", "remove", "editor", "refuses_production_without_keys")
    result["pass"] = all(result.get(c, {}).get("pass") for c in checks)
    if result["pass"]:
        result.pop("log_tail")
    return result


def post_remove(client: httpx.Client, key: str | None = None) -> dict[str, Any]:
    files = {"image": (PHOTO.name, PHOTO.read_bytes(), "image/jpeg")}
    headers = {"X-API-Key": key} if key else {}
    start = time.monotonic()
    response = client.post(
        "/api/v1/remove", files=files, data={"request": json.dumps(CLICK)}, headers=headers
    )
    body = (
        response.json()
        if response.headers.get("content-type", "").startswith("application/json")
        else {}
    )
    return {
        "pass": response.status_code == 200 and body.get("success") is True,
        "status": response.status_code,
        "seconds": round(time.monotonic() - start, 2),
        "size": [body.get("metadata", {}).get("width"), body.get("metadata", {}).get("height")],
    }


# --- compose --------------------------------------------------------------------------------


def compose(work: Path, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return run(
        ["docker-compose", "-p", PROJECT, "-f", COMPOSE_FILE, *args], cwd=REPO_ROOT, **kwargs
    )


def check_compose(work: Path) -> dict[str, Any]:
    key = secrets.token_urlsafe(24)
    env_file = work / "inpaint.env"
    webhook = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    env_file.write_text(f"API_KEYS={key}\nWEBHOOK_SECRET={webhook}\n")
    os.environ.update(
        INPAINT_IMAGE=IMAGES["docker"],
        INPAINT_ENV_FILE=str(env_file),
        HOST_PORT="18080",
        PROMETHEUS_PORT="19090",
    )
    result: dict[str, Any] = {"replicas": 2, "environment": "production"}
    start = time.monotonic()
    try:
        # As a user's first `run --rm server scripts/download_models.sh` would: one container
        # fills the new models volume from the image. Two replicas created at once on an empty
        # volume race to copy it (docker: "failed to mkdir .../_data/...").
        compose(
            work,
            "run",
            "--rm",
            "--no-deps",
            "server",
            "python",
            "scripts/import_models.py",
            "check",
            timeout=600,
        )
        compose(work, "up", "-d", "--scale", "server=2", timeout=900)
        result["up_s"] = round(time.monotonic() - start, 1)
        ps = compose(work, "ps", "-q", "server", capture_output=True)
        result["server_containers"] = len(ps.stdout.split())
        with httpx.Client(base_url="http://127.0.0.1:18080", timeout=300) as client:
            health = wait_for(lambda: client.get("/api/v1/health").status_code == 200, 300)
            result["health_via_nginx"] = {"pass": health is not None}
            # Production: the demo models keep /ready at 503, so wait for every model to be
            # loaded (each replica converts them to OpenVINO at its first start: minutes).
            loaded = wait_for(lambda: _models_loaded(client), 1800, every_s=10)
            result["models_loaded_s"] = loaded
            ready = client.get("/api/v1/ready")
            result["ready_via_nginx"] = {
                "status": ready.status_code,
                "note": "503 expected: ENVIRONMENT=production with the tiny demo models",
            }
            anonymous = post_remove(client)
            result["key_required"] = {
                "pass": anonymous["status"] == 401,
                "status": anonymous["status"],
            }
            result["remove_with_key"] = post_remove(client, key)
            result["job_through_nginx"] = check_job(client, key)
        result["prometheus"] = check_prometheus(work)
    except Exception as exc:
        result["error"] = repr(exc)
    finally:
        logs = compose(work, "logs", "--tail", "20", check=False, capture_output=True)
        result["log_tail"] = (logs.stdout + logs.stderr).splitlines()[-40:]
        compose(work, "--profile", "monitoring", "down", "-v", "--remove-orphans", check=False)
    required = ("health_via_nginx", "key_required", "remove_with_key", "prometheus")
    result["pass"] = all(result.get(c, {}).get("pass") for c in required)
    job = result.get("job_through_nginx", {})
    result["pass"] = result["pass"] and job.get("pass", False)
    if result["pass"]:
        result.pop("log_tail")
    return result


def _models_loaded(client: httpx.Client) -> bool:
    """Every runner of both replicas (two answers in a row: nginx alternates) loaded."""
    for _ in range(2):
        models = client.get("/api/v1/ready", timeout=60).json().get("models", {})
        if not models or not all(m.get("loaded") for m in models.values()):
            return False
    return True


def check_job(client: httpx.Client, key: str) -> dict[str, Any]:
    """Submit a fill job through nginx, then poll its status and result through nginx: the
    calls alternate between the replicas (round robin), so each one must know the job."""
    headers = {"X-API-Key": key}
    request = {**CLICK, "text_prompt": "a teddy bear", "seed": 1, "num_inference_steps": 2}
    files = {"image": (PHOTO.name, PHOTO.read_bytes(), "image/jpeg")}
    submit = client.post(
        "/api/v1/jobs/fill", files=files, data={"request": json.dumps(request)}, headers=headers
    )
    if submit.status_code != 202:
        return {"pass": False, "submit_status": submit.status_code, "body": submit.text[:300]}
    job = submit.json()
    statuses, states = [], []
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        response = client.get(job["status_url"], headers=headers)
        statuses.append(response.status_code)
        if response.status_code == 200:
            states.append(response.json()["state"])
            if states[-1] in ("done", "failed", "cancelled"):
                break
        if (
            len(statuses) >= 6
            and statuses.count(404) * 2 >= len(statuses)
            and 200 not in statuses[-4:]
        ):
            break
        time.sleep(1)
    results = [client.get(job["result_url"], headers=headers).status_code for _ in range(4)]
    passed = 404 not in statuses and "done" in states and set(results) == {200}
    out: dict[str, Any] = {
        "pass": passed,
        "status_codes": statuses[:40],
        "states": states[-3:],
        "result_codes": results,
    }
    return out


def check_prometheus(work: Path) -> dict[str, Any]:
    """The monitoring profile's Prometheus (Grafana: no Debian package, not started here)."""
    # The same scale again: `up` of a service that depends on `server` would otherwise bring
    # `server` back to one replica (docker-compose 1.29 removed the second one here).
    up = ["up", "-d", "--no-recreate", "--scale", "server=2", "prometheus"]
    compose(work, "--profile", "monitoring", *up, timeout=300)
    seen: dict[str, str] = {}

    def both_up() -> bool:
        targets = httpx.get("http://127.0.0.1:19090/api/v1/targets", timeout=10).json()
        seen.clear()
        seen.update({t["scrapeUrl"]: t["health"] for t in targets["data"]["activeTargets"]})
        return len(seen) == 2 and set(seen.values()) == {"up"}

    waited = wait_for(both_up, 180, every_s=5)
    return {"pass": waited is not None, "targets": seen, "seconds": waited, "grafana": "not run"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bases", default="upstream", help="debian or upstream (for the summary)")
    parser.add_argument("--skip-build", action="store_true", help="use the images already built")
    parser.add_argument(
        "--only", choices=["images", "compose"], help="run one part (with --skip-build: a rerun)"
    )
    args = parser.parse_args()
    summary: dict[str, Any] = {
        "host": {"cpus": os.cpu_count(), "bases": args.bases},
        "docker": run(
            ["docker", "version", "-f", "{{.Server.Version}}"], capture_output=True
        ).stdout.strip(),
        "compose": run(
            ["docker-compose", "version", "--short"], capture_output=True
        ).stdout.strip(),
    }
    with tempfile.TemporaryDirectory(prefix="container-check-") as tmp:
        work = Path(tmp)
        builds: dict[str, Any] = {}
        if not args.skip_build:
            for kind, build in (("docker", build_dockerfile), ("bento", lambda: build_bento(work))):
                try:
                    builds[kind] = build()
                except subprocess.CalledProcessError as exc:
                    builds[kind] = {"error": f"{exc.cmd[:6]} exited {exc.returncode}"}
        summary["images"] = {}
        for kind in IMAGES if args.only != "compose" else ():
            entry = dict(builds.get(kind, {}))
            if "error" not in entry:
                entry.update(check_image(kind))
            summary["images"][kind] = entry
        version = summary.pop("compose")
        if args.only != "images":
            summary["compose"] = {"version": version, **check_compose(work)}
    parts = [*summary["images"].values(), *([summary["compose"]] if "compose" in summary else [])]
    summary["pass"] = all(part.get("pass") for part in parts)
    print(json.dumps(summary, indent=2))
    return 0 if summary["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
