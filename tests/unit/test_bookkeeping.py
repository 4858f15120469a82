"""A runner's memory between calls: kept results by key, cancelled call ids, counters."""

from __future__ import annotations

from runners.bookkeeping import CancelledCalls, Counters, KeptByKey


def test_kept_values_drop_the_least_recently_used_first() -> None:
    kept: KeptByKey[int] = KeptByKey(2)
    kept.put("a", 1)
    kept.put("b", 2)
    assert kept.get("a") == 1  # "a" is now the most recent
    kept.put("c", 3)
    assert (kept.get("a"), kept.get("b"), kept.get("c")) == (1, None, 3)


def test_nothing_is_kept_without_a_key_or_capacity() -> None:
    none: KeptByKey[int] = KeptByKey(0)
    none.put("a", 1)
    assert none.get("a") is None
    some: KeptByKey[int] = KeptByKey(4)
    some.put(None, 1)
    some.put("", 2)
    assert some.get("") is None


def test_a_cancelled_call_is_reported_once_and_only_the_newest_ids_are_held() -> None:
    cancelled = CancelledCalls(kept=2)
    cancelled.add(["x", "y", "z"])
    assert not cancelled.take("x")  # the oldest went past the limit
    assert cancelled.take("y") and not cancelled.take("y")
    assert cancelled.take("z")
    assert not cancelled.take(None)


def test_counters_add_up_and_report_a_copy() -> None:
    counts = Counters("runs", "skipped")
    counts.add(runs=2)
    counts.add(runs=1, skipped=4)
    snapshot = counts.snapshot()
    snapshot["runs"] = 0
    assert counts.snapshot() == {"runs": 3, "skipped": 4}
