"""Drive the server over the work list: bounded concurrency, files read and written off the
request path, atomic outputs, and a clean stop on Ctrl+C.

Each photo is read before it takes one of the server's slots and written after it gave the
slot back, so the server always has the next photo waiting. A result becomes visible only
once complete (temp file, fsync, rename); a re-run skips photos whose result exists.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from pathlib import Path
from typing import Any

import httpx

from batch.plan import Item
from batch.report import Counts, Record, Reporter
from batch.server import BatchClient, Refused, to_completion

PARTIAL = ".partial"


class Interrupted(Exception):
    """Cancelled after the photo's result was saved: its record still goes in the report."""

    def __init__(self, record: Record) -> None:
        super().__init__(record.file)
        self.record = record


def write_atomic(path: Path, data: bytes) -> None:
    """`path` holds either its old content or all of `data`, never part of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}{PARTIAL}")
    try:
        with temp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def remove_partials(output_dir: Path) -> None:
    """Temp files a killed run left behind (never a result: results are renamed whole)."""
    if output_dir.is_dir():
        for stale in output_dir.rglob(f".*{PARTIAL}"):
            stale.unlink(missing_ok=True)


def _save(item: Item, body: dict[str, Any]) -> None:
    if item.mask_output is not None:
        write_atomic(item.mask_output, base64.b64decode(body["mask"]))
    write_atomic(item.output, base64.b64decode(body["image"]))  # last: it marks the photo done


def _read(item: Item) -> tuple[bytes, bytes | None]:
    image = item.source.read_bytes()
    return image, item.mask.read_bytes() if item.mask is not None else None


def _failure(item: Item, started: float, code: str, message: str) -> Record:
    return Record(
        item.file, "failed", item.operation, code, message, round(time.monotonic() - started, 3)
    )


async def run_batch(
    items: list[Item],
    client: BatchClient,
    reporter: Reporter,
    output_dir: Path,
    overwrite: bool = False,
    concurrency: int | None = None,
) -> Counts:
    """Every item done, failed or skipped (recorded as it happens); on cancellation (Ctrl+C)
    the jobs in flight are cancelled and the counts say how many were not done."""
    assert client.info is not None, "connect() first"
    info = client.info
    await asyncio.to_thread(remove_partials, output_dir)
    todo: list[Item] = []
    for item in items:
        if item.problem is not None:
            reporter.record(
                Record(item.file, "failed", item.operation, item.problem.code, item.problem.message)
            )
        elif not overwrite and item.output.exists():
            reporter.record(Record(item.file, "skipped", item.operation, output=str(item.output)))
        else:
            todo.append(item)
    kinds = {info.slots(item.operation) for item in todo}
    sizes = {kind: concurrency or info.concurrency[kind] for kind in kinds}
    slots = {kind: asyncio.Semaphore(size) for kind, size in sizes.items()}
    if todo:
        described = ", ".join(f"{size} {kind}" for kind, size in sorted(sizes.items()))
        source = "--concurrency" if concurrency else "server capacity"
        reporter.note(f"{len(todo)} photos to do, {described} in flight ({source})")
    queue: asyncio.Queue[Item] = asyncio.Queue()
    for item in todo:
        queue.put_nowait(item)

    async def worker() -> None:
        while not queue.empty():
            item = queue.get_nowait()
            await _one(item, client, slots[info.slots(item.operation)], reporter)

    # Twice the slots: the extra workers hold the next photos, already read, for a free slot.
    workers = [asyncio.create_task(worker()) for _ in range(2 * sum(sizes.values()))]
    try:
        await asyncio.gather(*workers)
    except asyncio.CancelledError:  # gather has cancelled the workers; let them finish
        await asyncio.gather(*workers, return_exceptions=True)
        reporter.counts.interrupted = True
    counts = reporter.counts
    counts.not_started = len(items) - counts.succeeded - counts.failed - counts.skipped
    return counts


async def _one(
    item: Item, client: BatchClient, slot: asyncio.Semaphore, reporter: Reporter
) -> None:
    try:
        reporter.record(await _attempt(item, client, slot))
    except Interrupted as saved:
        reporter.record(saved.record)
        raise asyncio.CancelledError from None


async def _attempt(item: Item, client: BatchClient, slot: asyncio.Semaphore) -> Record:
    """The photo's record; if cancelled once its result is here, it is saved first."""
    started = time.monotonic()
    try:
        image, mask = await asyncio.to_thread(_read, item)
    except OSError as exc:
        return _failure(item, started, "read_error", str(exc))
    try:
        async with slot:
            body = await client.process(item.operation, image, item.request, mask)
    except Refused as exc:
        return _failure(item, started, exc.code, f"{exc.status}: {exc.message}")
    except httpx.TimeoutException as exc:
        return _failure(item, started, "timeout", f"no answer in time: {exc!r}")
    except httpx.HTTPError as exc:
        return _failure(item, started, "connection_error", repr(exc))
    except (ValueError, KeyError, TypeError) as exc:  # a 2xx that is not our JSON (a proxy's)
        return _failure(item, started, "bad_response", repr(exc))
    del image, mask
    # Once the answer is here it is kept: an interrupt waits for the (short) write.
    try:
        await to_completion(asyncio.to_thread(_save, item, body))
    except asyncio.CancelledError:
        if item.output.exists():  # saved before the cancellation took effect
            raise Interrupted(_done(item, started)) from None
        raise
    except (OSError, KeyError, ValueError) as exc:
        return _failure(item, started, "write_error", repr(exc))
    return _done(item, started)


def _done(item: Item, started: float) -> Record:
    seconds = round(time.monotonic() - started, 3)
    return Record(item.file, "done", item.operation, seconds=seconds, output=str(item.output))
