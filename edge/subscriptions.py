"""This edge's channel subscriptions at the exchanges of every cluster.

Each exchange link keeps the set of channels this edge wants there in sync:
subscribe on a channel's first local user, unsubscribe on its last, and a
heartbeat every second that re-syncs the whole set when the exchange forgot
this edge or restarted. A re-sync says how far each channel's stream got here,
and the exchange replays the rest from its history. When the exchange has
restarted, the old stream's last events may have died with it: the link first
asks `StreamKeeper.recover_boot` to fetch them from the clues that published
them, so every channel goes on from exactly where it stopped.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Protocol

import structlog

from common.internal_http import InternalClient, RemoteError
from common.metrics import Metrics
from common.ring import Ring
from common.tasks import cancel_and_wait
from common.wire import (
    HeartbeatRequest,
    Position,
    SubscribeOp,
    SubscribeRequest,
    SubscriptionReply,
    SyncRequest,
)

log = structlog.get_logger()

# How often the edge checks that each exchange still holds its subscriptions.
HEARTBEAT_INTERVAL = 1.0


class StreamKeeper(Protocol):
    """What a link needs from the edge's delivery side."""

    def open(self, channel: str) -> None: ...
    def expect(self, channel: str, start: Position) -> None: ...
    def forget(self, channel: str) -> None: ...
    def position(self, channel: str) -> Position | None: ...
    def recover_boot(self, link: ExchangeLink, boot: str, channels: list[str]) -> Awaitable[None]: ...


