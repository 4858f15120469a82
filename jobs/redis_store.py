"""Jobs in Redis, shared by every entry replica; run by streaq workers, one per replica.

What streaq does (docs/jobs.md): the queue (a Redis stream with a consumer group), handing a
job to one worker, renewing the claim of running jobs, giving a job whose worker died to
another after its idle timeout (JOB_RECLAIM_S), and aborts. What this module keeps beside it,
under `inpaint:jobs:`: the job record (owner, state, error), the upload bytes until the job
ends, the result document, per-owner and server-wide counts, and idempotency keys.

Every end of a job goes through one Lua script that records it only if no end was recorded
yet: the first finish wins, a job never has two results, and its counts are released once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from http import HTTPStatus
from typing import Any

import anyio
from redis.exceptions import RedisError
from streaq import StreaqRetry, Worker

from jobs.limits import JobLimits
from jobs.model import (
    FINISHED,
    Canceller,
    Execute,
    IdempotencyConflictException,
    JobRecord,
    JobRunnerLostException,
    ProgressSource,
    Submission,
    cancelled,
    error_document,
    not_done,
    not_found,
)
from jobs.store import run_one
from utils.breaker import Breaker, BreakerOpen
from utils.exceptions import InpaintError
from utils.job_keys import PREFIX, cancel_key, progress_key

logger = logging.getLogger("inpaint.jobs")
QUEUE = "inpaint-jobs"
TASK = "inpaint_job"
STARTUP_WAIT_S = 10.0
OUTSTANDING = PREFIX + "outstanding"  # set of queued or running job ids
HELD_BYTES = PREFIX + "bytes"  # upload bytes those jobs hold
UPLOAD_BYTES_PER_S = 50e6  # extra Redis budget for writing an upload
Finished = Callable[[JobRecord, dict[str, Any] | None], None]


class JobStoreUnavailableException(InpaintError):
    status = HTTPStatus.SERVICE_UNAVAILABLE
    code = "job_store_unavailable"


def job_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def files_key(job_id: str) -> str:
    return f"{PREFIX}files:{job_id}"


def result_key(job_id: str) -> str:
    return f"{PREFIX}result:{job_id}"


def owner_key(owner: str) -> str:
    return f"{PREFIX}owner:{owner}"


# KEYS: owner set, outstanding set, held bytes. ARGV: id, per-owner cap, server cap, byte
# budget, bytes. Returns 0 (admitted), or 1, 2, 3 (which cap) with the counts.
RESERVE = """
local mine = redis.call('SCARD', KEYS[1])
local all = redis.call('SCARD', KEYS[2])
local held = tonumber(redis.call('GET', KEYS[3]) or '0')
if mine >= tonumber(ARGV[2]) then return {1, mine, all, held} end
if all >= tonumber(ARGV[3]) then return {2, mine, all, held} end
if held + tonumber(ARGV[5]) > tonumber(ARGV[4]) then return {3, mine, all, held} end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('INCRBY', KEYS[3], ARGV[5])
return {0, mine, all, held}
"""

# KEYS: job hash, result, owner set, outstanding set, held bytes, files.
# ARGV: id, state, result document or '', error JSON or '', now, ttl.
FINISH = """
if redis.call('EXISTS', KEYS[2]) == 1 or redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[6])
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'updated_at', ARGV[5], 'error', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[6])
if redis.call('SREM', KEYS[4], ARGV[1]) == 1 then
  redis.call('DECRBY', KEYS[5], redis.call('HGET', KEYS[1], 'nbytes'))
