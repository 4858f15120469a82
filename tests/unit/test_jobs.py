"""The SD runner's progress board (runners.sd_progress): step k of n per job, and cancel.

The job stores themselves are tested in test_job_stores.py.
"""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest
import redis

from runners import sd_progress
from runners.sd_progress import ProgressBoard, RedisMirror
from utils.breaker import Breaker
from utils.job_keys import cancel_key, progress_key


def test_board_eta_is_the_remaining_steps_at_the_pace_so_far(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = iter([100.0, 104.0])
    monkeypatch.setattr(sd_progress.time, "monotonic", lambda: next(clock))
    board = ProgressBoard()
    board.advance(["a"], 1, 20)  # the first step's end starts the clock
    board.advance(["a"], 5, 20)  # 4 more steps in 4 s: 1 s a step, 15 to go
    assert board.report(["a"])["a"]["eta_s"] == 15.0


def test_board_reports_steps_and_stops_a_cancelled_pipeline() -> None:
    board = ProgressBoard()
    pipeline = SimpleNamespace(num_timesteps=20, _interrupt=False)
    callback = board.callback(["a", "b"], 20)
    assert board.report(["a"])["a"] == {
        "step": 0,
        "total_steps": 20,
        "eta_s": None,
        "cancelled": False,
    }
    callback(pipeline, 4, 0, {"latents": 1})
    report = board.report(["a", "b", "unknown"])
    assert set(report) == {"a", "b"} and report["a"]["step"] == 5
    board.cancel("a")
    callback(pipeline, 5, 0, {})
    assert pipeline._interrupt is False, "b still wants its picture"
    board.cancel("b")
    assert callback(pipeline, 6, 0, {"x": 2}) == {"x": 2}
    assert pipeline._interrupt is True
    assert board.all_cancelled(["a", "b"]) and not board.all_cancelled([])


def test_board_forgets_the_oldest_entries() -> None:
    board = ProgressBoard(capacity=2)
    for job_id in ("a", "b", "c"):
        board.cancel(job_id)
        board.advance([job_id], 1, 2)
    assert set(board.report(["a", "b", "c"])) == {"b", "c"}
    assert not board.all_cancelled(["a"])


def test_a_board_shares_progress_and_cancels_through_redis(redis_url: str) -> None:
    """Two SD replicas: progress written by the one painting, a cancel set from anywhere."""
    client = redis.Redis.from_url(redis_url)
    ids = ["shared-a", "shared-b"]
    client.delete(*[progress_key(i) for i in ids], *[cancel_key(i) for i in ids])
    try:
        board = ProgressBoard(mirror=RedisMirror(redis_url, 60, Breaker("r", 0.5, 3, 1.0)))
        board.advance(ids, 3, 10)
        shared = json.loads(client.get(progress_key("shared-a")))
        assert shared["step"] == 3 and shared["total_steps"] == 10
        assert 0 < client.ttl(progress_key("shared-a")) <= 60
        assert not board.all_cancelled(ids)
        client.set(cancel_key("shared-a"), 1)
        assert not board.all_cancelled(ids), "b still wants its picture"
        client.set(cancel_key("shared-b"), 1)
        assert board.all_cancelled(ids)
    finally:
        client.delete(*[progress_key(i) for i in ids], *[cancel_key(i) for i in ids])


def test_a_board_without_redis_goes_on_at_once() -> None:
    """A Redis that does not answer costs one short timeout, then nothing (breaker open)."""
    breaker = Breaker("r", 0.05, 1, 60.0)
    board = ProgressBoard(mirror=RedisMirror("redis://10.255.255.1:6379/0", 60, breaker))
    started = time.monotonic()
    board.advance(["x"], 1, 2)
    assert breaker.is_open
    for step in range(2, 50):
        board.advance(["x"], step, 50)
        assert not board.all_cancelled(["x"])
    assert time.monotonic() - started < 1.0
    assert board.report(["x"])["x"]["step"] == 49
