"""`chatd bench presence`: what a huge channel's presence costs.

100,000 logged-in viewers come into one channel and leave again, their changes
posted to clue as edges send them (one batch per edge per tick: `--chunk`
changes to a request, 500 by default, as from many edges at once). Measured: Redis commands per change and the hottest shard's share of
them (members are spread over 64 buckets), clue CPU per change, and how many
JOIN and PART lines reach a twitch.tv/membership client in the channel: the
first MEMBERSHIP_LIMIT (1,000) viewers' joins, then none, so a channel's size
never becomes a line per viewer on every edge.
"""
from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import aiohttp

from common import wire
from common.tokens import issue_token
from loadtest.measure import commandstats, cpu_by_kind, print_progress
from loadtest.systems import ChatdSystem

CHANNEL = "#presence"


class Watcher:
    """A plain IRC connection with twitch.tv/membership in the channel, counting JOIN and PART lines."""

    def __init__(self) -> None:
        self.joins = self.parts = 0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, system: ChatdSystem) -> None:
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", system.irc_port())
        token = issue_token(system.cluster.secret, "presencewatcher")
        self._writer.write(f"CAP REQ :twitch.tv/membership\r\nPASS oauth:{token}\r\nNICK presencewatcher\r\n"
                           f"JOIN {CHANNEL}\r\n".encode())
        while b" 366 " not in await self._reader.readline():
            pass
        self._task = asyncio.get_running_loop().create_task(self._count())

    async def _count(self) -> None:
        assert self._reader is not None
        while line := await self._reader.readline():
            if b" JOIN " in line:
                self.joins += 1
            elif b" PART " in line:
                self.parts += 1

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._writer is not None:
            self._writer.close()


async def scenario_presence(args: argparse.Namespace) -> dict[str, Any]:
    system = ChatdSystem(edges=1, shards=3)
    await system.start()
    watcher = Watcher()
    try:
        await watcher.start(system)
        cluster = system.cluster
        url = f"{cluster.clue_urls[0]}/v1/presence"
        headers = {"Authorization": f"Bearer {cluster.internal_token}"}
        results = []
        async with aiohttp.ClientSession() as http:
            for present in (True, False):
                changes = [wire.PresenceChange(CHANNEL, f"viewer{i}", str(1_000_000 + i), present)
                           for i in range(args.viewers)]
                before = {a: await commandstats(a) for a in cluster.redis_addresses}
                cpu_before = cpu_by_kind(system)
                lines = 0
                started = time.perf_counter()
                for start in range(0, len(changes), args.chunk):
                    body = wire.encode(wire.PresenceBatch(changes[start:start + args.chunk]))
                    async with http.post(url, data=body, headers=headers) as response:
                        response.raise_for_status()
                        lines += (await response.json())["lines"]
                elapsed = time.perf_counter() - started
                cpu = {kind: used - cpu_before.get(kind, 0.0) for kind, used in cpu_by_kind(system).items()}
                after = {a: await commandstats(a) for a in cluster.redis_addresses}
                commands = {a: sum((after[a] - before[a]).values()) for a in before}
                total = sum(commands.values())
                result = {
                    "system": "chatd",
                    "change": "join" if present else "leave",
                    "viewers": args.viewers,
                    "changes_per_s": round(args.viewers / elapsed),
                    "redis_commands_per_change": round(total / args.viewers, 3),
                    "hottest_shard_share": round(max(commands.values()) / max(total, 1), 3),
                    "clue_cpu_us_per_change": round(cpu.get("clue", 0.0) / args.viewers * 1e6, 2),
                    "lines_published": lines,
                }
                results.append(result)
                print_progress(result)
        # Lines published reach the watcher through the exchange and edge: wait for them (bounded).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        expected = sum(r["lines_published"] for r in results)
        while watcher.joins + watcher.parts < expected and loop.time() < deadline:
            await asyncio.sleep(0.05)
        return {"results": results, "membership_lines_received": {"JOIN": watcher.joins, "PART": watcher.parts}}
    finally:
        await watcher.stop()
        await system.stop()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    presence = parser.add_argument_group("presence")
    presence.add_argument("--viewers", type=int,
                          help="viewers joining (presence, default 100,000); connections in all (tpp, default 60,000)")
    presence.add_argument("--chunk", type=int, default=500, help="changes per request (an edge's tick)")
