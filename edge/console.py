"""The operator console's API, on every edge's public port (`/console/api/…`).

The console is a page (web/static/console.html) that polls `state` once a
second. The edge serving it asks every service for its own numbers — its
`/health` and the samples its metrics kept (`/v1/metrics`) — and a clue for the
Redis shards, the route table and the moderation log; nothing is stored for the
console anywhere. Every edge, clue and exchange of every cluster is found from
this edge's settings; other edges from the exchanges, which know every edge
that subscribes. Each call has its own short timeout: a process that does not
answer is shown down, the others as usual.

Everything here needs `Authorization: Bearer <CONSOLE_TOKEN>` (the operator
types it once into the page).
"""
from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

import aiohttp
import msgspec
import structlog
from aiohttp import web

from common import wire
from common.internal_http import InternalClient, RemoteError, json_error
from common.metrics import Metrics
from common.wire import MetricsReply, MetricsSample, RouteChange, RouteList, ShardsReply
from edge.readings import reading, shard_metric_name
from web import CONSOLE_PAGE, PAGE_HEADERS

log = structlog.get_logger()
T = TypeVar("T")

CALL_TIMEOUT = 1.0  # the console polls every second: a slower answer is a late one
EDGE_FORGET_SECONDS = 600.0  # an edge no exchange has named for this long leaves the map
SAMPLES_WANTED = 300  # at most this many samples per process and poll (the page's whole window)


