"""The exchange: one order per channel, fanned out to the edges that want it.

Publishing assigns each message the next sequence number of its channel and
appends it, already JSON-encoded, to the queue of every subscribed edge. One
sender task per edge drains its queue: everything queued goes in one POST,
and while that POST is in flight the next batch gathers. One request in
flight per edge keeps every edge's copy in the same order.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import OrderedDict, defaultdict, deque
from typing import Any

import structlog
from aiohttp import web

from common import twitch
from common.batch import Batcher
from common.config import parse_url
from common.internal_http import (
    InternalClient,
    InternalServer,
    RemoteError,
    json_error,
    read_json,
)
from common.metrics import Metrics
from common.tasks import cancel_and_wait
from exchange.config import ExchangeSettings

log = structlog.get_logger()

# An edge that has failed this many deliveries in a row is forgotten; it
# re-subscribes through its heartbeat when it is back.
MAX_FAILURES = 5
# Messages /delete can reach: Twitch allows six hours.
RECENT_PER_CHANNEL = 2000
RECENT_SECONDS = 6 * 3600
RETRY_DELAY = 0.2


class EdgeLink:
    def __init__(self, url: str, client: InternalClient, boot: str, metrics: Metrics, max_queue: int) -> None:
        self.url = url
        self.client = client
        self.boot = boot
        self.metrics = metrics
        self.max_queue = max_queue
        self.channels: set[str] = set()
        self.queue: list[bytes] = []
        self.failures = 0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self, on_dead) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(on_dead))

    def enqueue(self, encoded: bytes) -> None:
        self.queue.append(encoded)
        if len(self.queue) > self.max_queue:
            dropped = len(self.queue) - self.max_queue
            del self.queue[:dropped]
            self.metrics.incr("deliver.dropped", dropped)
        self._wakeup.set()

    async def _run(self, on_dead) -> None:
        prefix = b'{"boot":' + json.dumps(self.boot).encode() + b',"messages":['
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self.queue:
                batch, self.queue = self.queue, []
                body = prefix + b",".join(batch) + b"]}"
                try:
                    await self.client.post("/v1/deliver", body, op="deliver")
                except RemoteError:
                    self.failures += 1
                    self.metrics.incr("deliver.lost", len(batch))
                    if self.failures >= MAX_FAILURES:
                        on_dead(self)
                        return
                    await asyncio.sleep(RETRY_DELAY)
                    continue
                self.failures = 0
                self.metrics.incr("deliver.batches")
                self.metrics.incr("deliver.messages", len(batch))

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        await self.client.close()


class ExchangeService:
    def __init__(self, settings: ExchangeSettings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.boot = uuid.uuid4().hex
        self.edges: dict[str, EdgeLink] = {}
        self.subscribers: defaultdict[str, set[EdgeLink]] = defaultdict(set)
        self.seq: defaultdict[str, int] = defaultdict(int)
        # Each channel's recent chat messages by id, for /delete (CLEARMSG needs
        # the sender and the text); the exchange is the one place that sees them all.
        self.recent: defaultdict[str, OrderedDict[str, dict[str, Any]]] = defaultdict(OrderedDict)
        # Channels moved to another cluster: {cluster, version, to}; later messages are forwarded.
        self.moved: dict[str, dict[str, Any]] = {}
        self.peers: dict[str, tuple[Batcher, InternalClient]] = {}  # forwarding, per new owner
        # Encoded messages of channels that have moved, for edges that subscribe after a move.
        self.history: defaultdict[str, deque[tuple[int, bytes]]] = defaultdict(
            lambda: deque(maxlen=RECENT_PER_CHANNEL)
        )
        self.server = InternalServer(
            settings.common.internal_token,
            [
                web.post("/v1/publish", self._on_publish),
                web.post("/v1/subscribe", self._on_subscribe),
                web.post("/v1/sync", self._on_sync),
                web.post("/v1/heartbeat", self._on_heartbeat),
                web.get("/v1/channels/{channel}", self._on_channel),
                web.post("/v1/lookup", self._on_lookup),
                web.post("/v1/move", self._on_move),
                web.get("/health", self._on_health),
            ],
        )
        self.addresses: dict[str, str] = {}
        metrics.gauge_from("edges", lambda: len(self.edges))
        metrics.gauge_from("channels", lambda: len(self.subscribers))

    async def start(self) -> None:
        self.addresses["http"] = await self.server.start(self.settings.http_listen)

    async def stop(self) -> None:
        await self.server.stop()
        for link in list(self.edges.values()):
            await link.close()
        for batcher, client in self.peers.values():
            await batcher.close()
            await client.close()

    # ---- subscriptions
    def _link(self, url: str) -> EdgeLink:
        link = self.edges.get(url)
        if link is None:
            client = InternalClient(
                f"edge:{url}", url, self.settings.common.internal_token, self.metrics,
                timeout=self.settings.common.http_timeout, max_conns=self.settings.edge_max_conns,
            )
            link = self.edges[url] = EdgeLink(url, client, self.boot, self.metrics, self.settings.max_queue)
            link.start(self._forget)
            log.info("edge_added", remote="edge", url=url)
        return link

    def _forget(self, link: EdgeLink) -> None:
        log.warning("edge_dropped", remote="edge", url=link.url, failures=link.failures)
        self.metrics.incr("edges.dropped")
        self.edges.pop(link.url, None)
        for channel in link.channels:
            self._remove(link, channel)
        asyncio.get_running_loop().create_task(link.client.close())

    def _add(self, link: EdgeLink, channel: str) -> None:
        link.channels.add(channel)
        self.subscribers[channel].add(link)

    def _remove(self, link: EdgeLink, channel: str) -> None:
        link.channels.discard(channel)
        members = self.subscribers.get(channel)
        if members is not None:
            members.discard(link)
            if not members:
                del self.subscribers[channel]

    def _edge_url(self, body: dict[str, Any]) -> str:
        url = body.get("edge")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise web.HTTPBadRequest(
                text=json.dumps({"error": "bad_request", "message": "edge must be the edge's http URL"}),
                content_type="application/json",
            )
        return url

    async def _on_subscribe(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        link = self._link(self._edge_url(body))
        for op, channel, *replay in body.get("ops", []):
            if op == "+" and channel in self.moved:
                link.enqueue(self._moved_notice(channel))  # the edge has not heard yet
            elif op == "+":
                if replay:
                    for version, encoded in self.history.get(channel, ()):
                        if version >= replay[0]:
                            link.enqueue(encoded)
                self._add(link, channel)
            elif op == "-":
                self._remove(link, channel)
        return web.json_response({"boot": self.boot, "count": len(link.channels)})

    async def _on_sync(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        link = self._link(self._edge_url(body))
        wanted = set(body.get("channels", []))
        for channel in link.channels - wanted:
            self._remove(link, channel)
        for channel in wanted - link.channels:
            self._add(link, channel)
        return web.json_response({"boot": self.boot, "count": len(link.channels)})

    async def _on_heartbeat(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        link = self.edges.get(self._edge_url(body))
        return web.json_response({"boot": self.boot, "count": len(link.channels) if link else -1})

    # ---- publishing
    async def _on_publish(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        messages = body.get("messages")
        if not isinstance(messages, list) or not all(
            isinstance(message, dict) and isinstance(message.get("channel"), str) for message in messages
        ):
            return json_error(400, "bad_request", "expected {messages: [{channel, ...}, ...]}")
        started = time.perf_counter()
        seqs = self.publish(messages)
        self.metrics.timing("publish", (time.perf_counter() - started) * 1000)
        return web.json_response({"boot": self.boot, "seqs": seqs})

    def publish(self, messages: list[dict[str, Any]]) -> list[int]:
        seqs = []
        for message in messages:
            channel = message["channel"]
            version = int(message.get("rv", 0))
            moved = self.moved.get(channel)
            if moved is not None:
                if version < moved["version"]:
                    # Ingested before its clue heard of the move: the new owner orders it.
                    self._forward(moved, {**message, "rv": moved["version"]})
                    seqs.append(0)
                    continue
                del self.moved[channel]  # the channel has moved back here
            self.seq[channel] += 1
            message["seq"] = self.seq[channel]
            seqs.append(message["seq"])
            if message.get("command") == "PRIVMSG":
                self._remember(channel, message)
            links = self.subscribers.get(channel)
            if links or version:
                encoded = json.dumps(message, separators=(",", ":")).encode()
                if version:  # a channel that has been moved: edges arriving late replay from here
                    self.history[channel].append((version, encoded))
                for link in links or ():
                    link.enqueue(encoded)
        self.metrics.incr("messages.published", len(messages))
        return seqs

    async def _on_channel(self, request: web.Request) -> web.Response:
        """Which edges hold a channel, and how far its sequence has got."""
        name = request.match_info["channel"]
        channel = name if name.startswith(twitch.WHISPER_PREFIX) else "#" + name.lstrip("#")
        edges = sorted(link.url for link in self.subscribers.get(channel, ()))
        return web.json_response({"channel": channel, "edges": edges, "seq": self.seq.get(channel, 0)})

    # ---- live moves between clusters
    async def _on_move(self, request: web.Request) -> web.Response:
        """This channel now belongs to another cluster's exchange (`to`)."""
        body = await read_json(request)
        try:
            channel, version, to = str(body["channel"]), int(body["version"]), parse_url(str(body["to"]))
            cluster = str(body["cluster"])
        except (KeyError, ValueError):
            return json_error(400, "bad_request", "expected {channel, cluster, version, to}")
        current = self.moved.get(channel)
        if current is None or current["version"] < version:
            self.moved[channel] = {"cluster": cluster, "version": version, "to": to}
            notice = self._moved_notice(channel)
            # Queued behind everything already sequenced: an edge switching on it has
            # received every message this exchange ordered for the channel.
            for link in self.subscribers.get(channel, ()):
                link.enqueue(notice)
            self.metrics.incr("channels.moved")
            log.info("channel_moved", channel=channel, cluster=cluster, version=version, to=to)
        return web.json_response({"ok": True})

    def _moved_notice(self, channel: str) -> bytes:
        moved = self.moved[channel]
        return json.dumps({"channel": channel, "command": "MOVED", "cluster": moved["cluster"],
                           "version": moved["version"], "line": ""}).encode()

    def _forward(self, moved: dict[str, Any], message: dict[str, Any]) -> None:
        url = moved["to"]
        if url not in self.peers:
            client = InternalClient(f"exchange:{url}", url, self.settings.common.internal_token, self.metrics,
                                    timeout=self.settings.common.http_timeout)

            async def send(messages: list[dict[str, Any]]) -> list[int]:
                return (await client.post("/v1/publish", {"messages": messages}, op="forward"))["seqs"]

            self.peers[url] = (Batcher(send), client)
        self.peers[url][0].submit(message).add_done_callback(self._forwarded)

    def _forwarded(self, future: asyncio.Future[int]) -> None:
        if not future.cancelled() and future.exception() is not None:
            self.metrics.incr("messages.forward_lost")
        else:
            self.metrics.incr("messages.forwarded")

    def _remember(self, channel: str, message: dict[str, Any]) -> None:
        recent = self.recent[channel]
        message_id = message.get("tags", {}).get("id")
        if message_id:
            recent[message_id] = message
            if len(recent) > RECENT_PER_CHANNEL:
                recent.popitem(last=False)

    async def _on_lookup(self, request: web.Request) -> web.Response:
        """A recent message of a channel by id: its sender, text and time."""
        body = await read_json(request)
        message = self.recent.get(str(body.get("channel")), {}).get(str(body.get("id")))
        if message is None or int(message["tags"].get("tmi-sent-ts", 0)) < (time.time() - RECENT_SECONDS) * 1000:
            return json_error(404, "not_found", "no such recent message")
        source, _, rest = message["line"].partition(" PRIVMSG ")
        return web.json_response({
            "login": source.lstrip(":").split("!", 1)[0],
            "text": rest.partition(" :")[2],
            "sent_ms": int(message["tags"].get("tmi-sent-ts", 0)),
        })

    async def _on_health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "boot": self.boot, "edges": len(self.edges)})
