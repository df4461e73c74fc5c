"""The routing table: which cluster (main, event, group) carries each channel.

It lives in Redis under one hash tag (so on one shard) and is durable like the
rest of the chat state. Each entry is `cluster:version`; the version grows
with every change so a move can be told apart from an older one. Every clue
keeps the whole table in memory and reloads an entry when a change is
announced on the `chatd:routes` pub/sub channel, so looking up a route costs
nothing per message.
"""
from __future__ import annotations

from clue.shards import ShardSet, pipeline_call

TABLE = "{routes}:table"
VERSION = "{routes}:version"
ANNOUNCE = "chatd:routes"
DEFAULT_CLUSTER = "main"


def _decode(raw: bytes | None) -> tuple[str, int]:
    if not raw:
        return DEFAULT_CLUSTER, 0
    cluster, _, version = raw.decode().partition(":")
    return cluster, int(version or 0)


class RouteTable:
    def __init__(self, shards: ShardSet) -> None:
        self._shards = shards
        self._shard = shards.for_key(TABLE)
        self.routes: dict[str, tuple[str, int]] = {}

    async def load(self) -> None:
        [table] = await pipeline_call(self._shard, "routes_load", [("HGETALL", TABLE)])
        self.routes = {channel.decode(): _decode(value) for channel, value in (table or {}).items()}

    def cluster_for(self, channel: str) -> str:
        return self.routes.get(channel, (DEFAULT_CLUSTER, 0))[0]

    def version_for(self, channel: str) -> int:
        return self.routes.get(channel, (DEFAULT_CLUSTER, 0))[1]

    async def refresh(self, channel: str) -> tuple[tuple[str, int], tuple[str, int]]:
        """Reload one entry after an announcement; returns (before, after)."""
        [raw] = await pipeline_call(self._shard, "routes_load", [("HGET", TABLE, channel)])
        before = self.routes.get(channel, (DEFAULT_CLUSTER, 0))
        after = self.routes[channel] = _decode(raw)
        return before, after

    async def set(self, channel: str, cluster: str) -> int:
        """Route `channel` to `cluster` and announce it; returns the new version."""
        [version] = await pipeline_call(self._shard, "routes_write", [("INCR", VERSION)])
        await pipeline_call(
            self._shard,
            "routes_write",
            [("HSET", TABLE, channel, f"{cluster}:{version}"), ("PUBLISH", ANNOUNCE, channel)],
        )
        self.routes[channel] = (cluster, int(version))
        return int(version)


# ---- `chatd route list | get CHANNEL | set CHANNEL CLUSTER`


def add_arguments(parser) -> None:
    parser.add_argument("action", choices=["list", "get", "set"])
    parser.add_argument("channel", nargs="?")
    parser.add_argument("cluster", nargs="?")
    parser.add_argument("--data-dir", help="a `chatd up` data dir to read CACHE_SERVERS from (default .chatd)")


def run(args) -> int:
    import asyncio
    import json
    import os
    import sys
    from pathlib import Path

    from common.config import parse_address
    from common.metrics import Metrics

    def fail(text: str, code: int = 2) -> int:
        print(f"chatd route: {text}", file=sys.stderr)
        return code

    servers = os.environ.get("CACHE_SERVERS", "")
    described = Path(args.data_dir or os.environ.get("CHATD_DATA_DIR") or ".chatd") / "cluster.json"
    if not servers and described.exists():
        servers = ",".join(json.loads(described.read_text())["cache_servers"])
    if not servers:
        return fail("set CACHE_SERVERS or run from the directory of `chatd up`")
    if args.action in ("get", "set") and not args.channel:
        return fail(f"{args.action} needs a CHANNEL")
    if args.action == "set" and (not args.cluster or not args.cluster.isalnum()):
        return fail("set needs a CLUSTER name (letters and digits)")
    channel = "#" + args.channel.lstrip("#").lower() if args.channel else ""

    async def act() -> int:
        try:
            addresses = [parse_address(item) for item in servers.split(",") if item.strip()]
        except ValueError as exc:
            return fail(f"CACHE_SERVERS: {exc}")
        shards = ShardSet(addresses, 2, 2.0, Metrics("127.0.0.1", 8125, "chatd", "cli"))
        table = RouteTable(shards)
        try:
            await table.load()
            if args.action == "list":
                for name, (cluster, version) in sorted(table.routes.items()):
                    print(f"{name} {cluster} v{version}")
            elif args.action == "get":
                print(table.cluster_for(channel))
            else:
                version = await table.set(channel, args.cluster.lower())
                print(f"{channel} {args.cluster.lower()} v{version}")
        except Exception as exc:  # an unreachable shard: one line, no traceback
            return fail(str(exc), 1)
        finally:
            await shards.close()
        return 0

    return asyncio.run(act())