class Console:
    def __init__(self, token: str, metrics: Metrics, internal_token: str, edge_id: str,
                 clue_urls: dict[str, list[str]], exchange_urls: dict[str, list[str]]) -> None:
        self._expected = f"Bearer {token}".encode()
        self._metrics = metrics
        self._internal_token = internal_token
        self.edge_id = edge_id
        self.edge_url = ""  # this edge's internal URL, known once it listens
        self.health: Callable[[], dict[str, Any]] = dict  # this edge's own /health, set by the edge
        self.clue_urls = clue_urls
        self.exchange_urls = exchange_urls
        self._clients: dict[str, InternalClient] = {}
        self._edges: dict[str, float] = {}  # other edges' URLs → when an exchange last named them

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/console", self.page),
            web.get("/console/api/state", self.guarded(self.state)),
            web.post("/console/api/routes", self.guarded(self.move)),
            web.get("/console/api/moderation", self.guarded(self.moderation)),
            web.get("/console/api/timeline", self.guarded(self.timeline)),
        ]

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()

    # ---- plumbing
    def guarded(self, handler):
        async def checked(request: web.Request) -> web.StreamResponse:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, self._expected):
                return json_error(401, "the console needs its admin token (CONSOLE_TOKEN)")
            return await handler(request)

        return checked

    def _client(self, url: str) -> InternalClient:
        client = self._clients.get(url)
        if client is None:
            client = self._clients[url] = InternalClient(f"console:{url}", url, self._internal_token, self._metrics,
                                                         timeout=CALL_TIMEOUT, max_conns=2)
        return client

    async def _clue(self, method: str, path: str, body: bytes = b"", internal: bool = True) -> tuple[int, bytes]:
        """A call to the first main-cluster clue that answers: its status and body, as they are."""
        headers = {"Content-Type": "application/json"}
        if internal:
            headers["Authorization"] = f"Bearer {self._internal_token}"
        failure = "no clue is configured"
        for url in self.clue_urls.get("main", []):
            try:
                status, _, answer = await self._client(url).forward(method, path, headers, body)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                failure = f"{url}: {str(exc)[:200] or type(exc).__name__}"
                log.warning("remote_failed", remote="clue", url=url, op="console", path=path,
                            reason=type(exc).__name__)
                continue
            return status, answer
        raise RemoteError("clue", "console", failure)

    async def _clue_json(self, path: str, kind: type[T]) -> T | None:
        """A typed answer from clue, or None when none could give one."""
        try:
            status, body = await self._clue("GET", path)
            return wire.decode(body, kind) if status == 200 else None
        except (RemoteError, *wire.DecodeError):
            return None

    async def _pass_on(self, method: str, path: str, body: bytes = b"") -> web.Response:
        """Clue's answer (a JSON body, an error in Twitch's shape) handed to the page as it is."""
        try:
            status, answer = await self._clue(method, path, body)
        except RemoteError as exc:
            return json_error(503, f"no clue answered: {exc.reason}")
        return web.Response(status=status, body=answer, content_type="application/json")

    # ---- the page
    async def page(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(CONSOLE_PAGE, headers=PAGE_HEADERS)

    # ---- state: every process, the shards and the routes
    async def state(self, request: web.Request) -> web.Response:
        try:
            since = int(request.query.get("since", "0"))
        except ValueError:
            return json_error(400, "since must be milliseconds since the epoch")
        shards_task = asyncio.ensure_future(self._shards())
        routes_task = asyncio.ensure_future(self._routes())
        nodes = [("exchange", cluster, url) for cluster, urls in self.exchange_urls.items() for url in urls]
        nodes += [("clue", cluster, url) for cluster, urls in self.clue_urls.items() for url in urls]
        nodes += [("edge", "", url) for url in sorted(self._edges)]
        shards = await shards_task
        names = {shard_metric_name(shard["address"]): shard["address"] for shard in shards}
        answers = await asyncio.gather(*(self._node(kind, cluster, url, since, names) for kind, cluster, url in nodes))
        now = time.monotonic()
        for answer in answers:  # edges named by the exchanges are asked from the next poll on
            for url in answer["health"].get("edge_urls", []):
                if url != self.edge_url:
                    self._edges[url] = now
        for url, seen in list(self._edges.items()):
            if now - seen > EDGE_FORGET_SECONDS:
                del self._edges[url]
        own = {"kind": "edge", "cluster": "", "url": self.edge_url, "name": self.edge_id, "ok": True,
               "health": self.health(), "readings": self._readings("edge", self._metrics.since(since), names)}
        edges = [own] + [answer for answer in answers if answer["kind"] == "edge"]
        others = [answer for answer in answers if answer["kind"] != "edge"]
        return web.json_response({"t": int(time.time() * 1000), "nodes": edges + others, "shards": shards,
                                  **await routes_task})

    async def _node(self, kind: str, cluster: str, url: str, since: int, shards: dict[str, str]) -> dict[str, Any]:
        client = self._client(url)
        found: dict[str, Any] = {"kind": kind, "cluster": cluster, "url": url, "ok": False, "health": {},
                                 "readings": []}
        health, metrics = await asyncio.gather(
            client.get("/health", op="console", answer=dict),
            client.get(f"/v1/metrics?since={since}", op="console", answer=MetricsReply), return_exceptions=True)
        if isinstance(health, BaseException):
            found["error"] = str(health)[:200]
            return found
        found.update(ok=bool(health.get("ok")), health=health)
        found["name"] = health.get("edge_id") or name_of(kind, cluster, url, self.clue_urls, self.exchange_urls)
        found["cluster"] = health.get("cluster", cluster)
        if isinstance(metrics, MetricsReply):
            found["readings"] = self._readings(kind, metrics.samples, shards)
        return found

    @staticmethod
    def _readings(kind: str, samples: list[MetricsSample], shards: dict[str, str]) -> list[dict[str, Any]]:
        return [reading(kind, sample, shards) for sample in samples[-SAMPLES_WANTED:]]

    async def _shards(self) -> list[dict[str, Any]]:
        answer = await self._clue_json("/v1/shards", ShardsReply)
        return [msgspec.structs.asdict(shard) for shard in answer.shards] if answer else []

    async def _routes(self) -> dict[str, Any]:
        table = await self._clue_json("/v1/routes", RouteList)
        if table is None:
            return {"clusters": sorted(self.exchange_urls), "routes": []}
        return {"clusters": table.clusters, "routes": [msgspec.structs.asdict(route) for route in table.routes]}

    # ---- actions and logs
    async def move(self, request: web.Request) -> web.Response:
        """Route a channel to a cluster (a live move, as `chatd route set`); clue checks the names."""
        try:
            change = wire.decode(await request.read(), RouteChange)
        except wire.DecodeError:
            return json_error(400, 'expected {"channel": "#name", "cluster": "event"}')
        log.info("console_route_set", channel=change.channel, cluster=change.cluster)
        return await self._pass_on("POST", "/v1/routes", wire.encode(change))

    async def moderation(self, request: web.Request) -> web.Response:
        query = request.query_string
        return await self._pass_on("GET", "/v1/modlog" + (f"?{query}" if query else ""))

    async def timeline(self, request: web.Request) -> web.Response:
        """A channel's highlights and stream sessions, through the public API; an
        API this deployment does not have (404) is "none yet", not an error."""
        channel = request.query.get("channel", "").lstrip("#").lower()
        if not channel or not channel.replace("_", "").isalnum():
            return json_error(400, "channel must be a channel name")
        found = await asyncio.gather(*(self._public_list(f"/api/v1/channels/{channel}/{what}")
                                       for what in ("highlights", "sessions")))
        return web.json_response({"channel": "#" + channel, "highlights": found[0], "sessions": found[1]})

    async def _public_list(self, path: str) -> dict[str, Any]:
        try:
            status, body = await self._clue("GET", path, internal=False)
        except RemoteError as exc:
            return {"available": False, "data": [], "error": exc.reason}
        if status == 404:
            return {"available": False, "data": []}
        try:
            answer = json.loads(body)
            data = answer.get("data", answer.get("sessions"))  # highlights: data; sessions: sessions
        except (ValueError, AttributeError):
            data = None
        if status != 200 or not isinstance(data, list):
            return {"available": False, "data": [], "error": f"HTTP {status}"}
        return {"available": True, "data": data}


def name_of(kind: str, cluster: str, url: str, clue_urls: dict[str, list[str]],
            exchange_urls: dict[str, list[str]]) -> str:
    """`clue-0`, `exchange-event-0`: as `chatd up` names them (by place in the settings)."""
    urls = (clue_urls if kind == "clue" else exchange_urls).get(cluster, [])
    index = urls.index(url) if url in urls else 0
    return f"{kind}-{index}" if cluster == "main" else f"{kind}-{cluster}-{index}"
