"""Stream highlights, live: the detector (analytics/highlights.py) on each channel's
ordered chat, in the exchange that orders it.

`observe` counts a PRIVMSG (cheers are PRIVMSGs) and does nothing else. A task of
its own ticks: it restores the channels seen for the first time from Redis,
closes the windows whose time is up (quiet channels' too), queues what fired
for the webhooks (exchange/webhooks.py) and stores it with the channels' state.

Under the channel's own hash tag (common/highlights.py), so one MULTI writes
them together: `{hl:<#chan>}`, a sorted set of the channel's last HIGHLIGHT_KEEP
highlights scored by window_start_ms, and `{hl:<#chan>}:state`, the detector's
closed windows (written when a window with messages closes; it expires once
too old to matter). A highlight is stored with the state that records its window
as closed, so a restarted exchange never judges that window again. What a
restart loses is the windows in flight; the detector does not count those as
seen (no false highlight from them), and the state brings back the average.
"""
from __future__ import annotations

import asyncio
import time
from collections import defaultdict

import structlog

from analytics.highlights import Detector
from common import wire
from common.highlights import highlights_key, state_key
from common.metrics import Metrics
from common.shards import Shard, ShardSet, ShardUnavailable, pipeline_call
from common.tasks import cancel_and_wait
from common.wire import Event, Highlight, HighlightState
from exchange.config import HighlightSettings
from exchange.webhooks import Outbox

log = structlog.get_logger()

TICK = 0.2
MAX_PENDING = 10_000  # highlights waiting for Redis to come back; older ones are lost (counted)


class HighlightObserver:
    def __init__(self, shards: ShardSet, settings: HighlightSettings, metrics: Metrics) -> None:
        self.shards = shards
        self.settings = settings
        self.metrics = metrics
        self.detector = Detector(settings.detector, restores=True)
        self.outbox = Outbox(shards, settings.webhooks, metrics) if settings.webhooks else None
        window_s = settings.detector.window_ms / 1000
        self.state_ttl = max(60, round(2 * settings.detector.average * window_s))
        self._to_queue: list[Highlight] = []  # fired, not yet in the webhooks' outbox
        self._to_store: list[Highlight] = []  # fired, not yet stored
        self._dirty: set[str] = set()  # channels whose state changed since it was stored
        self._late = 0
        self._task: asyncio.Task[None] | None = None
        metrics.gauge_from("highlights.channels", lambda: len(self.detector.channels))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())
        if self.outbox is not None:
            self.outbox.start()

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        await self._write()  # what already fired; the windows in flight are lost, by design
        if self.outbox is not None:
            await self.outbox.stop()

    def observe(self, event: Event) -> None:
        if event.command == "PRIVMSG":
            self.detector.add(event.channel, event.sent_ms, event.id)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                await self.tick()
            except Exception:  # a bug must not stop highlights for good, nor ever reach chat
                log.exception("highlights_tick_failed")

    async def tick(self) -> None:
        new = self.detector.take_new()
        if new:
            await self._restore(new)
        tick = self.detector.advance(int(time.time() * 1000))
        if self.detector.late != self._late:
            self.metrics.incr("highlights.late", self.detector.late - self._late)
            self._late = self.detector.late
        self.metrics.incr("highlights.windows", tick.closed)
        for highlight in tick.highlights:
            log.info("highlight", channel=highlight.channel, id=highlight.id, rate=highlight.rate,
                     baseline=highlight.baseline, score=highlight.score)
        self.metrics.incr("highlights.fired", len(tick.highlights))
        if self.outbox is not None:
            self._to_queue += tick.highlights
        self._to_store += tick.highlights
        self._dirty |= tick.active
        await self._write()

    async def _restore(self, channels: list[str]) -> None:
        """What the previous run left of these channels (none if Redis cannot say: a fresh start)."""
        by_shard: defaultdict[Shard, list[str]] = defaultdict(list)
        for channel in channels:
            by_shard[self.shards.for_key(state_key(channel))].append(channel)
        for shard, found in by_shard.items():
            try:
                states = await pipeline_call(shard, "highlights_restore", [("GET", state_key(c)) for c in found])
            except ShardUnavailable:
                states = [None] * len(found)
            for channel, raw in zip(found, states, strict=True):
                state = None
                if isinstance(raw, bytes):
                    try:
                        state = wire.decode(raw, HighlightState)
                    except wire.DecodeError:
                        log.warning("highlight_state_unreadable", channel=channel)
                self.detector.restore(channel, state)

    async def _write(self) -> None:
        # Queued for the webhooks before it is stored: an exchange that dies in between may have
        # delivered a highlight the list does not show, never listed one it will not deliver.
        if self._to_queue and self.outbox is not None:
            try:
                await self.outbox.enqueue(self._to_queue)
                self._to_queue = []
            except ShardUnavailable:
                self._to_queue = self._bounded(self._to_queue)
        if self._to_store or self._dirty:
            await self._store()

    async def _store(self) -> None:
        by_channel: defaultdict[str, list[Highlight]] = defaultdict(list)
        for highlight in self._to_store:
            by_channel[highlight.channel].append(highlight)
        by_shard: defaultdict[Shard, list[str]] = defaultdict(list)
        for channel in self._dirty | by_channel.keys():
            by_shard[self.shards.for_key(highlights_key(channel))].append(channel)
        failed: set[str] = set()
        for shard, channels in by_shard.items():
            commands = [command for channel in channels for command in self._commands(channel, by_channel[channel])]
            try:
                await shard.call("highlights_store", lambda client, commands=commands: _transaction(client, commands))
            except ShardUnavailable:
                failed.update(channels)
        stored = [h for h in self._to_store if h.channel not in failed]
        self.metrics.incr("highlights.stored", len(stored))
        self._to_store = self._bounded([h for h in self._to_store if h.channel in failed])
        self._dirty &= failed

    def _commands(self, channel: str, highlights: list[Highlight]) -> list[tuple]:
        key = highlights_key(channel)
        commands: list[tuple] = []
        for highlight in highlights:
            start = highlight.window_start_ms
            # One highlight per window, whatever was there before.
            commands += [("ZREMRANGEBYSCORE", key, start, start), ("ZADD", key, start, wire.encode(highlight))]
        if highlights:
            commands.append(("ZREMRANGEBYRANK", key, 0, -self.settings.keep - 1))
        state = self.detector.state(channel)
        if state is not None:
            commands.append(("SET", state_key(channel), wire.encode(state), "EX", self.state_ttl))
        return commands

    def _bounded(self, pending: list[Highlight]) -> list[Highlight]:
        if len(pending) > MAX_PENDING:
            lost = len(pending) - MAX_PENDING
            self.metrics.incr("highlights.lost", lost)
            log.warning("highlights_lost", remote="redis", lost=lost)
            pending = pending[-MAX_PENDING:]
        return pending


async def _transaction(client, commands: list[tuple]) -> list:
    """One MULTI … EXEC: a channel's highlights and the state that closed their windows go together."""
    pipe = client.pipeline(transaction=True)
    for command in commands:
        pipe.execute_command(*command)
    return await pipe.execute()
