"""The routing table: which cluster (main, event, group) carries each channel.

It lives in Redis under one hash tag (so on one shard) and is durable like the
rest of the chat state. Each entry is `cluster:version`; the version grows
with every change so a move can be told apart from an older one. Every clue
keeps the whole table in memory and reloads an entry when a change is
announced on the `chatd:routes` pub/sub channel, so looking up a route costs
nothing per message.
"""
from __future__ import annotations

from common.shards import ShardSet, pipeline_call

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
