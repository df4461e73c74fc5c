"""Each channel's history, written to Redis by the exchange that orders it.

The exchange is the one place that sees a channel's events in their order, so
it writes them: batched per tick (one round trip per channel per tick however
busy the channel is), and spread over the shards. A channel's lines go into
buckets of BUCKET lines, `{hb:<#chan>:<k>}`; consecutive buckets hash to
different shards, so even the hottest channel moves from shard to shard as it
talks instead of loading one. A counter per channel (`{h:<#chan>}`) numbers the
lines; buckets older than the last `limit` lines are deleted, and every bucket
expires `age` after its last write.

History is best-effort durable: a shard that cannot take a batch loses that
batch's lines from history (counted, logged) and never delays chat.
"""
from __future__ import annotations

import asyncio
import time
from collections import defaultdict

import structlog

from common import wire
from common.history import BUCKET, KEPT, bucket_key, index_key
from common.metrics import Metrics
from common.shards import ShardSet, ShardUnavailable, pipeline_call
from common.tasks import cancel_and_wait
from common.wire import Event, HistoryEntry

log = structlog.get_logger()

TICK = 0.1


def kept_buckets(limit: int) -> int:
    """Buckets that hold the last `limit` lines wherever the count stands."""
    return -(-limit // BUCKET) + 1


def entry(event: Event, ordered_ms: int) -> HistoryEntry:
    line = f"@{event.tags} {event.line}" if event.tags else event.line
    return HistoryEntry(ts=ordered_ms, command=event.command, line=line, id=event.id, user_id=event.user_id,
                        target=event.target, sent_ms=event.sent_ms or ordered_ms)


class HistoryWriter:
    def __init__(self, shards: ShardSet, limit: int, age: float, metrics: Metrics) -> None:
        self.shards = shards
        self.limit = limit
        self.age = int(age)
        self.metrics = metrics
        self._pending: defaultdict[str, list[bytes]] = defaultdict(list)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        await self.flush()

    def observe(self, event: Event) -> None:
        """Keep an ordered event for the next tick (chat channels, kept commands only)."""
        if event.command in KEPT and event.channel.startswith("#"):
            self._pending[event.channel].append(wire.encode(entry(event, int(time.time() * 1000))))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            if self._pending:
                await self.flush()

    async def flush(self) -> None:
        pending, self._pending = self._pending, defaultdict(list)
        await asyncio.gather(*(self._write(channel, lines) for channel, lines in pending.items()))

    async def _write(self, channel: str, lines: list[bytes]) -> None:
        try:
            index = index_key(channel)
            count, _ = await pipeline_call(self.shards.for_key(index), "history_index",
                                           [("HINCRBY", index, "n", len(lines)), ("EXPIRE", index, self.age)])
            first = int(count) - len(lines)
            by_bucket: defaultdict[int, list[bytes]] = defaultdict(list)
            for offset, line in enumerate(lines):
                by_bucket[(first + offset) // BUCKET].append(line)
            await asyncio.gather(*(self._append(channel, bucket, found) for bucket, found in by_bucket.items()))
            # Buckets that fell out of the last `limit` lines with this batch are deleted.
            kept = kept_buckets(self.limit)
            for stale in range(max(0, first // BUCKET - kept + 1), max(0, (int(count) - 1) // BUCKET - kept + 1)):
                key = bucket_key(channel, stale)
                await pipeline_call(self.shards.for_key(key), "history_trim", [("DEL", key)])
        except ShardUnavailable:
            self.metrics.incr("history.lost", len(lines))
            log.warning("history_lost", remote="redis", channel=channel, lines=len(lines))
            return
        self.metrics.incr("history.written", len(lines))

    async def _append(self, channel: str, bucket: int, lines: list[bytes]) -> None:
        key = bucket_key(channel, bucket)
        await pipeline_call(self.shards.for_key(key), "history_append",
                            [("RPUSH", key, *lines), ("EXPIRE", key, self.age)])
