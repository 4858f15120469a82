"""Webhook targets, signatures (Standard Webhooks), retries; Prefer: wait parsing; the breaker."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from standardwebhooks.webhooks import Webhook

from jobs.http import prefer_wait
from jobs.webhooks import check_target, deliver
from utils.breaker import Breaker, BreakerOpen
from utils.exceptions import ValidationException

pytestmark = pytest.mark.anyio
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


class Receiver(BaseHTTPRequestHandler):
    """Fails the first `failures` calls with 503, then records and accepts."""

    failures = 0
    received: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["content-length"]))
        if self.path.endswith("gone"):
            Receiver.received.append((dict(self.headers.items()), body))
            self.send_response(410)
        elif Receiver.failures > 0:
            Receiver.failures -= 1
            self.send_response(503)
        else:
            Receiver.received.append((dict(self.headers.items()), body))
            self.send_response(204)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    Receiver.received, Receiver.failures = [], 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()


async def test_a_webhook_is_signed_and_retried(receiver: str) -> None:
    Receiver.failures = 2
    document = {"job_id": "j1", "state": "done"}
    assert await deliver(receiver, "job_j1", document, SECRET, 2.0, 5)
    assert len(Receiver.received) == 1
    headers, body = Receiver.received[0]
    lower = {k.lower(): v for k, v in headers.items()}
    assert lower["webhook-id"] == "job_j1"
    # The receiver's check, as the spec's reference library does it.
    assert Webhook(SECRET).verify(body, lower) == document
    assert json.loads(body) == document


async def test_a_refusing_receiver_is_not_retried(receiver: str) -> None:
    assert not await deliver(receiver + "gone", "job_j2", {}, SECRET, 2.0, 5)
    assert len(Receiver.received) == 1, "a 4xx refusal is final"
    assert not await deliver("http://127.0.0.1:9/nothing", "job_j3", {}, SECRET, 0.2, 2)


async def test_private_targets_need_the_setting() -> None:
    for url in ("http://127.0.0.1:8000/x", "http://10.0.0.5/x", "http://localhost/x"):
        with pytest.raises(ValidationException, match="WEBHOOK_ALLOW_PRIVATE"):
            await check_target(url, allow_private=False, secret=SECRET)
        assert await check_target(url, allow_private=True, secret=SECRET) == url
    with pytest.raises(ValidationException, match="http"):
        await check_target("ftp://example.com/x", allow_private=True, secret=SECRET)
    with pytest.raises(ValidationException, match="WEBHOOK_SECRET"):
        await check_target("http://127.0.0.1/x", allow_private=True, secret="")


def test_prefer_wait() -> None:
    assert prefer_wait(None) == 0 and prefer_wait("respond-async") == 0
    assert prefer_wait("wait=5") == 5 and prefer_wait("respond-async, wait=10") == 10
    assert prefer_wait("wait=600") == 60


async def test_the_breaker_bounds_a_frozen_call_and_then_skips_it() -> None:
    breaker = Breaker("store", budget_s=0.05, failures=2, open_s=0.3)
    started = time.monotonic()
    for _ in range(2):
        with pytest.raises(BreakerOpen):
            await breaker.call(asyncio.sleep(10))
    assert time.monotonic() - started < 0.5 and breaker.is_open and breaker.trips == 1
    started = time.monotonic()
    with pytest.raises(BreakerOpen):
        await breaker.call(asyncio.sleep(10))  # not even tried
    assert time.monotonic() - started < 0.01
    await asyncio.sleep(0.35)
    assert await breaker.call(asyncio.sleep(0, "ok")) == "ok" and not breaker.is_open
