"""Progress of long work (benchmarks, resharding, backfills): a bar on a
terminal (tqdm), and plain lines elsewhere — a log or CI output gets one line
every few seconds, never a wall of carriage returns.
"""
from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO

from tqdm import tqdm

PLAIN_EVERY_SECONDS = 5.0


class Progress:
    """`with Progress(total, "backfill 2026-11-22", unit="events") as progress: progress.advance(n)`;
    `total` may be None when it is not known."""

    def __init__(self, total: int | None, label: str, unit: str = "", stream: TextIO | None = None) -> None:
        self.total, self.label, self.unit = total, label, unit
        self.stream = stream or sys.stderr
        self.done = 0
        self._started = self._said = time.monotonic()
        self._bar = (tqdm(total=total, desc=label, unit=f" {unit}" if unit else "it", file=self.stream,
                          dynamic_ncols=True, leave=True)
                     if self.stream.isatty() else None)

    def advance(self, amount: int = 1) -> None:
        self.done += amount
        if self._bar is not None:
            self._bar.update(amount)
        elif time.monotonic() - self._said >= PLAIN_EVERY_SECONDS:
            self._said = time.monotonic()
            self._line()

    def note(self, text: str) -> None:
        """A line about the work, under the bar or among the plain lines."""
        if self._bar is not None:
            self._bar.write(f"{self.label}: {text}", file=self.stream)
        else:
            print(f"{self.label}: {text}", file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        else:
            self._line(final=True)

    def _line(self, final: bool = False) -> None:
        unit = f" {self.unit}" if self.unit else ""
        done = f"{self.done:,}{unit}" if self.total is None else \
            f"{self.done:,}/{self.total:,}{unit} ({100 * self.done / max(self.total, 1):.0f} %)"
        took = f" in {time.monotonic() - self._started:.1f} s" if final else ""
        print(f"{self.label}: {done}{took}{' done' if final else ''}", file=self.stream, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