end
redis.call('SREM', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[6])
return 1
"""

# KEYS: job hash, result. ARGV: now. A job moves to running only if it has not ended.
START = """
if redis.call('EXISTS', KEYS[2]) == 1 or redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'state', 'running', 'updated_at', ARGV[1])
return 1
"""


@contextlib.asynccontextmanager
async def _no_lifespan() -> AsyncIterator[None]:
    yield None


class _EmbeddedWorker(Worker):
    async def signal_handler(self, scope: anyio.CancelScope) -> None:
        """streaq 7.2 takes SIGINT/SIGTERM for itself (handle_signals is not read); inside
        the server the server owns the signals, and stops the worker by cancelling it."""
        await anyio.sleep_forever()


class RedisJobs:
    def __init__(
        self,
        url: str,
        limits: JobLimits,
        breaker: Breaker,
        progress: ProgressSource,
        cancel: Canceller,
        reclaim_s: float,
        max_tries: int,
        on_finish: Finished | None = None,
    ) -> None:
        import redis.asyncio as redis

        self.limits = limits
        self.breaker = breaker
        self.max_tries = max_tries
        self._progress = progress
        self._cancel = cancel
        self._on_finish = on_finish
        self._redis = redis.from_url(url, socket_connect_timeout=1.0)
        self._reserve = self._redis.register_script(RESERVE)
        self._finish_script = self._redis.register_script(FINISH)
        self._start = self._redis.register_script(START)

        def make_worker() -> _EmbeddedWorker:
            return _EmbeddedWorker(
                redis_url=url,
                queue_name=QUEUE,
                concurrency=limits.max_running,
                # streaq stores what a run returned or raised; ours return None, and an
                # aborted run's exception is kept as its repr.
                serializer=functools.partial(json.dumps, default=repr),
                deserializer=json.loads,
                lifespan=_no_lifespan,
                idle_timeout=reclaim_s,
            )

        # One worker runs jobs; a second, never run, is this process's client of the queue
        # (enqueue, abort): streaq's clients are workers entered as context managers.
        self.worker, self.client = make_worker(), make_worker()
        # streaq fetches 2x `concurrency` by default; a fetched job waits in that replica
        # until JOB_RECLAIM_S even when another replica is idle. Fetch only what can start.
        self.worker.prefetch = limits.max_running
        # streaq retries nothing by itself here: a run that ends records its own end, and a
        # run that never ends (its replica died) is reclaimed; the try count bounds those.
        self._task = self.worker.task(max_tries=None, ttl=int(limits.ttl_s), name=TASK)(self._run)
        self._execute: Execute | None = None
        self._tasks: list[asyncio.Task] = []
        self._client_ready = asyncio.Event()

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self, execute: Execute) -> None:
        self._execute = execute
        self._tasks = [
            asyncio.create_task(self._keep(self._hold_client), name="jobs-client"),
            asyncio.create_task(self._keep(self._run_worker), name="jobs-worker"),
        ]
        try:
            async with asyncio.timeout(STARTUP_WAIT_S):
                await self._client_ready.wait()
        except TimeoutError:
            logger.warning("job queue not reachable yet; jobs are refused until it is")

    async def _run_worker(self) -> None:
        # streaq enters the lifespan made at construction; a restart needs a fresh one.
        self.worker.lifespan = _no_lifespan()
        await self.worker.run_async()

    async def _hold_client(self) -> None:
        try:
            async with self.client:
                self._client_ready.set()
                await asyncio.Event().wait()
        finally:
            self._client_ready.clear()

    async def _keep(self, run: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        while True:
            try:
                await run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: try again; jobs wait in the stream
                logger.warning("job queue connection lost (%r); reconnecting in 1 s", exc)
            await asyncio.sleep(1.0)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self._redis.aclose()

    def health(self) -> dict[str, Any]:
        return {
            "store": "redis",
            "available": not self.breaker.is_open,
            "breaker_trips": self.breaker.trips,
        }

    # --- the API's calls ---------------------------------------------------------------------

    async def _call(self, work: Coroutine[Any, Any, Any], budget_s: float | None = None) -> Any:
        try:
            return await self.breaker.call(work, budget_s)
        except BreakerOpen as exc:
            raise JobStoreUnavailableException(
                f"the job store (Redis) does not answer; retry shortly ({exc})"
            ) from exc

    async def submit(self, submission: Submission) -> JobRecord:
        fingerprint = submission.fingerprint()
        idem = None
        if submission.idempotency_key:
            idem = f"{PREFIX}idem:{submission.owner}:{submission.idempotency_key}"
            known = await self._call(self._redis.get(idem))
            if known is not None:
                known_print, known_id = known.decode().split(" ", 1)
                if known_print != fingerprint:
                    raise IdempotencyConflictException(
                        "this Idempotency-Key was used with another request"
                    )
                return await self.get(known_id, submission.owner)
        job_id = secrets.token_urlsafe(12)
        code, mine, outstanding, held = await self._call(
            self._reserve(
                keys=[owner_key(submission.owner), OUTSTANDING, HELD_BYTES],
                args=[
                    job_id,
                    self.limits.max_per_owner,
                    self.limits.max_jobs,
                    self.limits.max_bytes,
                    submission.nbytes,
                ],
            )
        )
        if code:
            self.limits.check(int(mine), int(outstanding), int(held), submission.nbytes)
        record = JobRecord(
            id=job_id,
            route=submission.route,
            owner=submission.owner,
            request_id=submission.request_id,
            total_steps=submission.total_steps,
            webhook=submission.webhook,
            nbytes=submission.nbytes,
        )
        try:
            await self._write(record, submission, idem, fingerprint)
            await self._call(self._enqueue(job_id), self.breaker.budget_s * 4)
        except JobStoreUnavailableException:
            await self._end(record, "failed", None, error_document(_unqueued(job_id)))
            raise
        logger.info("job %s (%s, request %s) queued", job_id, record.route, record.request_id)
        return record

    async def _enqueue(self, job_id: str) -> None:
        if not self._client_ready.is_set():
            raise ConnectionError("not connected to the job queue")
        await self.client.enqueue_unsafe(TASK, job_id)

    async def _write(
        self, record: JobRecord, submission: Submission, idem: str | None, fingerprint: str
    ) -> None:
        # Until it ends, a job is kept as long as it may wait and run; then for JOB_TTL_S.
        pending_ttl = int(self.limits.ttl_s) * 24
        budget = self.breaker.budget_s + submission.nbytes / UPLOAD_BYTES_PER_S
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                job_key(record.id),
                mapping={
                    "record": record.to_json(),
                    "request": json.dumps(submission.request),
                    "state": "queued",
                    "updated_at": record.updated_at,
                    "error": "",
                    "nbytes": record.nbytes,
                },
            )
            pipe.expire(job_key(record.id), pending_ttl)
            pipe.hset(files_key(record.id), mapping=submission.files)
            pipe.expire(files_key(record.id), pending_ttl)
            if idem is not None:
                pipe.set(idem, f"{fingerprint} {record.id}", ex=int(self.limits.ttl_s), nx=True)
            await self._call(pipe.execute(), budget)

    async def get(self, job_id: str, owner: str) -> JobRecord:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(job_key(job_id))
            pipe.get(progress_key(job_id))
            fields, progress = await self._call(pipe.execute())
        record = _record(fields)
        if record is None or record.owner != owner:
            raise not_found(job_id, self.limits.ttl_s)
        if record.state in ("running", "cancelled"):
            if progress is not None:
                record.apply_progress(json.loads(progress))
            elif record.state == "running":
                record.apply_progress(await self._local_progress(job_id))
        return record

    async def _local_progress(self, job_id: str) -> dict[str, Any] | None:
        try:
            async with asyncio.timeout(2):
                return await self._progress(job_id)
        except Exception as exc:  # best effort: the job itself is unaffected
            logger.debug("progress of job %s unavailable: %r", job_id, exc)
            return None

    async def result(self, job_id: str, owner: str) -> tuple[dict[str, Any], str]:
        record = await self.get(job_id, owner)
        if record.state == "cancelled":
            raise cancelled(job_id)
        if record.state == "failed":
            raise record.failure()
        if record.state != "done":
            raise not_done(record)
        raw = await self._call(self._redis.get(result_key(job_id)), self.breaker.budget_s * 20)
        if not raw:
            raise not_found(job_id, self.limits.ttl_s)
        return json.loads(raw), record.request_id

    async def cancel(self, job_id: str, owner: str) -> JobRecord:
        record = await self.get(job_id, owner)
        if record.state in FINISHED:
            return record
        await self._call(self._redis.set(cancel_key(job_id), 1, ex=int(self.limits.ttl_s)))
        await self._end(record, "cancelled", None, None)
        # streaq cancels the run wherever it is (its worker checks aborts every 0.5 s), or
        # drops it unrun; the SD runner stops at its next step (cancel key, or told directly).
        await self._call(self.client.abort_by_id(job_id, timeout=0), self.breaker.budget_s * 4)
        try:
            async with asyncio.timeout(2):
                await self._cancel(job_id)
        except Exception as exc:
            logger.debug("could not tell the local SD runner to stop job %s: %r", job_id, exc)
        logger.info("job %s cancelled at step %d of %d", job_id, record.step, record.total_steps)
        return await self.get(job_id, owner)

    # --- the worker side ---------------------------------------------------------------------

    async def _run(self, job_id: str) -> None:
        """streaq's task: run the job once; its end is recorded by `_end` (first one wins).
        If Redis fails around the run, streaq runs it again later (a try like any other)."""
        try:
            await self._run_once(job_id)
        except (OSError, RedisError) as exc:
            logger.warning("job %s: Redis failed around its run (%r); retrying", job_id, exc)
            raise StreaqRetry(str(exc), delay=5) from exc

    async def _run_once(self, job_id: str) -> None:
        assert self._execute is not None, "start() the store before jobs run"
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(job_key(job_id))
            pipe.hgetall(files_key(job_id))
            fields, files = await pipe.execute()
        record = _record(fields)
        if record is None or record.state in FINISHED:
            return  # cancelled (or expired) before it ran
        tries = self._task.context.tries
        if tries > self.max_tries:
            lost = JobRunnerLostException(
                f"the replicas running job {job_id} died {tries - 1} times; it will not be "
                "tried again"
            )
            await self._end(record, "failed", None, error_document(lost))
            return
        logger.info("job %s runs here (worker %s, try %d)", job_id, self.worker.id, tries)
        if not await self._start(keys=[job_key(job_id), result_key(job_id)], args=[time.time()]):
            return
        request = json.loads(fields[b"request"])
        uploads = {name.decode(): data for name, data in files.items()}
        result, error = await run_one(self._execute, record, request, uploads)
        await self._end(record, "failed" if error else "done", result, error)

    async def _end(
        self,
        record: JobRecord,
        state: str,
        result: dict[str, Any] | None,
        error: dict[str, Any] | None,
    ) -> bool:
        """Record the job's end unless one was recorded already; True when this one was."""
        document = json.dumps(result) if result is not None else json.dumps({"state": state})
        won = await self._finish_script(
            keys=[
                job_key(record.id),
                result_key(record.id),
                owner_key(record.owner),
                OUTSTANDING,
                HELD_BYTES,
                files_key(record.id),
            ],
            args=[
                record.id,
                state,
                document,
                json.dumps(error) if error else "",
                time.time(),
                int(self.limits.ttl_s),
            ],
        )
        if won:
            record.state, record.error, record.updated_at = state, error, time.time()  # type: ignore[assignment]
            logger.info("job %s %s", record.id, state)
            if self._on_finish is not None:
                self._on_finish(record, result)
        else:
            logger.info("job %s had ended already; this %s is dropped", record.id, state)
        return bool(won)


def _record(fields: dict[bytes, bytes]) -> JobRecord | None:
    if not fields or b"record" not in fields:
        return None
    record = JobRecord.from_json(fields[b"record"])
    record.state = fields[b"state"].decode()  # type: ignore[assignment]
    record.updated_at = float(fields[b"updated_at"])
    error = fields.get(b"error")
    record.error = json.loads(error) if error else None
    return record


def _unqueued(job_id: str) -> InpaintError:
    return JobStoreUnavailableException(f"job {job_id} could not be queued: Redis did not answer")
