"""The monitoring files agree with the code: the scrape config targets the compose server, and
the Grafana dashboard queries only metrics that the server exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO_ROOT
from utils.metrics import Metrics, metrics

DEPLOY = REPO_ROOT / "deploy"
DOCKER = REPO_ROOT / "docker"
SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
}
# BentoML's own metrics that the dashboard shows (BentoML 1.4's names).
BENTOML_METRICS = {
    "bentoml_service_request_duration_seconds_bucket",
    "bentoml_service_request_in_progress",
}


def _yaml(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def _exported_names() -> set[str]:
    m = metrics()
    names = set()
    for field in Metrics.__dataclass_fields__:
        for family in getattr(m, field).describe():
            names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
    return names


def test_prometheus_scrapes_every_compose_server_replica() -> None:
    (job,) = _yaml(DEPLOY / "prometheus.yml")["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    # DNS discovery: one target per replica that the service name resolves to.
    (lookup,) = job["dns_sd_configs"]
    ((host,),) = [lookup["names"]]
    compose = _yaml(DOCKER / "docker-compose.yml")
    assert host in compose["services"] and lookup["type"] == "A"
    assert compose["services"][host]["expose"] == [str(lookup["port"])]


def test_compose_monitoring_mounts_the_shipped_files() -> None:
    services = _yaml(DOCKER / "docker-compose.yml")["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
    sources = {
        (DOCKER / volume.split(":")[0]).resolve(): volume.split(":")[1]
        for name in ("prometheus", "grafana")
        for volume in services[name]["volumes"]
        if volume.startswith("..")
    }
    assert sources[DEPLOY / "prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    (provider,) = _yaml(DEPLOY / "grafana/provisioning/dashboards/inpaint-anything.yml")[
        "providers"
    ]
    dashboard_target = sources[DEPLOY / "grafana/inpaint-anything.json"]
    assert Path(dashboard_target).parent == Path(provider["options"]["path"])
    (source,) = _yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")["datasources"]
    assert source["url"] == "http://prometheus:9090"


def test_dashboard_queries_only_exported_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana/inpaint-anything.json").read_text())
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for expr in expressions for name in re.findall(r"\b(?:inpaint|bentoml)_\w+", expr)}
    exported = _exported_names()
    assert used - BENTOML_METRICS <= exported, used - BENTOML_METRICS - exported
    # Every metric of ours is on the dashboard.
    assert {name.rsplit("_", 1)[0] for name in exported if name.endswith(("_sum", "_total"))} <= {
        name.rsplit("_", 1)[0] for name in used
    }
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
