"""Paced chat traffic into a fleet of listeners, with delivery, latency and loss figures.

Used by `chatd bench e2e` and by the swarm generator.
"""
from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from loadtest.fleet import FleetGroup
from loadtest.systems import Sender

PACE_INTERVAL = 0.005
DRAIN_TIMEOUT = 60.0
# Deliveries that stop arriving for this long are over. An edge fanning out a burst to tens of
# thousands on a busy machine can be silent for seconds and then deliver the rest: 2 s counted those as lost.
DRAIN_STALL = 10.0


def zipf_sizes(total: int, channels: int, exponent: float = 1.0) -> list[int]:
    """Channel sizes summing to `total`, the k-th largest ∝ 1/k^exponent."""
    weights = [1 / (rank + 1) ** exponent for rank in range(channels)]
    scale = total / sum(weights)
    sizes = [max(1, round(w * scale)) for w in weights]
    sizes[0] += total - sum(sizes)
    return sizes


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 2)


async def total_lines(fleets: list[FleetGroup]) -> tuple[int, list[dict]]:
    reports = [await fleet.report() for fleet in fleets]
    return sum(r["lines"] for r in reports), reports


async def drive(fleets: list[FleetGroup], senders: list[Sender], channels: list[str],
                members: dict[str, int], rate: int, duration: float) -> dict[str, Any]:
    """Send `rate` messages a second, spread evenly over `channels` (a channel named
    k times gets k shares), for `duration` seconds; then wait for deliveries to stop
    and count them against what the channel sizes (`members`) say should have arrived.
    `fleets` gives each fleet's latency too, in order."""
    for fleet in fleets:
        await fleet.reset()
    loop = asyncio.get_running_loop()
    sent: Counter[str] = Counter()
    total = 0
    started = loop.time()
    while (elapsed := loop.time() - started) < duration:
        for _ in range(int(rate * elapsed) - total):
            channel = channels[total % len(channels)]
            senders[total % len(senders)].write(channel)
            sent[channel] += 1
            total += 1
        await asyncio.sleep(PACE_INTERVAL)
    for sender in senders:
        await sender.drain()

    expected = sum(count * members[channel] for channel, count in sent.items())
    deadline = loop.time() + DRAIN_TIMEOUT
    last, last_change = -1, loop.time()
    while True:
        delivered, reports = await total_lines(fleets)
        if delivered >= expected or loop.time() > deadline or loop.time() - last_change > DRAIN_STALL:
            break
        if delivered != last:
            last, last_change = delivered, loop.time()
        await asyncio.sleep(0.1)
    latencies = [value for report in reports for value in report["latencies_ms"]]
    return {
        "rate_in": rate,
        "sent": total,
        "deliveries_per_s": round(delivered / duration),
        "expected": expected,
        "delivered": delivered,
        "lost": max(0, expected - delivered),
        "gaps": sum(report["gaps"] for report in reports),
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": round(max(latencies), 2) if latencies else None,
        "latency_samples": len(latencies),
        "by_fleet": [{"delivered": report["lines"], "p50_ms": percentile(report["latencies_ms"], 0.50),
                      "p99_ms": percentile(report["latencies_ms"], 0.99)} for report in reports],
    }
