"""Each channel's history, written to Redis by the exchange that orders it.

The exchange is the one place that sees a channel's events in their order, so
it writes them: batched per tick (two round trips per shard per tick, however
many channels spoke and however busy they were), and spread over the shards.
A channel's lines go into buckets of BUCKET lines, `{hb:<#chan>:<k>}`; consecutive buckets hash to
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
from typing import Any

import structlog

from common import wire
from common.history import BUCKET, KEPT, bucket_key, index_key
from common.metrics import Metrics
from common.shards import Shard, ShardSet, ShardUnavailable, pipeline_call
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
        if not pending:
            return
        channels = list(pending)
        # Number the lines: every channel's counter in one pipeline per shard.
        counted = await self._per_shard("history_index", [
            (index_key(channel), [("HINCRBY", index_key(channel), "n", len(pending[channel])),
                                  ("EXPIRE", index_key(channel), self.age)]) for channel in channels])
        appends: list[tuple[str, list[tuple[Any, ...]]]] = []
        owners: list[str] = []  # the channel of each append
        numbered: list[str] = []  # channels whose counter answered
        for channel, replies in zip(channels, counted, strict=True):
            lines = pending[channel]
            if replies is None or not isinstance(replies[0], int):
                self._lost(channel, len(lines))
                continue
            numbered.append(channel)
            count = replies[0]
            first = count - len(lines)
            by_bucket: defaultdict[int, list[bytes]] = defaultdict(list)
            for offset, line in enumerate(lines):
                by_bucket[(first + offset) // BUCKET].append(line)
            for bucket, found in by_bucket.items():
                key = bucket_key(channel, bucket)
                appends.append((key, [("RPUSH", key, *found), ("EXPIRE", key, self.age)]))
                owners.append(channel)
            # Buckets that fell out of the last `limit` lines with this batch are deleted.
            kept = kept_buckets(self.limit)
            for stale in range(max(0, first // BUCKET - kept + 1), max(0, (count - 1) // BUCKET - kept + 1)):
                key = bucket_key(channel, stale)
                appends.append((key, [("DEL", key)]))
                owners.append("")
        # Then every channel's lines, again one pipeline per shard.
        appended = await self._per_shard("history_append", appends)
        failed = {channel for channel, replies in zip(owners, appended, strict=True)
                  if channel and (replies is None or isinstance(replies[0], Exception))}
        for channel in numbered:
            if channel in failed:
                self._lost(channel, len(pending[channel]))
            else:
                self.metrics.incr("history.written", len(pending[channel]))

    async def _per_shard(self, op: str, items: list[tuple[str, list[tuple[Any, ...]]]]
                         ) -> list[list[Any] | None]:
        """Each item's commands (for its key's shard), sent as one pipeline per shard: a
        tick costs a round trip per shard however many channels spoke. Each item gets its
        replies back, or None when its shard could not be reached."""
        by_shard: defaultdict[Shard, list[int]] = defaultdict(list)
        for index, (key, _) in enumerate(items):
            by_shard[self.shards.for_key(key)].append(index)
        results: list[list[Any] | None] = [None] * len(items)

        async def run(shard: Shard, indexes: list[int]) -> None:
            try:
                replies = await pipeline_call(shard, op, [command for i in indexes for command in items[i][1]])
            except ShardUnavailable:
                return
            position = 0
            for i in indexes:
                results[i] = replies[position:position + len(items[i][1])]
                position += len(items[i][1])

        await asyncio.gather(*(run(shard, indexes) for shard, indexes in by_shard.items()))
        return results

    def _lost(self, channel: str, lines: int) -> None:
        self.metrics.incr("history.lost", lines)
        log.warning("history_lost", remote="redis", channel=channel, lines=lines)
