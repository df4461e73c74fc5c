"""statsd metrics named `<prefix>.<service>.<metric>` (SPEC §5).

Counters are summed in memory and timers buffered, then sent once a second in
packed UDP datagrams: a hot path that counts every delivery must not pay a
syscall per count.

Each flush is also kept in process as a `MetricsSample` (the last few minutes
of them), which the operator console reads from the service's internal
`/v1/metrics`: statsd stays the export, the console needs no collector.
Per-key counts (`count_top`: messages per channel) stay out of statsd, where
one name per channel would be unbounded; a sample keeps the busiest few.
"""
from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import statsd

from common.wire import MetricsSample, TimerSummary

FLUSH_INTERVAL = 1.0
SAMPLES_KEPT = 300  # five minutes of one-second samples
TOP_KEPT = 20  # keys per family kept in a sample
# Percentiles of a busy timer are read from at most this many of its values (an even stride).
SUMMARY_VALUES = 20_000


def summarize(values: list[float]) -> TimerSummary:
    if len(values) > SUMMARY_VALUES:
        values = values[::len(values) // SUMMARY_VALUES + 1]
    ordered = sorted(values)
    last = len(ordered) - 1

    def at(fraction: float) -> float:
        return round(ordered[min(last, int(fraction * len(ordered)))], 3)

    return TimerSummary(count=len(values), p50=at(0.5), p99=at(0.99), max=round(ordered[last], 3))


class Metrics:
    def __init__(self, host: str, port: int, prefix: str, service: str) -> None:
        self.service = service
        self._client = statsd.StatsClient(host, port, prefix=f"{prefix}.{service}")
        self._counters: defaultdict[str, int] = defaultdict(int)
        self._timers: list[tuple[str, float]] = []
        self._gauges: dict[str, float] = {}
        self._gauge_sources: dict[str, Callable[[], float]] = {}
        self._top: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._gauge_scope = ""
        self._task: asyncio.Task[None] | None = None
        self.samples: deque[MetricsSample] = deque(maxlen=SAMPLES_KEPT)
        self._sampled = time.time()

    def incr(self, name: str, count: int = 1) -> None:
        self._counters[name] += count

    def count_top(self, family: str, key: str, count: int = 1) -> None:
        """Count per key (a channel) for the console; never sent to statsd."""
        self._top[family][key] += count

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
        self._sample()
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

    def _sample(self) -> None:
        now = time.time()
        timers: defaultdict[str, list[float]] = defaultdict(list)
        for name, milliseconds in self._timers:
            timers[name].append(milliseconds)
        self.samples.append(MetricsSample(
            t=int(now * 1000), seconds=round(now - self._sampled, 3), counters=dict(self._counters),
            gauges=dict(self._gauges), timers={name: summarize(values) for name, values in timers.items()},
            top={family: dict(counts.most_common(TOP_KEPT)) for family, counts in self._top.items() if counts}))
        self._sampled = now
        self._top.clear()

    def since(self, t_ms: int) -> list[MetricsSample]:
        """The samples kept from after `t_ms` (ms since the epoch), oldest first."""
        return [sample for sample in self.samples if sample.t > t_ms]

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
