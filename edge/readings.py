"""What the operator console charts, read from one service's metrics sample.

Pure functions: a `MetricsSample` (common.metrics) of an edge, clue or exchange
in, a small reading out, in names the console's page uses. The page adds the
readings of every process up per second (counts summed, percentiles taken at
their worst), so a reading only ever holds one process's numbers.
"""
from __future__ import annotations

from typing import Any

from common.wire import MetricsSample, TimerSummary

# Reading field ← counter, per kind of service.
COUNTERS: dict[str, dict[str, str]] = {
    "edge": {"sent": "messages.received", "delivered": "messages.delivered",
             "slow_consumer": "connections.slow_consumer", "gaps": "sequence.gaps", "healed": "sequence.healed",
             "retried": "submissions.retried"},
    "clue": {"received": "messages.received", "accepted": "messages.accepted", "commands": "commands.done",
             "modlog_lost": "modlog.lost"},
    "exchange": {"ordered": "messages.published", "dropped": "deliver.dropped",
                 "redelivered": "deliver.retried", "history_lost": "history.lost"},
}
# Each hop of a message is timed by the service that makes the call: (kind, timer prefix, timer suffix).
HOPS: dict[str, tuple[str, str, str]] = {
    "edge→clue": ("edge", "http.clue_", ".messages"),
    "clue→exchange": ("clue", "http.exchange_", ".publish"),
    "exchange→edge": ("exchange", "http.edge_", ".deliver"),
}
# From tmi-sent-ts (stamped when clue accepts) to the write to clients, timed by the edge per message.
LAG_TIMER = "delivery.lag"
REJECTED = "messages.rejected."
POOL_SUFFIX = ".pool_in_use"
CONNECTION_GAUGES = {"tcp": "connections.tcp", "ws": "connections.ws", "eventsub": "eventsub.sessions"}


def shard_metric_name(address: str) -> str:
    """How common.shards names a shard in metrics (`127_0_0_1_7000` for 127.0.0.1:7000)."""
    host, _, port = address.rpartition(":")
    return f"{host.replace('.', '_')}_{port}"


def pool_label(gauge: str) -> str:
    """`http.clue_http_//127_0_0_1_4000.pool_in_use` → `clue 127.0.0.1:4000`;
    `redis.127_0_0_1_7000.pool_in_use` → `redis 127.0.0.1:7000`."""
    name = gauge[:-len(POOL_SUFFIX)]
    kind, _, rest = name.partition(".")
    if kind == "http":
        kind, _, rest = rest.partition("_http_//")
    host, _, port = rest.rpartition("_")
    return f"{kind} {host.replace('_', '.')}:{port}" if host and port.isdigit() else name


def merge(summaries: list[TimerSummary]) -> list[float]:
    """[count, p99] of several timers of one process (several remotes): the worst p99 stands."""
    return [sum(s.count for s in summaries), max((s.p99 for s in summaries), default=0.0)]


def reading(kind: str, sample: MetricsSample, shards: dict[str, str]) -> dict[str, Any]:
    """One process's sample as the console reads it; `shards`: metric name → shard address."""
    counters, timers, gauges = sample.counters, sample.timers, sample.gauges
    found: dict[str, Any] = {
        "t": sample.t,
        "s": sample.seconds,
        "counts": {field: counters[name] for field, name in COUNTERS.get(kind, {}).items() if counters.get(name)},
    }
    hops = {}
    for hop, (by, prefix, suffix) in HOPS.items():
        if by == kind:
            matching = [summary for name, summary in timers.items() if name.startswith(prefix)
                        and name.endswith(suffix)]
            if matching:
                hops[hop] = merge(matching)
    if hops:
        found["hops"] = hops
    if LAG_TIMER in timers:
        found["e2e"] = merge([timers[LAG_TIMER]])
    redis: dict[str, list[TimerSummary]] = {}
    for name, summary in timers.items():
        if name.startswith("redis."):
            metric = name.split(".")[1]
            redis.setdefault(shards.get(metric, metric), []).append(summary)
    if redis:
        found["redis"] = {address: merge(summaries) for address, summaries in redis.items()}
    if kind == "edge":
        found["conns"] = {field: int(gauges.get(name, 0)) for field, name in CONNECTION_GAUGES.items()}
    pools = {pool_label(name): value for name, value in gauges.items() if name.endswith(POOL_SUFFIX)}
    if pools:
        found["pools"] = pools
    refusals = {name[len(REJECTED):]: count for name, count in counters.items() if name.startswith(REJECTED)}
    if refusals and kind == "clue":  # edges count the refusals clue told them of: counted once, at clue
        found["refusals"] = refusals
    if "channel.in" in sample.top:
        found["top_in"] = sample.top["channel.in"]
    if "channel.out" in sample.top:
        found["top_out"] = sample.top["channel.out"]
    return found
