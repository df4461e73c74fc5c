"""`chatd bench backfill`: what a day's session backfill costs.

Writes an archive of `--streams` channels live every minute of a UTC day
(`--minutes` 1,440: 14.4 million events for 10,000 channels), in the exchanges'
format (common/archive.py), with `--neighbors` the days before and after as
well (the streams then run through the day, as for a channel that never stops),
then times `chatd sessions backfill` of that day against real Redis shards:
a first run that inserts every session, a second that finds nothing to change.
Also measured: what counting a chat message for summaries costs the exchange
(analytics.summaries.ChatMinutes), per message.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from analytics.sessions import DAY
from analytics.summaries import ChatMinutes
from chatd.backfill import backfill
from chatd.cluster import ClusterConfig, LocalCluster, free_port
from common import archive
from common.metrics import Metrics
from common.sessions import SessionSettings, SessionStore, day_start_of
from common.shards import ShardSet
from loadtest.measure import print_note, print_progress

DAY_BENCHED = "2026-03-05"


def write_archive(root: Path, first_day: int, days: int, channels: int, minutes: int) -> int:
    """Every channel live at each of the first `minutes` minutes of each day; returns events."""
    suffixes = [f",{1_000_000 + i},#bench{i},broadcast\n" for i in range(channels)]
    events = 0
    for day in range(days):
        for minute in range(minutes):
            at = first_day + day * DAY + minute * 60
            directory, prefix = archive.hour_dir(root, at - at % archive.HOUR)
            directory.mkdir(parents=True, exist_ok=True)
            with open(directory / f"{prefix}bench.csv", "a") as out:
                if out.tell() == 0:
                    out.write(archive.HEADER)
                stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))
                out.write("".join([stamp + suffix for suffix in suffixes]))
            events += channels
    return events


def chat_cost(messages: int = 500_000) -> float:
    """µs per chat message counted for summaries (tags as clue stamps them, a third with an emote)."""
    minutes = ChatMinutes(60)
    tags = ("badge-info=;badges=;color=#1E90FF;display-name=Viewer;emotes={};first-msg=0;flags=;id=x;mod=0;"
            "room-id=1;subscriber=0;tmi-sent-ts=1;turbo=0;user-id={};user-type=")
    prepared = [(tags.format("25:0-4" if i % 3 == 0 else "", i % 5000), f"{i % 5000}") for i in range(1000)]
    started = time.perf_counter()
    now_ms = 1_772_700_000_000
    for i in range(messages):
        tag, user = prepared[i % 1000]
        minutes.add("#busy", now_ms + i, user, tag, "Kappa hello")
    minutes.ended(float("inf"), "bench")
    return (time.perf_counter() - started) / messages * 1e6


async def scenario_backfill(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="chatd-backfill-"))
    cluster = LocalCluster(ClusterConfig(data_dir=root / "redis", shards=3))
    (root / "redis" / "logs").mkdir(parents=True)
    try:
        d0 = day_start_of(DAY_BENCHED)
        days = 3 if args.neighbors else 1
        started = time.perf_counter()
        written = await asyncio.to_thread(write_archive, root / "archive", d0 - DAY if args.neighbors else d0, days,
                                          args.streams, args.minutes)
        print_note({"archive_events": written, "written_s": round(time.perf_counter() - started, 1)})
        for index in range(3):
            await cluster.start_redis(index, free_port())
        shards = ShardSet([(a.split(":")[0], int(a.split(":")[1])) for a in cluster.redis_addresses], 4, 30.0,
                          Metrics("127.0.0.1", 8125, "chatd", "bench"))
        store = SessionStore(shards, timeout=30.0)
        results = []
        try:
            for workers in args.backfill_workers:  # each worker count inserts every session, then finds nothing to change
                await store.delete([(f"{1_000_000 + i}", d0) for i in range(args.streams)])
                for run in ("first", "second"):
                    results.append(await one_run(store, root, d0, workers, run, args.streams, written))
        finally:
            await shards.close()
        ratios = [{"workers": w, "seconds, 1 worker / this": round(
            _median(results, args.backfill_workers[0]) / _median(results, w), 2)} for w in args.backfill_workers[1:]]
        return {"results": results, "ratios": ratios, "chat_counting_us_per_message": round(chat_cost(), 2),
                "cores": os.cpu_count()}
    finally:
        await cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def _median(results: list[dict[str, Any]], workers: int) -> float:
    return statistics.median(r["seconds"] for r in results if r["workers"] == workers)


async def one_run(store: SessionStore, root: Path, d0: int, workers: int, run: str, streams: int, written: int
                  ) -> dict[str, Any]:
    outcome = await backfill(store, root / "archive", DAY_BENCHED, SessionSettings(), workers=workers,
                             now=d0 + 3 * DAY)
    result = {
        "system": "chatd",
        "run": run,
        "channels": streams,
        "archive_events": written,
        "events_read": outcome.events,
        "workers": workers,
        "seconds": round(outcome.seconds, 2),
        "compute_s": round(outcome.compute_seconds, 2),
        "reconcile_s": round(outcome.seconds - outcome.compute_seconds, 2),
        "events_per_s": round(outcome.events / outcome.seconds),
        "sessions": outcome.computed,
        "inserted": outcome.inserted,
        "unchanged": outcome.unchanged,
    }
    print_progress(result)
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("backfill")
    group.add_argument("--streams", type=int, default=10_000, help="backfill: channels live all day")
    group.add_argument("--minutes", type=int, default=1440, help="backfill: live minutes of each channel a day")
    group.add_argument("--backfill-workers", type=int, nargs="+", default=[1, os.cpu_count() or 1],
                       help="backfill: processes, one run (and a second) per count, side by side")
    group.add_argument("--neighbors", action="store_true",
                       help="backfill: the days before and after are in the archive too (streams run through)")
