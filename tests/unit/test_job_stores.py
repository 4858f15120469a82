"""Both job stores through the same scenarios: the in-process table, and Redis + streaq on a
real Redis (two stores on one database stand for two replicas)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis

from jobs.limits import JobLimits
from jobs.memory import InProcessJobs
from jobs.model import JobRecord, Submission
from jobs.redis_store import PREFIX, QUEUE, RedisJobs
from utils.breaker import Breaker
from utils.exceptions import InpaintError, ModelNotLoadedException, OverloadedException

pytestmark = pytest.mark.anyio
LIMITS = JobLimits(max_jobs=6, max_per_owner=3, max_bytes=1000, max_running=1, ttl_s=60)
DEADLINE_S = 20


async def _nothing(_: str) -> Any:
    return None


def _clear(url: str) -> None:
    client = redis.Redis.from_url(url)
    keys = client.keys(f"{PREFIX}*") + client.keys(f"streaq:{QUEUE}*")
    if keys:
        client.delete(*keys)


class Executor:
    """A stand-in for the service's flows: answers from the request, or waits to be let go."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any], dict[str, bytes], str]] = []
        self.release = asyncio.Event()

    async def __call__(
        self, route: str, request: dict[str, Any], files: dict[str, bytes], job_id: str
    ) -> dict[str, Any]:
        self.calls.append((route, request, files, job_id))
        if request.get("hold"):
            await self.release.wait()
        if request.get("fail") == "runner":
            raise ModelNotLoadedException("SD gave no answer")
        if request.get("fail"):
            raise InpaintError("boom")
        return {"route": route, "echo": request, "sizes": {k: len(v) for k, v in files.items()}}


def submission(owner: str = "key:a", request: dict[str, Any] | None = None, **kw: Any):
    return Submission(
        route=kw.pop("route", "fill"),
        request=request or {"text_prompt": "x"},
        files=kw.pop("files", {"image": b"\x89PNG" + b"0" * 96}),
        owner=owner,
        request_id=kw.pop("request_id", "req-1"),
        total_steps=4,
        **kw,
    )


@pytest.fixture(params=["memory", "redis"])
async def make_store(
    request: pytest.FixtureRequest,
) -> AsyncIterator[Callable[[Executor], Any]]:
    stores: list[Any] = []
    url = None
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        _clear(url)

    async def make(executor: Executor, limits: JobLimits = LIMITS) -> Any:
        if url is None:
            store: Any = InProcessJobs(limits, _nothing, _nothing)
        else:
            breaker = Breaker("redis", 0.5, 3, 1.0)
            store = RedisJobs(url, limits, breaker, _nothing, _nothing, 1.0, 3)
        await store.start(executor)
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()
    if url is not None:
        _clear(url)


async def until(store: Any, job_id: str, owner: str, states: set[str]) -> JobRecord:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        record = await store.get(job_id, owner)
        if record.state in states:
            return record
        await asyncio.sleep(0.05)
    pytest.fail(f"job {job_id} never reached {states}: {record}")


async def test_a_job_runs_once_and_keeps_its_result(make_store) -> None:
    executor = Executor()
    store = await make_store(executor)
    record = await store.submit(submission(request={"text_prompt": "bench"}))
    assert record.state == "queued"
    done = await until(store, record.id, "key:a", {"done"})
    assert done.status().progress == 1.0 and done.error is None
    body, request_id = await store.result(record.id, "key:a")
    assert body == {"route": "fill", "echo": {"text_prompt": "bench"}, "sizes": {"image": 100}}
    assert request_id == "req-1"
    assert [c[3] for c in executor.calls] == [record.id]


async def test_another_owner_sees_no_job(make_store) -> None:
    store = await make_store(Executor())
    record = await store.submit(submission())
    for call in (store.get, store.result, store.cancel):
        with pytest.raises(InpaintError) as caught:
            await call(record.id, "key:b")
        assert caught.value.code == "job_not_found"


async def test_failures_keep_their_error_and_a_lost_runner_says_so(make_store) -> None:
    store = await make_store(Executor())
    plain = await store.submit(submission(request={"fail": "plain"}))
    lost = await store.submit(submission(request={"fail": "runner"}))
    assert (await until(store, plain.id, "key:a", {"failed"})).error["code"] == "internal_error"
    failed = await until(store, lost.id, "key:a", {"failed"})
    assert failed.error["code"] == "job_runner_lost" and failed.error["status"] == 502
    with pytest.raises(InpaintError) as caught:
        await store.result(lost.id, "key:a")
    assert caught.value.code == "job_runner_lost" and int(caught.value.status) == 502


