"""Hands accepted events, batched, to the exchange that owns their channel in
the cluster the routing table names for it, and keeps a short tail of what each
exchange ordered.

The tail is what an exchange that dies takes with it: events it ordered and
answered for, but had not yet delivered everywhere. Edges that see the
exchange come back with a new boot ask every clue for the old boot's tail
after the last sequence number they delivered, and fill the hole from it.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

import structlog

from clue.routes import RouteTable
from common import twitch
from common.batch import Batcher
from common.internal_http import InternalClient, RemoteError
from common.metrics import Metrics
from common.ring import Ring
from common.wire import (
    Event,
    LookupReply,
    LookupRequest,
    MoveRequest,
    PublishBatch,
    PublishReply,
)

log = structlog.get_logger()

# How long and how much of each exchange's stream a clue keeps: enough to cover
# an exchange's restart under a supervisor and the edges' next heartbeat.
TAIL_SECONDS = 10.0
TAIL_PER_CHANNEL = 2000


class Tails:
    """Events this clue published, by (exchange, boot, channel), for a short while."""

    def __init__(self, seconds: float = TAIL_SECONDS, per_channel: int = TAIL_PER_CHANNEL) -> None:
        self._seconds = seconds
        self._per_channel = per_channel
        self._streams: dict[tuple[str, str, str], deque[tuple[float, Event]]] = {}

    def add(self, exchange: str, boot: str, event: Event) -> None:
        key = (exchange, boot, event.channel)
        stream = self._streams.get(key)
        if stream is None:
            stream = self._streams[key] = deque(maxlen=self._per_channel)
        stream.append((time.monotonic(), event))

    def after(self, exchange: str, boot: str, channel: str, seq: int) -> list[Event]:
        stream = self._streams.get((exchange, boot, channel), ())
        return sorted((event for _, event in stream if event.seq > seq), key=lambda event: event.seq)

    def prune(self) -> None:
        horizon = time.monotonic() - self._seconds
        for key in list(self._streams):
            stream = self._streams[key]
            while stream and stream[0][0] < horizon:
                stream.popleft()
            if not stream:
                del self._streams[key]


class Exchanges:
    def __init__(self, clusters: dict[str, list[str]], routes: RouteTable, token: str, metrics: Metrics,
                 timeout: float) -> None:
        self._routes = routes
        self._rings = {cluster: Ring(urls) for cluster, urls in clusters.items()}
        urls = list(dict.fromkeys(url for found in clusters.values() for url in found))
        self._clients = {url: InternalClient(f"exchange:{url}", url, token, metrics, timeout=timeout) for url in urls}
        self._batchers = {url: Batcher(self._sender(url)) for url in urls}
        self.tails = Tails()

    def _sender(self, url: str) -> Callable[[list[Event]], Awaitable[list[int]]]:
        client = self._clients[url]

        async def send(events: list[Event]) -> list[int]:
            answer = await client.post("/v1/publish", PublishBatch(events), op="publish", answer=PublishReply)
            for event, seq in zip(events, answer.seqs, strict=False):
                if seq > 0:
                    event.seq = seq
                    self.tails.add(url, answer.boot, event)
            return answer.seqs

        return send

    def owner(self, channel: str, cluster: str | None = None) -> str:
        if cluster is None:
            # Whispers (`@login` pseudo-channels) travel in the group cluster where there is one.
            whisper = channel.startswith(twitch.WHISPER_PREFIX) and "group" in self._rings
            cluster = "group" if whisper else self._routes.cluster_for(channel)
        ring = self._rings.get(cluster)
        if ring is None:
            log.warning("unknown_cluster", cluster=cluster, channel=channel)
            ring = self._rings["main"]
        return ring.node_for(channel)

    def publish(self, event: Event) -> asyncio.Future[int]:
        """The event's sequence number (or FORWARDED / CLOSED) once its exchange has it."""
        # The route version lets the exchange tell messages from before a move.
        event.rv = self._routes.version_for(event.channel)
        return self._batchers[self.owner(event.channel)].submit(event)

    async def move(self, channel: str, old_cluster: str, new_cluster: str, version: int) -> None:
        """Tell the channel's old exchange where it lives now."""
        old, new = self.owner(channel, old_cluster), self.owner(channel, new_cluster)
        if old != new:
            await self._clients[old].post("/v1/move", MoveRequest(channel, new_cluster, version, new), op="move",
                                          answer=dict)

    async def lookup(self, channel: str, message_id: str) -> LookupReply | None:
        """A recent message of `channel` from the exchange that owns it."""
        client = self._clients[self.owner(channel)]
        try:
            return await client.post("/v1/lookup", LookupRequest(channel, message_id), op="lookup",
                                     answer=LookupReply)
        except RemoteError as exc:
            if exc.status == 404:
                return None
            raise

    async def close(self) -> None:
        for batcher in self._batchers.values():
            await batcher.close()
        for client in self._clients.values():
            await client.close()
