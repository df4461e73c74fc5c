"""statsd metrics named `<prefix>.<service>.<metric>` (SPEC §5).

Counters are summed in memory and timers buffered, then sent once a second in
packed UDP datagrams: a hot path that counts every delivery must not pay a
syscall per count.
"""
from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import statsd

FLUSH_INTERVAL = 1.0


class Metrics:
    def __init__(self, host: str, port: int, prefix: str, service: str) -> None:
        self._client = statsd.StatsClient(host, port, prefix=f"{prefix}.{service}")
        self._counters: defaultdict[str, int] = defaultdict(int)
        self._timers: list[tuple[str, float]] = []
        self._gauges: dict[str, float] = {}
        self._gauge_sources: dict[str, Callable[[], float]] = {}
        self._gauge_scope = ""
        self._task: asyncio.Task[None] | None = None

    def incr(self, name: str, count: int = 1) -> None:
        self._counters[name] += count

    def timing(self, name: str, milliseconds: float) -> None:
        self._timers.append((name, milliseconds))

    def gauge_from(self, name: str, source: Callable[[], float]) -> None:
        """Report `source()` as a gauge at every flush (pool sizes, connections)."""
        self._gauge_sources[self._gauge_scope + name] = source

    def scope_gauges(self, scope: str) -> None:
        """Name the gauges registered from now on `<service>.<scope>.<gauge>`: processes that
        share a service name (an edge's workers) would overwrite each other's gauges,
        while their counters and timers add up as they should."""
        self._gauge_scope = f"{scope}."

    @contextmanager
    def timer(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timing(name, (time.perf_counter() - started) * 1000.0)

    def flush(self) -> None:
        for name, source in self._gauge_sources.items():
            try:
                self._gauges[name] = float(source())
            except Exception:  # a gauge source must never break the flush
                continue
        if not (self._counters or self._timers or self._gauges):
            return
        pipe = self._client.pipeline()
        for name, count in self._counters.items():
            pipe.incr(name, count)
        for name, milliseconds in self._timers:
            pipe.timing(name, milliseconds)
        for name, value in self._gauges.items():
            pipe.gauge(name, value)
        self._counters.clear()
        self._timers.clear()
        self._gauges.clear()
        try:
            pipe.send()
        except OSError:
            pass  # statsd is fire-and-forget; an unreachable collector costs nothing

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            self.flush()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        self.flush()
