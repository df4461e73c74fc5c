"""`chatd bench SCENARIO`: side-by-side benchmarks, printed as a table, saved as JSON and PNG.

Every scenario measures its systems in one run on this machine, so the
figures that matter are the ratios between them.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from common import wire
from loadtest import backfill, highlights, presence, steady, tpp
from loadtest.fleet import FleetConfig, FleetGroup
from loadtest.measure import (
    commandstats,
    cpu_by_kind,
    print_progress,
    progress_of,
    statsd_sink,
)
from loadtest.systems import ChatdSystem, NgircdSystem, RawSystem, Sender, System
from loadtest.traffic import drive, zipf_sizes

# ---------------------------------------------------------------- helpers


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def settle(fleet: FleetGroup, quiet: float = 0.5, timeout: float = 120.0) -> None:
    """Wait until the fleet stops receiving (e.g. an IRC server's JOIN storm is over)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last = -1
    while loop.time() < deadline:
        lines = (await fleet.report())["lines"]
        if lines == last:
            return
        last = lines
        await asyncio.sleep(quiet)


async def wait_for_lines(fleet: FleetGroup, expected: int, stall: float = 5.0, timeout: float = 300.0) -> dict:
    """Poll until `expected` lines arrived or nothing arrives for `stall` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last_lines, last_change = -1, loop.time()
    while True:
        report = await fleet.report()
        if report["lines"] >= expected or loop.time() > deadline:
            return report
        if report["lines"] != last_lines:
            last_lines, last_change = report["lines"], loop.time()
        elif loop.time() - last_change > stall:
            return report
        await asyncio.sleep(0.05)


# ---------------------------------------------------------------- fanout


async def fanout_one(system: System, subscribers: int, messages: int, fleet_processes: int) -> dict[str, Any]:
    channel = "#bench"
    fleet = FleetGroup()
    await fleet.start(
        # Connections arrive 50 at a time: ngircd stops accepting under larger bursts,
        # and its JOIN storm (every JOIN goes to every member) takes minutes at 10,000.
        FleetConfig(host="127.0.0.1", port=system.irc_port(), transport="tcp", dialect=system.dialect,
                    channels=[channel] * subscribers, connect_concurrency=50, ready_timeout=1800),
        processes=fleet_processes,
    )
    sender = Sender(system, "benchsender", [channel])
    try:
        await sender.connect()
        await settle(fleet)
        await fleet.reset(target_lines=messages)
        started = time.time()
        for offset in range(0, messages, 100):
            sender.write(channel, min(100, messages - offset))
            await sender.drain()
        expected = fleet.joined * messages
        report = await wait_for_lines(fleet, expected)
        finished = report["reached_at"] or time.time()
        elapsed = max(finished - started, 1e-6)
        return {
            "system": system.name,
            "subscribers": subscribers,
            "joined": fleet.joined,
            "messages": messages,
            "delivered": report["lines"],
            "expected": expected,
            "elapsed_s": round(elapsed, 3),
            "deliveries_per_s": round(report["lines"] / elapsed),
        }
    finally:
        await sender.close()
        await fleet.stop()


def baseline_factory(args: argparse.Namespace, **options: Any) -> Callable[[], System] | None:
    """chatd from another checkout (`--baseline-code`), to compare versions in one run."""
    if not args.baseline_code:
        return None
    code = Path(args.baseline_code).resolve()
    return lambda: ChatdSystem(code=code, name="baseline", **options)


def median_by(results: list[dict[str, Any]], key: str, value: str) -> dict[Any, dict[str, float]]:
    """{key value: {system: median of `value` over its rounds}}."""
    grouped: dict[Any, dict[str, list[float]]] = {}
    for result in results:
        grouped.setdefault(result[key], {}).setdefault(result["system"], []).append(result[value])
    return {k: {system: statistics.median(values) for system, values in by.items()} for k, by in grouped.items()}


async def scenario_fanout(args: argparse.Namespace) -> dict[str, Any]:
    results = []
    factories: dict[str, Callable[[], System]] = {
        "chatd": lambda: ChatdSystem(edges=1, shards=1),
        "ngircd": NgircdSystem,
        "raw": RawSystem,
    }
    names = list(args.systems)
    if baseline := baseline_factory(args, edges=1, shards=1):
        factories["baseline"] = baseline
        names.append("baseline")
    for _ in range(args.rounds):  # rounds alternate the systems: drift on the machine hits each alike
        for name in names:
            system = factories[name]()
            await system.start()
            try:
                for subscribers in args.subscribers:
                    result = await fanout_one(system, subscribers, args.messages, args.fleet_processes)
                    results.append(result)
                    print_progress(result)
            finally:
                await system.stop()
    ratios = []
    for subscribers, by_system in median_by(results, "subscribers", "deliveries_per_s").items():
        row: dict[str, Any] = {"subscribers": subscribers}
        for other in ("ngircd", "raw", "baseline"):
            if "chatd" in by_system and by_system.get(other):
                row[f"chatd/{other}"] = round(by_system["chatd"] / by_system[other], 3)
        ratios.append(row)
    return {"results": results, "ratios": ratios}


# ---------------------------------------------------------------- e2e


async def scenario_e2e(args: argparse.Namespace) -> dict[str, Any]:
    system = ChatdSystem(edges=2, shards=3)
    await system.start()
    channels = [f"#room{i}" for i in range(args.channels)]
    sizes = dict(zip(channels, zipf_sizes(args.clients, args.channels), strict=True))
    members = [c for c in channels for _ in range(sizes[c])]
    random.Random(7).shuffle(members)
    fleets, senders = [], []
    try:
        for edge in range(2):
            fleet = FleetGroup()
            await fleet.start(
                FleetConfig(host="127.0.0.1", port=system.irc_port(edge), transport="tcp", dialect="twitch",
                            caps="twitch.tv/tags twitch.tv/commands", channels=members[edge::2],
                            probe_every=max(1, args.clients // 200), first_index=edge * args.clients),
            )
            fleets.append(fleet)
        for index in range(args.senders):
            sender = Sender(system, f"sender{index}", channels, edge=index % 2)
            await sender.connect()
            senders.append(sender)
        results = []
        for rate in args.rates:
            result = {"system": system.name, **await drive(fleets, senders, channels, sizes, rate, args.duration)}
            results.append(result)
            print_progress(result)
        good = [r["rate_in"] for r in results if r["p99_ms"] is not None and r["p99_ms"] < 100 and r["lost"] == 0]
        return {"results": results, "clients": args.clients, "channels": args.channels,
                "channel_sizes": [sizes[c] for c in channels],
                "highest_rate_p99_under_100ms": max(good) if good else None}
    finally:
        for sender in senders:
            await sender.close()
        for fleet in fleets:
            await fleet.stop()
        await system.stop()


# ---------------------------------------------------------------- ingest


async def scenario_ingest(args: argparse.Namespace) -> dict[str, Any]:
    versions: list[tuple[str, Path | None, dict[str, str]]] = [("chatd", None, {})]
    if "off" in args.history:  # the same without channel history, to see what keeping it costs
        versions.append(("chatd, no history", None, {"HISTORY_LIMIT": "0"}))
    if "on" not in args.history:
        versions.pop(0)
    if args.baseline_code:
        versions.append(("baseline", Path(args.baseline_code).resolve(), {}))
    results = []
    for _ in range(args.rounds):  # rounds alternate the versions: drift on the machine hits each alike
        for name, code, env in versions:
            results.append(await ingest_one(args, name, code, env))
    ratios = []
    if args.baseline_code:
        row: dict[str, Any] = {"hot_share": args.hot_share}
        for value in ("accepted_per_s", "clue_cpu_us_per_accepted", "cluster_cpu_us_per_accepted"):
            by_version = median_by(results, "hot_share", value)[args.hot_share]
            row[f"{value}, chatd/baseline"] = round(by_version["chatd"] / by_version["baseline"], 3)
        ratios.append(row)
    return {"results": results, "ratios": ratios}


async def ingest_one(args: argparse.Namespace, name: str, code: Path | None, env: dict[str, str]
                     ) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    transport, counter = await statsd_sink()
    system = ChatdSystem(edges=1, shards=3, env={"STATSD_PORT": str(transport.get_extra_info("sockname")[1]), **env},
                         code=code, name=name)
    await system.start()
    try:
        cluster = system.cluster
        clue_url = cluster.clue_urls[0]
        headers = {"Authorization": f"Bearer {cluster.internal_token}"}
        users = [wire.Identity(login=f"user{i}", user_id=str(10_000 + i), display_name=f"user{i}")
                 for i in range(args.users)]
        cold = [f"#cold{i}" for i in range(20)]
        before = {a: await commandstats(a) for a in cluster.redis_addresses}
        cpu_before = cpu_by_kind(system)
        accepted = sent = 0
        counter.clear()
        deadline = loop.time() + args.duration
        sequence = 0

        async def driver(session: aiohttp.ClientSession, worker: int) -> None:
            nonlocal accepted, sent, sequence
            while loop.time() < deadline:
                batch = []
                for _ in range(args.batch):
                    sequence += 1
                    channel = "#hot" if random.random() < args.hot_share else random.choice(cold)
                    batch.append(wire.Submission(id=str(uuid.uuid4()), channel=channel, text=f"m {sequence}",
                                                 identity=users[sequence % len(users)], origin="bench/0"))
                body = wire.encode(wire.SubmitBatch(batch))
                async with session.post(f"{clue_url}/v1/messages", data=body, headers=headers) as r:
                    results = wire.decode(await r.read(), wire.SubmitResults).results
                sent += len(batch)
                accepted += sum(1 for result in results if result.ok)

        started = loop.time()
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(driver(session, w) for w in range(args.concurrency)))
        elapsed = loop.time() - started
        cpu = {kind: used - cpu_before.get(kind, 0.0) for kind, used in cpu_by_kind(system).items()}
        # Clue's counters reach statsd once a second: wait for this run's to arrive.
        deadline = loop.time() + 5
        while counter.counts["chatd.clue.messages.accepted"] < accepted and loop.time() < deadline:
            await asyncio.sleep(0.05)
        after = {a: await commandstats(a) for a in cluster.redis_addresses}
        calls = {a: after[a] - before[a] for a in before}
        commands = {a: sum(c.values()) for a, c in calls.items()}
        total_commands = sum(commands.values())
        scripts = sum(c["evalsha"] + c["eval"] for c in calls.values())
        round_trips = counter.count("chatd.clue.redis.*.check")
        result = {
            "system": name,
            "sent": sent,
            "accepted": accepted,
            "accepted_per_s": round(accepted / elapsed),
            # What a message costs the clue process (and the whole cluster): steadier than throughput
            # on a small shared machine, where the driver competes for the same cores.
            "clue_cpu_us_per_accepted": round(cpu.get("clue", 0.0) / max(accepted, 1) * 1e6, 2),
            "cluster_cpu_us_per_accepted": round(sum(cpu.values()) / max(accepted, 1) * 1e6, 2),
            "redis_scripts_per_accepted": round(scripts / max(accepted, 1), 3),
            # Every command a shard ran, those inside the check script included.
            "redis_commands_per_accepted": round(total_commands / max(accepted, 1), 3),
            "redis_round_trips_per_accepted": round(round_trips / max(accepted, 1), 3),
            "shard_share": {a: round(n / max(total_commands, 1), 3) for a, n in commands.items()},
            "hottest_shard_share": round(max(commands.values(), default=0) / max(total_commands, 1), 3),
            "hot_share": args.hot_share,
            "batch": args.batch,
            "concurrency": args.concurrency,
        }
        print_progress(result)
        return result
    finally:
        transport.close()
        await system.stop()


# ---------------------------------------------------------------- memory


async def scenario_memory(args: argparse.Namespace) -> dict[str, Any]:
    results = []
    for transport_name in args.transports:
        system = ChatdSystem(edges=1, shards=1)
        await system.start()
        fleet = FleetGroup()
        try:
            [edge_pid] = system.server_pids()
            baseline = rss_kib(edge_pid)
            port = system.irc_port() if transport_name == "tcp" else system.ws_port()
            channels = [f"#idle{i % 100}" for i in range(args.connections)]
            await fleet.start(
                FleetConfig(host="127.0.0.1", port=port, transport=transport_name, dialect="twitch",
                            caps="twitch.tv/tags twitch.tv/commands", channels=channels),
                processes=max(1, args.connections // 15_000 + 1),
            )
            await settle(fleet)
            loaded = rss_kib(edge_pid)
            result = {
                "system": "chatd",
                "transport": transport_name,
                "connections": fleet.joined,
                "edge_rss_before_kib": baseline,
                "edge_rss_after_kib": loaded,
                "kib_per_connection": round((loaded - baseline) / max(fleet.joined, 1), 2),
            }
            results.append(result)
            print_progress(result)
        finally:
            await fleet.stop()
            await system.stop()
    return {"results": results}


# ---------------------------------------------------------------- keepalive


async def scenario_keepalive(args: argparse.Namespace) -> dict[str, Any]:
    system = ChatdSystem(edges=1, shards=1)
    await system.start()
    try:
        cluster = system.cluster
        edge_url = cluster.components["edge-0"].addresses["http"]
        headers = {"Authorization": f"Bearer {cluster.internal_token}", "Content-Type": "application/json"}
        body = wire.encode(wire.DeliverBatch(boot="bench", events=[
            wire.Event(channel="#nobody", command="PRIVMSG", line=":a!a@a PRIVMSG #nobody :x", seq=1)]))
        results = []
        for mode in ("keepalive", "new-connection"):
            connector = aiohttp.TCPConnector(limit=args.concurrency, force_close=(mode == "new-connection"))
            async with aiohttp.ClientSession(connector=connector) as session:
                remaining = args.requests

                async def worker() -> None:
                    nonlocal remaining
                    while remaining > 0:
                        remaining -= 1
                        async with session.post(f"{edge_url}/v1/deliver", data=body, headers=headers) as r:
                            assert r.status == 200, await r.text()
                            await r.read()

                started = time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(args.concurrency)))
                elapsed = time.perf_counter() - started
            result = {"system": "chatd", "mode": mode, "requests": args.requests,
                      "requests_per_s": round(args.requests / elapsed), "elapsed_s": round(elapsed, 3)}
            results.append(result)
            print_progress(result)
        ratio = round(results[0]["requests_per_s"] / max(results[1]["requests_per_s"], 1), 2)
        return {"results": results, "keepalive_over_new_connection": ratio}
    finally:
        await system.stop()


# ---------------------------------------------------------------- output



def print_table(report: dict[str, Any]) -> None:
    rows = report["results"]
    columns = [key for key in rows[0] if not isinstance(rows[0][key], (dict, list))]
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    print(f"scenario: {report['scenario']}")
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))
    for key, value in report.items():
        if key not in ("scenario", "machine", "results"):
            print(f"{key}: {json.dumps(value)}")


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["results"]
    figure, axis = plt.subplots(figsize=(8, 4.5))
    scenario = report["scenario"]
    if scenario == "fanout":
        sizes = sorted({r["subscribers"] for r in rows})
        systems = list(dict.fromkeys(r["system"] for r in rows))
        width = 0.8 / len(systems)
        for i, name in enumerate(systems):
            values = [next((r["deliveries_per_s"] for r in rows if r["system"] == name and r["subscribers"] == s), 0)
                      for s in sizes]
            axis.bar([x + i * width for x in range(len(sizes))], values, width, label=name)
        axis.set_xticks([x + width * (len(systems) - 1) / 2 for x in range(len(sizes))], [str(s) for s in sizes])
        axis.set_xlabel("subscribers in one channel")
        axis.set_ylabel("deliveries per second")
        axis.legend()
    elif scenario == "e2e":
        rates = [r["rate_in"] for r in rows]
        axis.plot(rates, [r["p50_ms"] or 0 for r in rows], marker="o", label="p50")
        axis.plot(rates, [r["p99_ms"] or 0 for r in rows], marker="o", label="p99")
        axis.axhline(100, color="grey", linestyle="--", label="100 ms")
        axis.set_xlabel("messages per second in")
        axis.set_ylabel("send→receive latency (ms)")
        axis.legend()
    elif scenario == "ingest":
        shares = rows[0]["shard_share"]
        axis.bar(list(shares), list(shares.values()))
        axis.set_ylabel("share of Redis commands")
        axis.set_title(f"{rows[0]['accepted_per_s']} accepted/s, hot channel {rows[0]['hot_share']:.0%} of traffic")
    elif scenario == "memory":
        axis.bar([r["transport"] for r in rows], [r["kib_per_connection"] for r in rows])
        axis.axhline(16, color="grey", linestyle="--", label="16 KiB target")
        axis.set_ylabel("KiB per idle connection")
        axis.legend()
    elif scenario == "steady":
        steady.plot(axis, rows)
    elif scenario == "highlights":
        highlights.plot(axis, rows)
    elif scenario == "backfill":
        names = [f"{r['workers']} proc., {r['run']}" for r in rows]
        axis.bar(names, [r["compute_s"] for r in rows], label="archive and core")
        axis.bar(names, [r["reconcile_s"] for r in rows], bottom=[r["compute_s"] for r in rows],
                 label="reconcile with Redis")
        axis.axhline(60, color="grey", linestyle="--", label="60 s target")
        axis.set_ylabel(f"seconds for {rows[0]['events_read']:,} events")
        axis.legend()
    elif scenario == "tpp":
        tpp.plot(axis, rows)
    elif scenario == "keepalive":
        axis.bar([r["mode"] for r in rows], [r["requests_per_s"] for r in rows])
        axis.set_ylabel("exchange→edge deliveries (requests/s)")
    axis.set_title(f"chatd bench {scenario}" + (f" — {axis.get_title()}" if axis.get_title() else ""))
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


SCENARIOS: dict[str, Callable[[argparse.Namespace], Awaitable[dict[str, Any]]]] = {
    "fanout": scenario_fanout,
    "e2e": scenario_e2e,
    "ingest": scenario_ingest,
    "memory": scenario_memory,
    "keepalive": scenario_keepalive,
    "steady": steady.scenario_steady,
    "presence": presence.scenario_presence,
    "highlights": highlights.scenario_highlights,
    "backfill": backfill.scenario_backfill,
    "tpp": tpp.scenario_tpp,
}


def steps(args: argparse.Namespace) -> int | None:
    """How many results a scenario prints, each a step of its progress bar."""
    baseline = 1 if args.baseline_code else 0
    ingest_versions = len(set(args.history)) + baseline
    return {
        "fanout": args.rounds * (len(args.systems) + baseline) * len(args.subscribers),
        "e2e": len(args.rates),
        "ingest": args.rounds * ingest_versions,
        "memory": len(args.transports),
        "keepalive": 2,
        "steady": (len(args.steady_systems) + baseline) * len(args.rates),
        "presence": 2,
        "highlights": args.rounds * 2,
        "backfill": 2 * len(args.backfill_workers),
        "tpp": len(args.workers) * len(args.hot_rates),
    }.get(args.scenario)


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="chatd bench")
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--json", type=Path, help="write results here (and a PNG plot beside it)")
    parser.add_argument("--plot", type=Path, help="PNG plot path (default: the --json path with .png)")
    fanout = parser.add_argument_group("fanout")
    fanout.add_argument("--subscribers", type=int, nargs="+", default=[1000, 5000, 10000])
    fanout.add_argument("--messages", type=int, default=200)
    fanout.add_argument("--systems", nargs="+", default=["chatd", "ngircd", "raw"], choices=["chatd", "ngircd", "raw"])
    fanout.add_argument("--fleet-processes", type=int, default=1)
    e2e = parser.add_argument_group("e2e")
    e2e.add_argument("--clients", type=int, default=5000)
    e2e.add_argument("--channels", type=int, default=50)
    e2e.add_argument("--rates", type=int, nargs="+", default=[500, 1000, 2000, 3000])
    e2e.add_argument("--duration", type=float, help="seconds per rate (e2e, default 10) or in all (ingest, default 5)")
    e2e.add_argument("--senders", type=int, default=4)
    ingest = parser.add_argument_group("ingest")
    ingest.add_argument("--users", type=int, default=2000)
    ingest.add_argument("--hot-share", type=float, default=0.9)
    ingest.add_argument("--batch", type=int, default=100)
    ingest.add_argument("--concurrency", type=int, default=4)
    ingest.add_argument("--history", nargs="+", choices=["on", "off"], default=["on"],
                        help="run with channel history kept (on), without (off), or both")
    memory = parser.add_argument_group("memory")
    memory.add_argument("--connections", type=int, default=10000)
    memory.add_argument("--transports", nargs="+", default=["tcp", "ws"], choices=["tcp", "ws"])
    keepalive = parser.add_argument_group("keepalive")
    keepalive.add_argument("--requests", type=int, default=5000)
    versions = parser.add_argument_group("versions (fanout, ingest, steady)")
    versions.add_argument("--baseline-code", help="also run chatd from this checkout (another version)")
    versions.add_argument("--baseline-name", help="how to name that version in the results")
    versions.add_argument("--rounds", type=int, default=1, help="fanout, ingest, highlights: run every system this "
                                                                "many times, alternating; ratios compare medians")
    steady.add_arguments(parser)
    presence.add_arguments(parser)
    highlights.add_arguments(parser)
    backfill.add_arguments(parser)
    tpp.add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(args)


def run(args: argparse.Namespace) -> int:
    import uvloop

    if args.duration is None:
        args.duration = {"e2e": 10.0, "ingest": 5.0}.get(args.scenario, 10.0)
    if args.viewers is None:
        args.viewers = {"tpp": 60_000}.get(args.scenario, 100_000)
    report = {"scenario": args.scenario, "machine": machine()}
    with progress_of(steps(args), f"bench {args.scenario}"):
        report.update(uvloop.run(SCENARIOS[args.scenario](args)))
    print_table(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    plot_path = args.plot or (args.json.with_suffix(".png") if args.json else None)
    if plot_path:
        plot(report, plot_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
