"""`chatd bench tpp`: a Twitch Plays Pokémon day on one host.

One channel holds most viewers (50,000 of 60,000 connections at full size) and
takes hundreds of messages a second, beside 100 ordinary channels of Zipf sizes
with steady chat, all through one edge port served by several workers
(`--workers`, several counts run side by side). Per worker count and hot rate:
deliveries/s, send→receive p50/p99 (hot and ordinary viewers apart) and lost;
each hop's latency from the services' own statsd timers (edge→clue,
clue→exchange, exchange→edge, and the edge's fan-out); how many messages each
write to a client and each request between the services carried (batching); the
hottest Redis shard's share of commands; and the CPU each kind of process spent,
the load generator's included.
"""
from __future__ import annotations

import argparse
import asyncio
import random
from typing import Any

from common.metrics import FLUSH_INTERVAL
from loadtest.fleet import FleetConfig, FleetGroup
from loadtest.measure import (
    StatsdSink,
    commandstats,
    cpu_by_kind,
    cpu_seconds,
    print_progress,
    statsd_sink,
)
from loadtest.systems import ChatdSystem, Sender
from loadtest.traffic import drive, percentile, zipf_sizes

HOT = "#tpp"
PER_FLEET_PROCESS = 15_000  # connections per load-generator process (each may open 20,000 files)
FLUSH_WAIT = 5.0  # s for the services' last counters to reach the sink (they flush once a second)
# Each hop as the services time it (`*`: the remote's address in the metric's name).
HOPS = {
    "edge→clue": "chatd.edge.http.clue_*.messages",  # a batch's round trip: clue's checks and its publish within
    "clue checks": "chatd.clue.ingest",
    "clue→exchange": "chatd.clue.http.exchange_*.publish",
    "exchange→edge": "chatd.exchange.http.edge_*.deliver",  # a batch's round trip: the edge's fan-out within
    "edge fan-out": "chatd.edge.fanout",
}


def schedule(hot_rate: int, ordinary_rate: int, ordinary: list[str]) -> list[str]:
    """One second's messages in sending order: `hot_rate` to HOT spread evenly among
    `ordinary_rate` that go round the ordinary channels."""
    total = hot_rate + ordinary_rate
    order, next_ordinary = [], 0
    for i in range(total):
        if (i + 1) * hot_rate // total > i * hot_rate // total:
            order.append(HOT)
        else:
            order.append(ordinary[next_ordinary % len(ordinary)])
            next_ordinary += 1
    return order


def local_hosts(first: int, count: int) -> list[str]:
    """Loopback source addresses 127.0.0.<first>…, one per fleet process."""
    return [f"127.0.0.{first + i}" for i in range(count)]


def hop_figures(sink: StatsdSink) -> dict[str, dict[str, float | None]]:
    figures = {}
    for hop, pattern in HOPS.items():
        samples = sink.samples(pattern)
        figures[hop] = {"p50_ms": percentile(samples, 0.50), "p99_ms": percentile(samples, 0.99),
                        "samples": len(samples)}
    return figures


def batching(sink: StatsdSink) -> dict[str, float]:
    """Messages per write to a client, and per request on each hop between the services."""
    def ratio(messages: int, requests: int) -> float:
        return round(messages / requests, 2) if requests else 0.0

    return {
        "messages_per_client_write": ratio(sink.count("chatd.edge.messages.delivered"),
                                           sink.count("chatd.edge.fanout.writes")),
        "messages_per_edge_clue_request": ratio(sink.count("chatd.clue.messages.received"),
                                                sink.count(HOPS["edge→clue"])),
        "messages_per_clue_exchange_request": ratio(sink.count("chatd.exchange.messages.published"),
                                                    sink.count(HOPS["clue→exchange"])),
        "messages_per_exchange_edge_request": ratio(sink.count("chatd.exchange.deliver.messages"),
                                                    sink.count("chatd.exchange.deliver.batches")),
    }


