"""What the operator console asks clue (internal API, behind the internal token):
the Redis shards as they see themselves, the route table and moving a channel
(what `chatd route set` does), and the moderation log."""
from __future__ import annotations

import asyncio

from aiohttp import web

from clue.modlog import ModerationLog
from clue.routes import RouteTable
from common import twitch
from common.internal_http import ApiError, read_body, reply
from common.shards import Shard, ShardSet, ShardUnavailable
from common.wire import ModerationLog as ModerationLogReply
from common.wire import RouteChange, RouteEntry, RouteList, ShardsReply, ShardStatus

MODLOG_LIMIT = 200


class OperatorApi:
    def __init__(self, shards: ShardSet, routes: RouteTable, clusters: list[str], modlog: ModerationLog) -> None:
        self.shards = shards
        self.table = routes
        self.clusters = clusters
        self.modlog = modlog

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v1/shards", self.on_shards),
            web.get("/v1/routes", self.on_routes),
            web.post("/v1/routes", self.on_route_change),
            web.get("/v1/modlog", self.on_modlog),
        ]

    async def on_shards(self, request: web.Request) -> web.Response:
        return reply(ShardsReply(list(await asyncio.gather(*(shard_status(shard) for shard in self.shards)))))

    async def on_routes(self, request: web.Request) -> web.Response:
        return reply(self._table())

    def _table(self) -> RouteList:
        return RouteList(clusters=self.clusters, routes=[
            RouteEntry(channel, cluster, version) for channel, (cluster, version) in sorted(self.table.routes.items())])

    async def on_route_change(self, request: web.Request) -> web.Response:
        """Route a channel to a cluster: a live move, as `chatd route set` makes it."""
        body = await read_body(request, RouteChange)
        channel = "#" + body.channel.lstrip("#").lower()
        if not twitch.is_valid_channel(channel):
            raise ApiError(400, f"not a channel name: {body.channel!r}")
        if body.cluster not in self.clusters:
            raise ApiError(400, f"no cluster {body.cluster!r}; this deployment has {', '.join(self.clusters)}")
        try:
            version = await self.table.set(channel, body.cluster)
        except ShardUnavailable:
            raise ApiError(503, "the route table's shard is unavailable; nothing was changed") from None
        return reply(RouteEntry(channel, body.cluster, version))

    async def on_modlog(self, request: web.Request) -> web.Response:
        raw = request.query.get("channel", "")
        channel = "#" + raw.lstrip("#").lower() if raw else None
        if channel is not None and not twitch.is_valid_channel(channel):
            raise ApiError(400, f"not a channel name: {raw!r}")
        try:
            limit = min(int(request.query.get("limit", "50")), MODLOG_LIMIT)
        except ValueError:
            raise ApiError(400, "limit must be a number") from None
        try:
            entries = await self.modlog.read(channel, max(limit, 1))
        except ShardUnavailable:
            raise ApiError(503, "the moderation log is unavailable right now") from None
        return reply(ModerationLogReply(entries))


async def shard_status(shard: Shard) -> ShardStatus:
    try:
        info = await shard.call("info", lambda client: client.info(), shard.read_timeout)
    except ShardUnavailable as exc:
        return ShardStatus(shard.address, ok=False, error=str(exc)[:200])
    return ShardStatus(shard.address, ok=True, commands=int(info.get("total_commands_processed", 0)),
                       clients=int(info.get("connected_clients", 0)), memory=int(info.get("used_memory", 0)))
