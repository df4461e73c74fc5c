"""The exchange: one order per channel, fanned out to the edges that want it.

Publishing gives each event the next sequence number of its channel, encodes
it once, keeps it in the channel's history and queues it for every subscribed
edge (exchange/links.py delivers at least once; edges drop what they already
have). Edges that (re)subscribe say how far they got and are replayed the rest
from the history, so an edge that was forgotten, or that re-subscribes after
this exchange restarted, misses nothing the history still holds.
"""
from __future__ import annotations

import asyncio
import time
import uuid

import structlog
from aiohttp import web

from common import twitch, wire
from common.batch import Batcher
from common.config import parse_url
from common.internal_http import (
    ApiError,
    InternalClient,
    InternalServer,
    metrics_route,
    read_body,
    reply,
)
from common.metrics import Metrics
from common.shards import ShardSet
from common.tasks import cancel_and_wait
from common.wire import (
    CLOSED,
    FORWARDED,
    Event,
    EventRange,
    HeartbeatRequest,
    LookupReply,
    LookupRequest,
    MoveRequest,
    OutcomeReply,
    OutcomeRequest,
    PublishBatch,
    PublishReply,
    RangeRequest,
    RecentRequest,
    SubscribeRequest,
    SubscriptionReply,
    SyncRequest,
)
from exchange.channels import ChannelLog, ChannelTable, MessageIds, Move
from exchange.config import ExchangeSettings
from exchange.highlights import HighlightObserver
from exchange.history import HistoryWriter
from exchange.links import EdgeLink
from exchange.observers import Observer
from exchange.sessions import SessionDriver

log = structlog.get_logger()

# Messages /delete can reach: Twitch allows six hours.
LOOKUP_SECONDS = 6 * 3600
# The most of a channel's recent past one request may ask for.
RECENT_LIMIT = 60.0


