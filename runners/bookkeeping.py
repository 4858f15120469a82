"""What a runner remembers between calls, safe across its threads: counters for its status,
the call ids whose callers went away, and its newest results kept by key."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class Counters:
    """Named counts, reported in the runner's status."""

    def __init__(self, *names: str) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(names, 0)

    def add(self, **increments: int) -> None:
        with self._lock:
            for name, value in increments.items():
                self._values[name] += value

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)


class CancelledCalls:
    """Ids of calls whose callers went away: their queued work is skipped. The ids of calls
    that had already finished are never taken back, so only the newest `kept` are held."""

    def __init__(self, kept: int = 4096) -> None:
        self._lock = threading.Lock()
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._kept = kept

    def add(self, call_ids: Iterable[str]) -> None:
        with self._lock:
            for call_id in call_ids:
                self._ids[call_id] = None
            while len(self._ids) > self._kept:
                self._ids.popitem(last=False)

    def take(self, call_id: str | None) -> bool:
        """Whether the call was cancelled; it is forgotten once asked about."""
        with self._lock:
            if call_id is None or call_id not in self._ids:
                return False
            del self._ids[call_id]
            return True


class KeptByKey(Generic[T]):
    """The newest `capacity` values by key, the least recently used dropped first; a
    capacity of 0 keeps nothing."""

    def __init__(self, capacity: int) -> None:
        self._lock = threading.Lock()
        self._values: OrderedDict[str, T] = OrderedDict()
        self.capacity = capacity

    def get(self, key: str) -> T | None:
        with self._lock:
            value = self._values.get(key)
            if value is not None:
                self._values.move_to_end(key)
            return value

    def put(self, key: str | None, value: T) -> None:
        if not key or self.capacity == 0:
            return
        with self._lock:
            self._values[key] = value
            self._values.move_to_end(key)
            while len(self._values) > self.capacity:
                self._values.popitem(last=False)
