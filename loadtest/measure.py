"""What the benchmarks measure on the processes and shards they start: CPU time,
Redis commands per shard, the services' own statsd metrics; and how they report progress."""
from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from chatd.progress import Progress
from loadtest.systems import System

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def cpu_by_kind(system: System) -> dict[str, float]:
    return {kind: sum(cpu_seconds(pid) for pid in pids) for kind, pids in system.processes().items()}


async def commandstats(address: str) -> Counter[str]:
    """Calls per command on one shard (commands a script runs count too)."""
    host, port = address.split(":")
    client = aioredis.Redis(host=host, port=int(port))
    try:
        info = await client.info("commandstats")
    finally:
        await client.aclose()
    return Counter({name.removeprefix("cmdstat_"): int(stats["calls"])
                    for name, stats in info.items() if name != "cmdstat_info"})


_progress: Progress | None = None  # the running scenario's (one per `chatd bench`)


@contextlib.contextmanager
def progress_of(steps: int | None, label: str) -> Iterator[Progress]:
    """A scenario's progress: `steps` results to come (a system at a size, a rate, …)."""
    global _progress
    with Progress(steps, label, unit="steps") as progress:
        _progress = progress
        try:
            yield progress
        finally:
            _progress = None


TIMER_SAMPLES_MAX = 200_000  # per timer name: enough for percentiles, bounded in memory


class StatsdSink(asyncio.DatagramProtocol):
    """A statsd server for one benchmark: the services' counters summed (`counts`; a timer
    counts its samples there too) and their timers' samples (`timings`, in ms)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.timings: defaultdict[str, list[float]] = defaultdict(list)

    def datagram_received(self, data: bytes, addr) -> None:
        for metric in data.decode(errors="replace").splitlines():
            name, _, rest = metric.partition(":")
            value, _, kind = rest.partition("|")
            if kind.startswith("ms"):
                self.counts[name] += 1
                samples = self.timings[name]
                if len(samples) < TIMER_SAMPLES_MAX:
                    samples.append(float(value))
            elif kind.startswith("c"):
                self.counts[name] += int(float(value or 0))

    def clear(self) -> None:
        self.counts.clear()
        self.timings.clear()

    def count(self, pattern: str) -> int:
        """The sum of the counters whose names match `pattern` (fnmatch: `*` for a remote's address)."""
        return sum(value for name, value in self.counts.items() if fnmatch.fnmatchcase(name, pattern))

    def samples(self, pattern: str) -> list[float]:
        return [value for name, values in self.timings.items() if fnmatch.fnmatchcase(name, pattern)
                for value in values]


async def statsd_sink() -> tuple[asyncio.DatagramTransport, StatsdSink]:
    """A sink on a free loopback port: give the services STATSD_PORT=<its port>."""
    loop = asyncio.get_running_loop()
    return await loop.create_datagram_endpoint(StatsdSink, local_addr=("127.0.0.1", 0))


def print_note(result: dict[str, Any]) -> None:
    """A line about the run that is not one of its results, on stderr (under the bar on a terminal)."""
    line = "  ".join(f"{k}={v}" for k, v in result.items() if not isinstance(v, (dict, list)))
    if _progress is None:
        print("  " + line, file=sys.stderr, flush=True)
    else:
        _progress.note(line)


def print_progress(result: dict[str, Any]) -> None:
    """One step's result, on stderr: a line under the bar (or among the plain lines), and a step done."""
    line = "  ".join(f"{k}={v}" for k, v in result.items() if not isinstance(v, (dict, list)))
    if _progress is None:
        print("  " + line, file=sys.stderr, flush=True)
        return
    _progress.note(line)
    _progress.advance()