class ExchangeService:
    def __init__(self, settings: ExchangeSettings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.boot = uuid.uuid4().hex
        self.edges: dict[str, EdgeLink] = {}
        self.channels = ChannelTable(settings.history, settings.channel_idle)
        self.ids = MessageIds()
        self.shards = (ShardSet(settings.cache_servers, settings.cache_max_conns, settings.cache_timeout, metrics)
                       if settings.cache_servers else None)
        # Each sees every event once, in its channel's order (exchange.observers).
        self.observers: list[Observer] = []
        if self.shards and settings.history_limit:
            self.observers.append(HistoryWriter(self.shards, settings.history_limit, settings.history_age, metrics))
        if self.shards and settings.highlights:
            self.observers.append(HighlightObserver(self.shards, settings.highlights, metrics))
        if self.shards and settings.sessions:
            self.observers.append(SessionDriver(self.shards, settings.sessions, metrics))
        self.peers: dict[str, tuple[Batcher[Event, int], InternalClient]] = {}  # forwarding, per new owner
        self._sweeper: asyncio.Task[None] | None = None
        self.server = InternalServer(
            settings.common.internal_token,
            [
                web.post("/v1/publish", self._on_publish),
                web.post("/v1/subscribe", self._on_subscribe),
                web.post("/v1/sync", self._on_sync),
                web.post("/v1/heartbeat", self._on_heartbeat),
                web.post("/v1/range", self._on_range),
                web.post("/v1/recent", self._on_recent),
                web.post("/v1/outcome", self._on_outcome),
                web.post("/v1/lookup", self._on_lookup),
                web.post("/v1/move", self._on_move),
                web.get("/v1/channels/{channel}", self._on_channel),
                web.get("/health", self._on_health),
                metrics_route(metrics),
            ],
        )
        self.addresses: dict[str, str] = {}
        metrics.gauge_from("edges", lambda: len(self.edges))
        metrics.gauge_from("channels", lambda: len(self.channels))

    async def start(self) -> None:
        self.addresses["http"] = await self.server.start(self.settings.http_listen)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        for observer in self.observers:
            observer.start()

    async def stop(self) -> None:
        await cancel_and_wait(self._sweeper)
        await self.server.stop()
        for link in list(self.edges.values()):
            await link.close()
        for batcher, client in self.peers.values():
            await batcher.close()
            await client.close()
        for observer in self.observers:
            await observer.stop()
        if self.shards is not None:
            await self.shards.close()

    async def _sweep(self) -> None:
        interval = min(self.settings.channel_idle / 2, 5.0)
        while True:
            await asyncio.sleep(interval)
            forgotten = self.channels.sweep()
            if forgotten:
                self.metrics.incr("channels.forgotten", forgotten)

    # ---- subscriptions
    def _link(self, url: str) -> EdgeLink:
        if not url.startswith(("http://", "https://")):
            raise ApiError(400, "edge must be the edge's http URL")
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
        for channel in list(link.channels):
            self._remove(link, channel)
        asyncio.get_running_loop().create_task(link.client.close())

    def _add(self, link: EdgeLink, channel: ChannelLog) -> None:
        link.channels.add(channel.name)
        channel.subscribe(link)

    def _remove(self, link: EdgeLink, name: str) -> None:
        link.channels.discard(name)
        channel = self.channels.get(name)
        if channel is not None:
            channel.unsubscribe(link)

    def _answer(self, link: EdgeLink, streams: dict[str, wire.Position] | None = None) -> web.Response:
        return reply(SubscriptionReply(boot=self.boot, count=len(link.channels), streams=streams or {}))

    async def _on_subscribe(self, request: web.Request) -> web.Response:
        body = await read_body(request, SubscribeRequest)
        link = self._link(body.edge)
        streams: dict[str, wire.Position] = {}
        for op in body.ops:
            if not op.add:
                self._remove(link, op.channel)
                continue
            channel = self.channels.open(op.channel)
            if channel.moved is not None:
                link.enqueue(self._moved_marker(channel), marker=True)  # the edge has not heard yet
                continue
            if op.replay_from_version:
                replay, baseline = channel.since_version(op.replay_from_version)
                link.enqueue_all(replay)
                streams[op.channel] = wire.Position(self.boot, channel.gen, baseline)
            else:
                streams[op.channel] = channel.position(self.boot)
            self._add(link, channel)
        return self._answer(link, streams)

    async def _on_sync(self, request: web.Request) -> web.Response:
        body = await read_body(request, SyncRequest)
        link = self._link(body.edge)
        for name in link.channels - body.channels.keys():
            self._remove(link, name)
        streams: dict[str, wire.Position] = {}
        for name, position in body.channels.items():
            channel = self.channels.open(name)
            if position is None:
                streams[name] = channel.position(self.boot)  # a new subscription: no replay
            elif position.boot == self.boot and position.gen == channel.gen:
                link.enqueue_all(channel.since(position.seq))
            else:
                # This exchange restarted, or forgot the channel: the edge gets the whole stream.
                link.enqueue_all(channel.since(0))
                self.metrics.incr("replays")
            self._add(link, channel)
        return self._answer(link, streams)

    async def _on_heartbeat(self, request: web.Request) -> web.Response:
        body = await read_body(request, HeartbeatRequest)
        link = self.edges.get(body.edge)
        return reply(SubscriptionReply(boot=self.boot, count=len(link.channels) if link else -1))

    # ---- publishing
    async def _on_publish(self, request: web.Request) -> web.Response:
        body = await read_body(request, PublishBatch)
        started = time.perf_counter()
        seqs = self.publish(body.events)
        self.metrics.timing("publish", (time.perf_counter() - started) * 1000)
        return reply(PublishReply(boot=self.boot, seqs=seqs))

    def publish(self, events: list[Event]) -> list[int]:
        seqs = []
        history = self.settings.history
        for event in events:
            channel = self.channels.open(event.channel)
            moved = channel.moved
            if moved is not None:
                if event.rv < moved.version:
                    # Ingested before its clue heard of the move: the new owner orders it.
                    event.rv = moved.version
                    self._forward(moved, event)
                    seqs.append(FORWARDED)
                    continue
                channel.moved = None  # the channel has moved back here
            if event.id:
                seen = self.ids.get(event.id)
                if seen is not None:  # a retried submission: ordered once
                    seqs.append(seen)
                    self.metrics.incr("messages.repeated")
                    continue
            encoded = channel.order(event, history)
            if event.id:
                self.ids.remember(event.id, channel.seq, channel.last_write)
            for observer in self.observers:
                observer.observe(event)
            seqs.append(channel.seq)
            self.metrics.count_top("channel.in", event.channel)
            for link in channel.subscribers:
                link.enqueue(encoded)
        self.metrics.incr("messages.published", len(events))
        return seqs

    async def _on_outcome(self, request: web.Request) -> web.Response:
        """Settle submissions an edge could not get an answer for."""
        body = await read_body(request, OutcomeRequest)
        seqs = []
        now = time.monotonic()
        for message_id in body.ids:
            seen = self.ids.get(message_id)
            if seen is None:
                self.ids.remember(message_id, CLOSED, now)  # a late publish of it is refused
                seen = CLOSED
            seqs.append(seen)
        return reply(OutcomeReply(seqs=seqs))

    async def _on_range(self, request: web.Request) -> web.Response:
        """Events an edge is missing from a channel's stream (a gap it saw)."""
        body = await read_body(request, RangeRequest)
        channel = self.channels.get(body.channel)
        if channel is None or body.boot != self.boot or body.gen != channel.gen:
            return reply(EventRange(events=[], complete=False))
        found, complete = channel.between(body.after, body.before)
        self.metrics.incr("range.events", len(found))
        return web.Response(body=wire.encode_list(b'{"events":', found, b',"complete":%s}' % (
            b"true" if complete else b"false")), content_type="application/json")

    async def _on_recent(self, request: web.Request) -> web.Response:
        """What a channel's stream ordered lately (an EventSub session catching up after a reconnect)."""
        body = await read_body(request, RecentRequest)
        channel = self.channels.get(body.channel)
        found = channel.recent(min(body.seconds, RECENT_LIMIT)) if channel else []
        return web.Response(body=wire.encode_list(b'{"events":', found, b',"complete":true}'),
                            content_type="application/json")

    async def _on_channel(self, request: web.Request) -> web.Response:
        """Which edges hold a channel, and how far its sequence has got."""
        name = request.match_info["channel"]
        name = name if name.startswith(twitch.WHISPER_PREFIX) else "#" + name.lstrip("#")
        channel = self.channels.get(name)
        edges = sorted(link.url for link in channel.subscribers) if channel else []
        return reply({"channel": name, "edges": edges, "seq": channel.seq if channel else 0})

    # ---- live moves between clusters
    async def _on_move(self, request: web.Request) -> web.Response:
        """This channel now belongs to another cluster's exchange (`to`)."""
        body = await read_body(request, MoveRequest)
        try:
            to = parse_url(body.to)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        channel = self.channels.open(body.channel)
        if channel.moved is None or channel.moved.version < body.version:
            channel.moved = Move(body.cluster, body.version, to)
            marker = self._moved_marker(channel)
            # Queued behind everything already sequenced: an edge switching on it has
            # received every message this exchange ordered for the channel.
            for link in channel.subscribers:
                link.enqueue(marker, marker=True)
            self.metrics.incr("channels.moved")
            log.info("channel_moved", channel=body.channel, cluster=body.cluster, version=body.version, to=to)
        return reply({"ok": True})

    @staticmethod
    def _moved_marker(channel: ChannelLog) -> bytes:
        moved = channel.moved
        assert moved is not None
        return wire.encode(wire.Moved(channel.name, moved.cluster, moved.version))

    def _forward(self, moved: Move, event: Event) -> None:
        url = moved.to
        if url not in self.peers:
            client = InternalClient(f"exchange:{url}", url, self.settings.common.internal_token, self.metrics,
                                    timeout=self.settings.common.http_timeout)

            async def send(events: list[Event]) -> list[int]:
                return (await client.post("/v1/publish", PublishBatch(events), op="forward", answer=PublishReply)).seqs

            self.peers[url] = (Batcher(send), client)
        self.peers[url][0].submit(event).add_done_callback(self._forwarded)

    def _forwarded(self, future: asyncio.Future[int]) -> None:
        if not future.cancelled() and future.exception() is not None:
            self.metrics.incr("messages.forward_lost")
        else:
            self.metrics.incr("messages.forwarded")

    async def _on_lookup(self, request: web.Request) -> web.Response:
        """A recent message of a channel by id: its sender, text and time."""
        body = await read_body(request, LookupRequest)
        channel = self.channels.get(body.channel)
        event = channel.find(body.id) if channel else None
        if event is None or event.sent_ms < (time.time() - LOOKUP_SECONDS) * 1000:
            raise ApiError(404, "no such recent message")
        return reply(LookupReply(login=event.login, text=event.text, sent_ms=event.sent_ms))

    async def _on_health(self, request: web.Request) -> web.Response:
        return reply({"ok": True, "boot": self.boot, "cluster": self.settings.cluster, "edges": len(self.edges),
                      "channels": len(self.channels), "edge_urls": sorted(self.edges)})
