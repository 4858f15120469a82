"""The batch run's record: a JSONL report line per photo, progress, and the closing counts."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Literal

from tqdm import tqdm

Status = Literal["done", "failed", "skipped"]


@dataclass(frozen=True)
class Record:
    file: str
    status: Status
    operation: str
    error_code: str | None = None
    message: str | None = None
    seconds: float = 0.0
    output: str | None = None


@dataclass
class Counts:
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    not_started: int = 0
    interrupted: bool = False

    def add(self, status: Status) -> None:
        if status == "done":
            self.succeeded += 1
        elif status == "failed":
            self.failed += 1
        else:
            self.skipped += 1

    def summary(self, seconds: float) -> str:
        text = (
            f"{self.succeeded} succeeded, {self.failed} failed, {self.skipped} skipped "
            f"in {seconds:.1f} s"
        )
        if self.interrupted:
            return f"batch interrupted: {text}; {self.not_started} not done (re-run to resume)"
        return f"batch: {text}"


class Reporter:
    """Writes each record to the report as it happens (a killed run keeps what it did) and
    shows progress: a bar with rate and ETA on a terminal, one plain line per photo else."""

    def __init__(self, report: Path | None, total: int, stream: IO[str] = sys.stderr) -> None:
        self.counts = Counts()
        self._file: IO[str] | None = None
        if report is not None:
            report.parent.mkdir(parents=True, exist_ok=True)
            self._file = report.open("w", encoding="utf-8")
        self._stream = stream
        self._total = total
        self._started = time.monotonic()
        self._worked = 0  # photos sent to the server (the rate counts those only)
        self._bar: tqdm | None = None
        if stream.isatty():
            self._bar = tqdm(total=total, unit="photo", file=stream, dynamic_ncols=True)

    def record(self, record: Record) -> None:
        self.counts.add(record.status)
        if self._file is not None:
            self._file.write(json.dumps(asdict(record)) + "\n")
            self._file.flush()
        if record.status != "skipped":
            self._worked += 1
        if self._bar is not None and record.status == "skipped":
            # Not work: out of the bar, so that its rate and ETA count real photos only.
            self._bar.total -= 1
            self._bar.set_postfix(failed=self.counts.failed, skipped=self.counts.skipped)
        elif self._bar is not None:
            self._bar.update(1)
            if record.status == "failed":
                self._bar.write(
                    f"failed {record.file}: {record.error_code}: {record.message}",
                    file=self._stream,
                )
            self._bar.set_postfix(failed=self.counts.failed, skipped=self.counts.skipped)
        elif record.status != "skipped":
            self._stream.write(self._line(record) + "\n")
            self._stream.flush()

    def _line(self, record: Record) -> str:
        finished = self.counts.succeeded + self.counts.failed + self.counts.skipped
        elapsed = max(time.monotonic() - self._started, 1e-6)
        rate = self._worked / elapsed * 60
        left = self._total - finished
        eta = f", ETA {left / (rate / 60):.0f} s" if rate and left else ""
        text = f"[{finished}/{self._total}] {record.status} {record.file} ({record.seconds:.1f} s)"
        if record.status == "failed":
            text += f" {record.error_code}: {record.message}"
        return f"{text} | {rate:.1f} photos/min{eta}"

    def note(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text, file=self._stream)
        else:
            self._stream.write(text + "\n")
            self._stream.flush()

    def close(self) -> float:
        if self._bar is not None:
            self._bar.close()
        if self._file is not None:
            self._file.close()
        return time.monotonic() - self._started
