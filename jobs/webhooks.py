"""A job's `webhook`: checked on submit, called once when the job finishes, signed per the
Standard Webhooks spec (webhook-id, webhook-timestamp, webhook-signature: HMAC-SHA256 with
WEBHOOK_SECRET, `whsec_<base64>`), retried with exponential backoff."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from standardwebhooks.webhooks import Webhook
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from utils.exceptions import ValidationException

logger = logging.getLogger("inpaint.jobs")


class WebhookRejected(Exception):
    """The receiver answered 4xx (not 408/429): retrying will not help."""


async def check_target(url: str, allow_private: bool, secret: str) -> str:
    """The webhook URL if acceptable; else 422. Private and loopback targets (where the
    server itself lives) need WEBHOOK_ALLOW_PRIVATE=true."""
    if not secret:
        raise ValidationException("webhooks need WEBHOOK_SECRET on the server; none is set")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationException(f"webhook must be an http(s) URL, got {url!r}")
    if allow_private:
        return url
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            parts.hostname, parts.port or 443, type=socket.SOCK_STREAM
        )
    except OSError as exc:
        raise ValidationException(f"webhook host {parts.hostname!r} does not resolve") from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise ValidationException(
                f"webhook host {parts.hostname!r} is a private or loopback address ({address}); "
                "set WEBHOOK_ALLOW_PRIVATE=true to allow it"
            )
    return url


def signed_headers(secret: str, message_id: str, body: str) -> dict[str, str]:
    now = datetime.now(UTC)
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, now, body),
    }


async def deliver(
    url: str,
    message_id: str,
    document: dict[str, Any],
    secret: str,
    timeout_s: float,
    attempts: int,
) -> bool:
    """POST the document until a 2xx (True), a 4xx refusal or the last attempt (False).
    Each attempt is signed afresh (the timestamp is part of the signature)."""
    body = json.dumps(document)
    retrying = AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=0.5, max=30),
        retry=retry_if_exception_type(httpx.HTTPError),
        reraise=True,
    )
    try:
        async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False) as client:
            async for attempt in retrying:
                with attempt:
                    response = await client.post(
                        url, content=body, headers=signed_headers(secret, message_id, body)
                    )
                    if response.status_code in (408, 429) or response.status_code >= 500:
                        response.raise_for_status()
                    if response.status_code >= 400:
                        raise WebhookRejected(f"{response.status_code}")
    except (httpx.HTTPError, WebhookRejected) as exc:
        logger.warning("webhook %s for %s not delivered: %r", message_id, url, exc)
        return False
    logger.info("webhook %s delivered to %s", message_id, url)
    return True