async def run_workers(args: argparse.Namespace, workers: int) -> list[dict[str, Any]]:
    transport, sink = await statsd_sink()
    system = ChatdSystem(edges=args.edges, workers=workers, shards=3,
                         env={"STATSD_PORT": str(transport.get_extra_info("sockname")[1])})
    await system.start()
    hot_viewers = min(args.hot_viewers, args.viewers - args.ordinary_channels)
    ordinary = [f"#room{i}" for i in range(args.ordinary_channels)]
    sizes = {HOT: hot_viewers, **dict(zip(ordinary, zipf_sizes(args.viewers - hot_viewers, len(ordinary)),
                                          strict=True))}
    fleets: list[FleetGroup] = []
    senders: list[Sender] = []
    try:
        # One fleet for the hot channel's viewers, one for the others': their latencies apart.
        ordinary_members = [channel for channel in ordinary for _ in range(sizes[channel])]
        random.Random(7).shuffle(ordinary_members)
        probe_every = max(1, args.viewers // 250)
        next_host = 2
        for members in ([HOT] * hot_viewers, ordinary_members):
            fleet = FleetGroup()
            processes = -(-len(members) // PER_FLEET_PROCESS)
            await fleet.start(FleetConfig(
                host="127.0.0.1", port=system.irc_port(), transport="tcp", dialect="twitch",
                caps="twitch.tv/tags twitch.tv/commands", channels=members, probe_every=probe_every,
                first_index=sum(len(f.processes) for f in fleets) * PER_FLEET_PROCESS, ready_timeout=900,
            ), processes=processes, local_hosts=local_hosts(next_host, processes))
            next_host += processes
            fleets.append(fleet)
        # Many chatters, as in a TPP crowd: their per-user keys spread over the shards.
        for index in range(args.chatters):
            sender = Sender(system, f"tppchatter{index}", [HOT, *ordinary], edge=index % args.edges, join=False)
            await sender.connect()
            senders.append(sender)

        results = []
        for hot_rate in args.hot_rates:
            results.append(await measure(args, system, sink, fleets, senders, sizes, ordinary, workers, hot_rate))
        return results
    finally:
        for sender in senders:
            await sender.close()
        for fleet in fleets:
            await fleet.stop()
        await system.stop()
        transport.close()


async def measure(args: argparse.Namespace, system: ChatdSystem, sink: StatsdSink, fleets: list[FleetGroup],
                  senders: list[Sender], sizes: dict[str, int], ordinary: list[str], workers: int,
                  hot_rate: int) -> dict[str, Any]:
    redis = system.cluster.redis_addresses
    fleet_pids = [process.pid for fleet in fleets for process in fleet.processes]
    commands_before = {address: await commandstats(address) for address in redis}
    cpu_before = cpu_by_kind(system)
    fleet_before = sum(cpu_seconds(pid) for pid in fleet_pids)
    sink.clear()
    order = schedule(hot_rate, args.ordinary_rate, ordinary)
    outcome = await drive(fleets, senders, order, sizes, len(order), args.duration)
    cpu = {kind: round(used - cpu_before.get(kind, 0.0), 2) for kind, used in cpu_by_kind(system).items()}
    fleet_cpu = round(sum(cpu_seconds(pid) for pid in fleet_pids) - fleet_before, 2)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FLUSH_WAIT
    while sink.count("chatd.edge.messages.delivered") < outcome["delivered"] and loop.time() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(FLUSH_INTERVAL + 0.2)  # and every other service's last flush
    commands = {address: sum(((await commandstats(address)) - commands_before[address]).values())
                for address in redis}
    total_commands = sum(commands.values())
    hops = hop_figures(sink)
    hot, others = outcome.pop("by_fleet")
    delivered = max(outcome["delivered"], 1)
    result = {
        "system": f"chatd, {workers} worker{'s' * (workers > 1)}",
        "workers": workers,
        "viewers": sum(sizes.values()),
        "hot_viewers": sizes[HOT],
        "hot_rate": hot_rate,
        "ordinary_rate": args.ordinary_rate,
        **outcome,
        "hot_p50_ms": hot["p50_ms"], "hot_p99_ms": hot["p99_ms"],
        "ordinary_p50_ms": others["p50_ms"], "ordinary_p99_ms": others["p99_ms"],
        **{f"{hop} p99_ms": figures["p99_ms"] for hop, figures in hops.items()},
        **batching(sink),
        # Clients the edges cut (what they missed counts as lost): not reading fast enough, or no PONG in time.
        "slow_consumer_cuts": sink.count("chatd.edge.connections.slow_consumer"),
        "ping_timeout_cuts": sink.count("chatd.edge.connections.ping_timeout"),
        # Messages clue refused (each told to its sender): never delivered, so counted in `lost` too.
        "refused": sink.count("chatd.clue.messages.rejected.*"),
        "hottest_shard_share": round(max(commands.values(), default=0) / max(total_commands, 1), 3),
        "redis_commands_per_message": round(total_commands / max(outcome["sent"], 1), 2),
        "edge_us_per_delivery": round(cpu.get("edge", 0.0) * 1e6 / delivered, 2),
        "cpu_s": cpu | {"load generator": fleet_cpu},
        "hops_ms": hops,
        "shard_share": {address: round(n / max(total_commands, 1), 3) for address, n in commands.items()},
    }
    print_progress({k: v for k, v in result.items() if not isinstance(v, (dict, list))})
    return result


async def scenario_tpp(args: argparse.Namespace) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    for workers in args.workers:  # each worker count in turn, the same load through each
        results += await run_workers(args, workers)
    return {"results": results, "edges": args.edges, "ordinary_channels": args.ordinary_channels}


def plot(axis, rows: list[dict[str, Any]]) -> None:
    """p99 against deliveries/s per worker count, each point marked with messages per client write."""
    for workers in dict.fromkeys(row["workers"] for row in rows):
        mine = [row for row in rows if row["workers"] == workers]
        axis.plot([row["deliveries_per_s"] for row in mine], [row["p99_ms"] or 0 for row in mine], marker="o",
                  label=mine[0]["system"])
        for row in mine:
            axis.annotate(f"{row['messages_per_client_write']:g}/write", (row["deliveries_per_s"], row["p99_ms"] or 0),
                          textcoords="offset points", xytext=(4, 4), fontsize=8)
    axis.set_xlabel("deliveries per second")
    axis.set_ylabel("send→receive p99 (ms)")
    axis.legend()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    tpp = parser.add_argument_group("tpp (also --viewers: connections in all, --duration, --edges)")
    tpp.add_argument("--hot-viewers", type=int, default=50_000, help="connections in the one hot channel")
    tpp.add_argument("--ordinary-channels", type=int, default=100)
    tpp.add_argument("--hot-rates", type=int, nargs="+", default=[50, 100, 200],
                     help="messages per second into the hot channel, one run each")
    tpp.add_argument("--ordinary-rate", type=int, default=100, help="messages per second over the ordinary channels")
    tpp.add_argument("--chatters", type=int, default=100, help="logged-in connections sending the messages")
    tpp.add_argument("--workers", type=int, nargs="+", default=[4], help="edge workers; several: side by side")
