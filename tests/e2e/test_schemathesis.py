"""Schema-generated requests (schemathesis) against a real `bentoml serve` on the tiny models.

Every route under /api/v1/ in the server's own /openapi.json gets generated requests from
schemathesis' positive (schema-valid) and negative (schema-invalid) strategies, with a fixed
seed; the four model routes a few hundred each. Checked: no response is a 5xx; every 4xx is in
our JSON error shape; a schema-valid request is accepted (2xx) unless it breaks a rule no JSON
schema can state (about the uploaded picture, such as a click outside the photo or SAM finding
nothing there, or relating two fields). File parts carry real photos (and masks of their size):
random bytes would only ever test the decoder, which tests/e2e/test_errors.py covers.

Every distinct failure is collected, so one run lists them all (route, status, error, input).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from PIL import Image
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi._hypothesis import FormBodyWithContentTypes
from schemathesis.specs.openapi.checks import positive_data_acceptance

from scripts.local_server import LocalServer, serving
from tests.e2e.conftest import SERVER_ENV

pytestmark = pytest.mark.e2e

# Cheap SD runs; a schema that states the limit keeps generated steps within it.
# One client sends every generated job: the per-key and server-wide job caps (429, 503, tested
# in test_scale_out.py) would refuse valid submits here, so they are out of the way.
FUZZ_ENV = {
    **SERVER_ENV,
    "MAX_INFERENCE_STEPS": "3",
    "DEFAULT_INFERENCE_STEPS": "2",
    "JOB_MAX_PER_KEY": "1000",
    "JOB_MAX_COUNT": "1000",
}
# (method, path, examples per generation mode). The upload routes carry the risk.
OPERATIONS = [
    ("POST", "/api/v1/segment", 160),
    ("POST", "/api/v1/remove", 140),
    ("POST", "/api/v1/fill", 120),
    ("POST", "/api/v1/replace", 120),
]
# Any other route under /api/v1/ (health, ready, and whatever is added later).
OTHER_EXAMPLES = {"GET": 5, "POST": 40}
MIN_REQUESTS = 1000
SEED = 20261128
# 422s for rules a JSON schema cannot state: about the uploaded picture, or relating two
# fields or parts. Anything else a schema-valid request is refused for is a finding.
UNSTATABLE_RULES = re.compile(
    r"outside the \d+x\d+ image|exceeds the \d+x\d+ image|is empty; click elsewhere"
    r"|give point_coords or box|either a mask or SAM prompts|x0 < x1 and y0 < y1"
    r"|point_labels has \d+ entries for \d+ points|point_labels given without point_coords"
    # SAM 3: what it finds in the picture, and mask_index (a SAM candidate) beside text.
    r"|nothing selected for text|mask_index picks one of SAM's candidates: not with text"
)


def _photo(width: int, height: int, fmt: str, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    gradient = np.linspace(0, 255, width * height * 3).reshape(height, width, 3)
    pixels = np.clip(gradient + rng.normal(0, 25, gradient.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def _mask(width: int, height: int) -> bytes:
    mask = np.zeros((height, width), np.uint8)
    mask[height // 4 : height // 2, width // 4 : width // 2] = 255
    buffer = io.BytesIO()
    Image.fromarray(mask).save(buffer, format="PNG")
    return buffer.getvalue()


PHOTOS = [(96, 64, "PNG", 1), (64, 80, "JPEG", 2), (120, 90, "WEBP", 3)]
UPLOADS = [(_photo(w, h, fmt, seed), _mask(w, h)) for w, h, fmt, seed in PHOTOS]


def _real_pictures(context: Any, body: Any) -> Any:
    """Real photos (and masks of their size) for the generated file bytes, and for every other
    request, clicks moved onto the photo: generated coordinates almost never fall on it."""
    if isinstance(body, FormBodyWithContentTypes):  # parts with an `encoding` content type
        return dataclasses.replace(body, body=_real_pictures(context, body.body))
    image = getattr(body, "get", lambda _: None)("image")
    image = getattr(image, "data", image)  # schemathesis' Binary for typed file parts
    if not isinstance(image, bytes | str):
        return body
    raw = image.encode() if isinstance(image, str) else image
    digest = hashlib.sha256(raw).digest()
    (width, height, *_), (photo, mask) = PHOTOS[digest[0] % len(PHOTOS)], UPLOADS[digest[0] % 3]
    mapped = {**body, "image": photo}
    if isinstance(body.get("mask"), list):
        mapped["mask"] = [mask for _ in body["mask"]]
    request = body.get("request")
    if (
        digest[1] % 2
        and isinstance(request, dict)
        and isinstance(request.get("point_coords"), list)
    ):
        points = request["point_coords"]
        if all(_is_point(p) for p in points):
            moved = [[abs(x) % width, abs(y) % height] for x, y in points]
            mapped["request"] = {**request, "point_coords": moved}
    return mapped


def _is_point(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    )


class Findings:
    """Requests sent and distinct failures, over the whole module."""

    def __init__(self) -> None:
        self.sent: dict[str, int] = {}
        self.statuses: dict[int, int] = {}
        self.failures: dict[tuple[str, ...], str] = {}

    def record(self, case: Any, response: Any, title: str) -> None:
        code, message = _error_of(response)
        if response.status_code == 422 and UNSTATABLE_RULES.search(message):
            return
        # One entry per route, kind of failure, status, error code and rule: the first input.
        key = (case.operation.label, title, str(response.status_code), code, _rule(message))
        if key not in self.failures:
            self.failures[key] = f"{message[:200]!r} for input {_describe(case)}"

    def report(self) -> str:
        return "\n".join(
            f"{label}: {title}, {status} {code}: {detail}"
            for (label, title, status, code, _), detail in sorted(self.failures.items())
        )


def _error_of(response: Any) -> tuple[str, str]:
    """The error code and message of our error body; ("-", text) for anything else."""
    try:
        body = response.json()
        error = body["error"]
        if body["success"] is False and set(body) == {
            "success",
            "request_id",
            "timestamp",
            "error",
        }:
            return str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        pass
    return "-", response.text[:200]


def _rule(message: str) -> str:
    """What a message is about, without the generated values in it."""
    field = re.match(r"invalid request: ([\w.]+: [^;]{0,40})", message)
    return field[1] if field else " ".join(message.split()[:3])


def _describe(case: Any) -> str:
    body = case.body
    if not isinstance(body, dict):
        return repr(body)[:200]
    shown = {
        key: (f"<{len(value)} bytes>" if isinstance(value, bytes) else value)
        for key, value in body.items()
    }
    if isinstance(shown.get("mask"), list):
        shown["mask"] = f"<{len(shown['mask'])} file(s)>"
    return json.dumps(shown, default=str, ensure_ascii=True)[:400]


@pytest.fixture(scope="module")
def fuzz_server(
    bentoml_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalServer]:
    log = tmp_path_factory.mktemp("fuzz") / "serve.log"
    with serving(bentoml_home, log, FUZZ_ENV) as running:
        yield running


@pytest.fixture(scope="module")
def api_schema(fuzz_server: LocalServer) -> Any:
    schema = schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")
    schema.config.update(base_url=fuzz_server.url, request_timeout=120)
    schema.hook("map_body")(_real_pictures)
    return schema


@pytest.fixture(scope="module")
def findings() -> Findings:
    return Findings()


def _fuzz(api_schema: Any, findings: Findings, operation: Any, examples: int) -> None:
    """`examples` positive and as many negative requests to `operation`, each judged."""
    label = operation.label

    def send(case: Any) -> None:
        response = case.call()
        findings.sent[label] = findings.sent.get(label, 0) + 1
        findings.statuses[response.status_code] = findings.statuses.get(response.status_code, 0) + 1
        if response.status_code >= 400 and _error_of(response)[0] == "-":
            findings.record(case, response, "Error not in our JSON shape")
        try:
            case.validate_response(response, checks=[not_a_server_error, positive_data_acceptance])
        except FailureGroup as group:
            for failure in group.exceptions:
                findings.record(case, response, failure.title)
        except Failure as failure:
            findings.record(case, response, failure.title)

    for index, mode in enumerate((GenerationMode.POSITIVE, GenerationMode.NEGATIVE)):
        strategy = operation.as_strategy(generation_mode=mode, hooks=api_schema.hooks)
        run = seed(SEED + index)(
            settings(
                max_examples=examples,
                deadline=None,
                database=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )(given(case=strategy)(send))
        )
        try:
            run()
        except Unsatisfiable:
            # No schema-invalid request exists for a route without parameters.
            assert mode is GenerationMode.NEGATIVE, label
    assert findings.sent.get(label, 0) > 0


@pytest.mark.parametrize(("method", "path", "examples"), OPERATIONS)
def test_generated_requests(
    api_schema: Any, findings: Findings, method: str, path: str, examples: int
) -> None:
    _fuzz(api_schema, findings, api_schema[path][method], examples)


def test_generated_requests_on_the_other_routes(api_schema: Any, findings: Findings) -> None:
    listed = {(method, path) for method, path, _ in OPERATIONS}
    others = [
        operation
        for result in api_schema.get_all_operations()
        if (operation := result.ok()).path.startswith("/api/v1/")
        and (operation.method.upper(), operation.path) not in listed
    ]
    assert {op.label for op in others} >= {"GET /api/v1/health", "GET /api/v1/ready"}
    for operation in others:
        _fuzz(api_schema, findings, operation, OTHER_EXAMPLES.get(operation.method.upper(), 5))


def test_no_5xx_and_no_schema_valid_request_rejected(findings: Findings) -> None:
    """Runs after the generated requests (pytest keeps file order) and judges all of them."""
    total = sum(findings.sent.values())
    seen = f"{total} requests {findings.sent}, statuses {dict(sorted(findings.statuses.items()))}"
    assert total >= MIN_REQUESTS, seen
    assert not findings.failures, f"{seen}; {len(findings.failures)} distinct failures:\n" + (
        findings.report()
    )