async def test_caps_per_owner_server_and_bytes(make_store) -> None:
    executor = Executor()
    store = await make_store(executor)
    held = [await store.submit(submission(request={"hold": True, "n": i})) for i in range(3)]
    with pytest.raises(InpaintError) as caught:
        await store.submit(submission())
    assert caught.value.code == "too_many_jobs" and int(caught.value.status) == 429
    # Another owner still submits, until the upload byte budget (1000) is spent.
    others = [await store.submit(submission("key:b", {"n": i})) for i in range(2)]
    big = {"image": b"0" * 700}
    with pytest.raises(OverloadedException):
        await store.submit(submission("key:c", files=big))
    executor.release.set()
    for record in [*held, *others]:
        await until(store, record.id, record.owner, {"done"})
    # Finished jobs no longer count.
    await until(store, (await store.submit(submission(files=big))).id, "key:a", {"done"})


async def test_cancel_stops_queued_and_running_jobs(make_store) -> None:
    executor = Executor()
    store = await make_store(executor)
    running = await store.submit(submission(request={"hold": True}))
    queued = await store.submit(submission(request={"n": 2}))
    await until(store, running.id, "key:a", {"running"})
    assert (await store.get(queued.id, "key:a")).state == "queued"
    assert (await store.cancel(queued.id, "key:a")).state == "cancelled"
    assert (await store.cancel(running.id, "key:a")).state == "cancelled"
    executor.release.set()
    await asyncio.sleep(1.5)  # streaq's abort is seen within 0.5 s
    for record in (running, queued):
        assert (await store.get(record.id, "key:a")).state == "cancelled"
        with pytest.raises(InpaintError) as caught:
            await store.result(record.id, "key:a")
        assert caught.value.code == "job_cancelled"
    assert [c[1] for c in executor.calls] == [{"hold": True}], "the queued job never ran"


async def test_idempotency_key(make_store) -> None:
    store = await make_store(Executor())
    first = await store.submit(submission(idempotency_key="k1"))
    again = await store.submit(submission(idempotency_key="k1"))
    assert again.id == first.id
    with pytest.raises(InpaintError) as caught:
        await store.submit(submission(request={"text_prompt": "other"}, idempotency_key="k1"))
    assert caught.value.code == "idempotency_key_reused" and int(caught.value.status) == 409
    other_owner = await store.submit(submission("key:b", idempotency_key="k1"))
    assert other_owner.id != first.id


async def test_a_job_of_a_killed_replica_runs_on_another(redis_url: str) -> None:
    """Replica A (its own process) takes the job and is SIGKILLed mid-run; B runs it."""
    _clear(redis_url)
    a = subprocess.Popen(
        [sys.executable, "-m", "tests.unit.test_job_stores", redis_url],
        stdout=subprocess.PIPE,
        text=True,
    )
    b_exec = Executor()
    b_exec.release.set()
    b = RedisJobs(redis_url, LIMITS, Breaker("b", 0.5, 3, 1), _nothing, _nothing, 1.0, 3)
    try:
        assert a.stdout is not None
        job_id = a.stdout.readline().strip()  # A prints the job id once it runs it
        assert job_id, "replica A never ran the job"
        await b.start(b_exec)  # B is up and idle, waiting on the queue, when A dies
        await asyncio.sleep(1.5)
        a.send_signal(signal.SIGKILL)
        a.wait()
        done = await until(b, job_id, "key:a", {"done"})
        assert [c[3] for c in b_exec.calls] == [job_id]
        body, _ = await b.result(job_id, "key:a")
        assert body["route"] == "fill" and done.error is None
        # A run that ends late (a replica frozen, not dead) changes nothing: the first won.
        assert not await b._end(done, "failed", None, {"status": 500, "code": "x", "message": ""})
        assert (await b.get(job_id, "key:a")).state == "done"
    finally:
        a.kill()
        await b.close()
        _clear(redis_url)


async def _replica_a(url: str) -> None:
    """Runs one held job and reports its id, then waits to be killed."""
    executor = Executor()
    store = RedisJobs(url, LIMITS, Breaker("a", 0.5, 3, 1), _nothing, _nothing, 1.0, 3)
    await store.start(executor)
    record = await store.submit(submission(request={"hold": True}))
    await until(store, record.id, "key:a", {"running"})
    print(record.id, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_replica_a(sys.argv[1]))


async def test_a_frozen_redis_costs_a_call_its_budget_then_nothing() -> None:
    """Redis accepts connections and never answers (as under SIGSTOP): each job call waits
    at most the budget, and once the breaker opens, not at all."""

    async def frozen(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(-1)

    server = await asyncio.start_server(frozen, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    breaker = Breaker("redis", 0.05, 2, 60.0)
    store = RedisJobs(f"redis://127.0.0.1:{port}/0", LIMITS, breaker, _nothing, _nothing, 1.0, 3)
    try:
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(InpaintError) as caught:
                await store.get("some-job", "key:a")
            assert time.monotonic() - started < 0.25
            assert caught.value.code == "job_store_unavailable" and int(caught.value.status) == 503
        assert store.health() == {"store": "redis", "available": False, "breaker_trips": 1}
        started = time.monotonic()
        with pytest.raises(InpaintError):
            await store.submit(submission())
        assert time.monotonic() - started < 0.01, "an open breaker does not wait"
    finally:
        await store.close()
        server.close()
