"""`chatd bench steady`: the same steady traffic through each system, side by side.

One fleet of listeners in Zipf-sized channels, the same senders and the same
fixed rates go through chatd, ngIRCd and the raw uvloop relay (one write per
delivery: the machine's ceiling), and optionally through chatd built from
another checkout (`--baseline-code PATH`, to compare versions) — in one run.
Per system and rate: deliveries/s, send→receive p50/p99/max, lost, and the CPU
seconds each kind of server process spent per 1,000 deliveries; for chatd also
the edge's CPU microseconds per delivery and clue's per ingested message.
"""
from __future__ import annotations

import argparse
import asyncio
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadtest.fleet import FleetConfig, FleetGroup
from loadtest.measure import cpu_by_kind, print_progress
from loadtest.systems import ChatdSystem, NgircdSystem, RawSystem, Sender, System
from loadtest.traffic import drive, zipf_sizes


def systems(args: argparse.Namespace) -> dict[str, Callable[[], System]]:
    factories: dict[str, Callable[[], System]] = {
        "chatd": lambda: ChatdSystem(edges=args.edges, shards=3),
        "ngircd": NgircdSystem,
        "raw": RawSystem,
    }
    if args.baseline_code:
        code = Path(args.baseline_code).resolve()
        factories["baseline"] = lambda: ChatdSystem(edges=args.edges, shards=3, code=code,
                                                    name=f"chatd@{args.baseline_name or code.name}")
    return factories


async def run_system(system: System, args: argparse.Namespace) -> list[dict[str, Any]]:
    channels = [f"#steady{i}" for i in range(args.channels)]
    sizes = dict(zip(channels, zipf_sizes(args.clients, args.channels), strict=True))
    members = [channel for channel in channels for _ in range(sizes[channel])]
    random.Random(7).shuffle(members)
    edges = args.edges if isinstance(system, ChatdSystem) else 1
    caps = "twitch.tv/tags twitch.tv/commands" if system.dialect == "twitch" else ""
    fleets: list[FleetGroup] = []
    senders: list[Sender] = []
    try:
        for edge in range(edges):
            fleet = FleetGroup()
            await fleet.start(FleetConfig(
                host="127.0.0.1", port=system.irc_port(edge), transport="tcp", dialect=system.dialect, caps=caps,
                channels=members[edge::edges], probe_every=max(1, args.clients // 200),
                first_index=edge * args.clients, connect_concurrency=50, ready_timeout=600,
            ))
            fleets.append(fleet)
        for index in range(args.senders):
            sender = Sender(system, f"sender{index}", channels, edge=index % edges)
            await sender.connect()
            senders.append(sender)
        results = []
        for rate in args.rates:
            before = cpu_by_kind(system)
            result = await drive(fleets, senders, channels, sizes, rate, args.duration)
            after = cpu_by_kind(system)
            spent = {kind: after[kind] - before.get(kind, 0.0) for kind in after}
            delivered = max(result["delivered"], 1)
            result = {"system": system.name, **result,
                      "cpu_s_per_1000_deliveries": {kind: round(seconds * 1000 / delivered, 4)
                                                    for kind, seconds in spent.items()},
                      "cpu_s_per_1000_deliveries_total": round(sum(spent.values()) * 1000 / delivered, 4)}
            if isinstance(system, ChatdSystem):
                result["edge_us_per_delivery"] = round(spent.get("edge", 0.0) * 1e6 / delivered, 2)
                result["clue_us_per_message"] = round(spent.get("clue", 0.0) * 1e6 / max(result["sent"], 1), 1)
            results.append(result)
            print_progress(result)
        return results
    finally:
        for sender in senders:
            await sender.close()
        for fleet in fleets:
            await fleet.stop()


def plot(axis, rows: list[dict[str, Any]]) -> None:
    """CPU seconds per 1,000 deliveries by system and rate (lower is better)."""
    names = list(dict.fromkeys(r["system"] for r in rows))
    rates = list(dict.fromkeys(r["rate_in"] for r in rows))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        values = [next((r["cpu_s_per_1000_deliveries_total"] for r in rows
                        if r["system"] == name and r["rate_in"] == rate), 0) for rate in rates]
        axis.bar([x + i * width for x in range(len(rates))], values, width, label=name)
    axis.set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(rates))], [str(r) for r in rates])
    axis.set_xlabel("messages per second in")
    axis.set_ylabel("server CPU seconds per 1,000 deliveries")
    axis.legend()


def ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """chatd over each other system, per rate: deliveries/s, p99, CPU per delivery."""
    rows = []
    for rate in dict.fromkeys(r["rate_in"] for r in results):
        at = {r["system"]: r for r in results if r["rate_in"] == rate}
        chatd = at.get("chatd")
        if chatd is None:
            continue
        row: dict[str, Any] = {"rate_in": rate}
        for name, other in at.items():
            if name == "chatd":
                continue
            row[f"chatd/{name} cpu per delivery"] = round(
                chatd["cpu_s_per_1000_deliveries_total"] / max(other["cpu_s_per_1000_deliveries_total"], 1e-9), 2)
            if chatd["p99_ms"] is not None and other["p99_ms"]:
                row[f"chatd/{name} p99"] = round(chatd["p99_ms"] / other["p99_ms"], 2)
            if "edge_us_per_delivery" in other:
                row["edge cpu per delivery, chatd/baseline"] = round(
                    chatd["edge_us_per_delivery"] / max(other["edge_us_per_delivery"], 1e-9), 3)
                row["clue cpu per message, chatd/baseline"] = round(
                    chatd["clue_us_per_message"] / max(other["clue_us_per_message"], 1e-9), 3)
        rows.append(row)
    return rows


async def scenario_steady(args: argparse.Namespace) -> dict[str, Any]:
    factories = systems(args)
    results: list[dict[str, Any]] = []
    for name in args.steady_systems + (["baseline"] if args.baseline_code else []):
        system = factories[name]()
        await system.start()
        try:
            results += await run_system(system, args)
        finally:
            await system.stop()
        await asyncio.sleep(0)
    return {"results": results, "ratios": ratios(results), "clients": args.clients, "channels": args.channels}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    steady = parser.add_argument_group("steady")
    steady.add_argument("--steady-systems", nargs="+", default=["chatd", "ngircd", "raw"],
                        choices=["chatd", "ngircd", "raw"])
    steady.add_argument("--edges", type=int, default=1)