class ExchangeLink:
    """This edge's subscriptions at one exchange, kept in order and in sync.

    All requests to the exchange leave from one task, so subscribe, unsubscribe
    and full re-syncs can never overtake each other.
    """

    def __init__(self, url: str, edge_url: str, client: InternalClient, streams: StreamKeeper) -> None:
        self.url = url
        self.edge_url = edge_url
        self.client = client
        self.streams = streams
        self._refs: dict[str, int] = {}  # channel → local users joined or joining
        self._ops: list[SubscribeOp] = []
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._wakeup = asyncio.Event()
        self.boot: str | None = None
        self._last_boot: str | None = None  # the boot positions may still refer to
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    @property
    def wanted(self) -> list[str]:
        return list(self._refs)

    def subscribe(self, channel: str) -> asyncio.Future[None]:
        """Count one more local user of `channel`; the future resolves once the
        exchange has confirmed the subscription (at once if it already has)."""
        self._refs[channel] = self._refs.get(channel, 0) + 1
        if self._refs[channel] == 1:
            self.streams.open(channel)
            self._queue(SubscribeOp(channel))
            if channel not in self._waiters:
                self._waiters[channel] = asyncio.get_running_loop().create_future()
        waiter = self._waiters.get(channel)
        if waiter is None:
            waiter = asyncio.get_running_loop().create_future()
            waiter.set_result(None)
        return waiter

    def unsubscribe(self, channel: str) -> bool:
        """Count one local user less; True when that was the last."""
        count = self._refs.get(channel, 0) - 1
        if count > 0:
            self._refs[channel] = count
            return False
        self._refs.pop(channel, None)
        self.streams.forget(channel)
        self._queue(SubscribeOp(channel, add=False))
        return True

    def release(self, channel: str) -> int:
        """Give up the channel entirely (it moved); returns its local user count."""
        refs = self._refs.pop(channel, 0)
        if refs:
            self.streams.forget(channel)
            self._queue(SubscribeOp(channel, add=False))
        return refs

    def adopt(self, channel: str, refs: int, replay_from: int) -> None:
        """Take over a moved channel's users, asking for what was sent since the move."""
        if refs <= 0:
            return
        first = channel not in self._refs
        self._refs[channel] = self._refs.get(channel, 0) + refs
        if first:
            self.streams.open(channel)
            self._queue(SubscribeOp(channel, replay_from_version=replay_from))

    def _queue(self, op: SubscribeOp) -> None:
        self._ops.append(op)
        self._wakeup.set()

    async def _run(self) -> None:
        await self._sync()
        while True:
            # Not wait_for: on Python 3.11 it can swallow a cancel that comes as the event is set.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HEARTBEAT_INTERVAL):
                    await self._wakeup.wait()
            self._wakeup.clear()
            try:
                if self._ops:
                    await self._send_ops()
                else:
                    await self._heartbeat()
            except Exception:  # a bug must not end this edge's subscriptions for good
                log.exception("subscription_error", remote="exchange", url=self.url)
                self.boot = None  # re-sync everything on the next heartbeat

    async def _send_ops(self) -> None:
        ops, self._ops = self._ops, []
        waiters = {op.channel: self._waiters.pop(op.channel) for op in ops if op.add and op.channel in self._waiters}
        try:
            answer = await self.client.post("/v1/subscribe", SubscribeRequest(self.edge_url, ops), op="subscribe",
                                            answer=SubscriptionReply)
        except RemoteError:
            # The next heartbeat re-syncs the whole set once the exchange answers.
            self.boot = None
            answer = None
        else:
            if answer.boot != self.boot:
                self.boot = None  # it restarted in between: re-sync on the next heartbeat
            for channel, start in answer.streams.items():
                if channel in self._refs:
                    self.streams.expect(channel, start)
        for waiter in waiters.values():
            if waiter.done():
                continue
            if answer is not None:
                waiter.set_result(None)
            else:
                waiter.set_exception(RemoteError(self.client.remote, "subscribe", "unavailable"))

    async def _heartbeat(self) -> None:
        try:
            answer = await self.client.post("/v1/heartbeat", HeartbeatRequest(self.edge_url, len(self._refs)),
                                            op="heartbeat", answer=SubscriptionReply)
        except RemoteError:
            self.boot = None
            return
        if answer.boot != self.boot or answer.count != len(self._refs):
            await self._sync(answer.boot)

    async def _sync(self, boot: str | None = None) -> None:
        """Replace everything the exchange knows of this edge with `wanted`,
        each channel replayed from where its stream got to here."""
        if boot is not None and self._last_boot is not None and boot != self._last_boot:
            # The exchange restarted: first what its last boot took with it.
            await self.streams.recover_boot(self, self._last_boot, self.wanted)
        channels = {channel: self.streams.position(channel) for channel in self._refs}
        try:
            answer = await self.client.post("/v1/sync", SyncRequest(self.edge_url, channels), op="sync",
                                            answer=SubscriptionReply)
        except RemoteError:
            self.boot = None
            return
        if self.boot is not None or self._last_boot is not None:
            log.info("resubscribed", remote="exchange", url=self.url, channels=len(channels))
        for channel, start in answer.streams.items():
            self.streams.expect(channel, start)
        self.boot = self._last_boot = answer.boot

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        await self.client.close()


class Subscriptions:
    """Routes each channel's subscription to the exchange that owns it."""

    def __init__(self, urls: list[str], edge_url: str, token: str, metrics: Metrics, timeout: float,
                 streams: StreamKeeper) -> None:
        self._ring = Ring(urls)
        self.links = {
            url: ExchangeLink(url, edge_url, InternalClient(f"exchange:{url}", url, token, metrics, timeout=timeout),
                              streams)
            for url in urls
        }

    def start(self) -> None:
        for link in self.links.values():
            link.start()

    def link_for(self, channel: str) -> ExchangeLink:
        return self.links[self._ring.node_for(channel)]

    def subscribe(self, channel: str) -> asyncio.Future[None]:
        return self.link_for(channel).subscribe(channel)

    def unsubscribe(self, channel: str) -> bool:
        return self.link_for(channel).unsubscribe(channel)

    async def close(self) -> None:
        for link in self.links.values():
            await link.close()
