"""One file over HTTP(S) with httpx: resumed from a `.part` file, retried, verified.

A reset connection, a timeout, 408/429 or a 5xx answer is retried (tenacity), each attempt
resuming with a Range request from the bytes already on disk; any other 4xx fails at once. The
file is checked (size, sha256, md5, and the sha256 the Hugging Face Hub announces for LFS files)
before it is renamed into place, so a file under its final name is always complete.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)
from tqdm import tqdm

log = logging.getLogger(__name__)

_HEX64 = re.compile(r"[0-9a-f]{64}")
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)")
_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A download that cannot succeed as asked: HTTP 4xx, bad checksum, retries exhausted."""


class _Transient(Exception):
    """An attempt failed in a way worth retrying."""


@dataclass
class _Announced:
    """What the Hub says of an LFS file (X-Linked-Etag, X-Linked-Size), on any answer."""

    sha256: str | None = None
    size: int | None = None


def download_file(
    url: str,
    dest: Path,
    *,
    expected_size: int | None = None,
    sha256: str | None = None,
    md5: str | None = None,
    client: httpx.Client | None = None,
    progress: bool = True,
    retries: int = 3,
    backoff_s: float = 1.0,
) -> Path:
    """Download `url` to `dest` through `dest.part`; skip it when `dest` already verifies.

    Retries `retries` times, waiting `backoff_s` seconds, doubling. Redirects are followed.
    """
    dest = Path(dest)
    if dest.is_file():
        problem = check_file(dest, expected_size, sha256, md5)
        if problem is None:
            log.info("%s already present and verified", dest)
            return dest
        log.warning("%s exists but %s; downloading it again", dest, problem)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    announced = _Announced()
    http = client or httpx.Client(
        follow_redirects=True,
        timeout=httpx.Timeout(60.0, connect=15.0),
        transport=httpx.HTTPTransport(retries=2),  # failed connects; read errors resume below
    )
    attempts = Retrying(
        retry=retry_if_exception_type(_Transient),
        stop=stop_after_attempt(retries + 1),
        wait=wait_exponential(multiplier=backoff_s),
        before_sleep=lambda state: _log_retry(url, state, retries),
        reraise=True,
    )
    try:
        attempts(_attempt, http, url, part, expected_size, announced, progress)
    except _Transient as exc:
        kept = part.stat().st_size if part.is_file() else 0
        resume = f"; rerun to resume from the {kept} bytes in {part}" if kept else ""
        raise DownloadError(
            f"{url}: giving up after {retries + 1} attempts ({exc}){resume}"
        ) from exc
    finally:
        if client is None:
            http.close()

    size = expected_size if expected_size is not None else announced.size
    problem = check_file(part, size, sha256 or announced.sha256, md5)
    if problem is not None:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{url}: {problem}")
    os.replace(part, dest)
    return dest


def _log_retry(url: str, state: RetryCallState, retries: int) -> None:
    error = state.outcome.exception() if state.outcome else None
    log.warning("%s: %s; retry %d/%d", url, error, state.attempt_number, retries)


def _attempt(
    http: httpx.Client,
    url: str,
    part: Path,
    expected_size: int | None,
    announced: _Announced,
    progress: bool,
) -> None:
    """One GET that brings `part` to the end of the resource, resuming when it has bytes."""
    offset = part.stat().st_size if part.is_file() else 0
    if expected_size is not None and offset > expected_size:
        part.unlink()
        offset = 0
    if offset and offset == expected_size:
        return
    # identity: offsets into a compressed body would not be offsets into the file.
    headers = {"Accept-Encoding": "identity"} | ({"Range": f"bytes={offset}-"} if offset else {})
    try:
        with http.stream("GET", url, headers=headers) as response:
            _note_announced(response, announced)
            offset = _resume_offset(response, url, part, offset)
            if offset is None:
                return
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length and length.isdigit() else None
            if expected_size is not None and total is not None and total != expected_size:
                part.unlink(missing_ok=True)
                raise DownloadError(f"{url}: server offers {total} bytes, expected {expected_size}")
            with (
                part.open("r+b" if offset else "wb") as out,
                _bar(part, total, offset, progress) as bar,
            ):
                out.seek(offset)
                out.truncate()
                for chunk in response.iter_bytes():  # as received: a cut keeps its bytes
                    out.write(chunk)
                    bar.update(len(chunk))
    except (httpx.UnsupportedProtocol, httpx.InvalidURL, httpx.TooManyRedirects) as exc:
        raise DownloadError(f"{url}: {exc}") from exc
    except httpx.TransportError as exc:
        raise _Transient(f"{type(exc).__name__}: {exc}") from exc


def _resume_offset(response: httpx.Response, url: str, part: Path, offset: int) -> int | None:
    """Where the body goes in `part` (None: `part` is already complete); raise for statuses
    that carry no body to keep."""
    status = response.status_code
    start, total = _content_range(response.headers.get("Content-Range"))
    if status == 416 and offset:
        if total == offset:
            return None
        part.unlink()
        raise _Transient(f"cannot resume at byte {offset} (HTTP 416)")
    if status in (408, 429) or status >= 500:
        raise _Transient(f"HTTP {status} {response.reason_phrase}")
    if status not in (200, 206):
        raise DownloadError(f"{url}: HTTP {status} {response.reason_phrase}")
    if status == 206 and start != offset:
        part.unlink()
        raise _Transient(f"server resumed at byte {start} instead of {offset}")
    return offset if status == 206 else 0  # 200: the server ignored Range; start over


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    match = _CONTENT_RANGE.fullmatch(value.strip()) if value else None
    if match is None:
        return None, None
    start, total = match.groups()
    return (int(start) if start else None), (int(total) if total != "*" else None)


def _note_announced(response: httpx.Response, announced: _Announced) -> None:
    """Keep the first sha256 and size announced, on the redirect or the final answer."""
    for answer in (*response.history, response):
        etag = answer.headers.get("X-Linked-Etag", "").removeprefix("W/").strip('"').lower()
        if announced.sha256 is None and _HEX64.fullmatch(etag):
            announced.sha256 = etag
        size = answer.headers.get("X-Linked-Size", "")
        if announced.size is None and size.isdigit():
            announced.size = int(size)


def _bar(part: Path, total: int | None, initial: int, enabled: bool) -> tqdm:
    return tqdm(
        total=total,
        initial=initial,
        desc=part.name.removesuffix(".part"),
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=not (enabled and sys.stderr.isatty()),
    )


def check_file(path: Path, size: int | None, sha256: str | None, md5: str | None) -> str | None:
    """None when `path` matches every given expectation, else what is wrong with it."""
    actual = path.stat().st_size
    if size is not None and actual != size:
        return f"size mismatch: expected {size} bytes, got {actual}"
    wanted = {name: value.lower() for name, value in (("sha256", sha256), ("md5", md5)) if value}
    digests = {name: hashlib.new(name) for name in wanted}
    if digests:
        with path.open("rb") as fh:  # one pass over a multi-GB file for both digests
            while chunk := fh.read(_CHUNK):
                for digest in digests.values():
                    digest.update(chunk)
    for name, expected in wanted.items():
        if (got := digests[name].hexdigest()) != expected:
            return f"{name} mismatch: expected {expected}, got {got}"
    return None
