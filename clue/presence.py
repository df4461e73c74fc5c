"""Who is in a channel: the logged-in users edges hold there (anonymous readers
are not listed, as on Twitch). It feeds twitch.tv/membership's JOIN and PART
lines, NAMES (353) and Helix `chat/chatters`.

A channel of 100,000 viewers must not make one shard hot, nor cost every edge a
line per viewer:
- its members are spread over BUCKETS sorted sets, each under its own hash tag,
  so the ring puts them on different shards;
- edges send their changes once per tick, one batch for all their channels, and
  each shard gets one pipelined round trip per batch;
- JOIN and PART lines are published only while the channel has at most
  `limit` members (Twitch: 1,000), all of a batch's in one event per channel and
  kind, so one delivery carries them (as Twitch sends them, several to a write).

A member's score is when an edge last said it was there. Edges re-assert their
members now and then (`refresh`); one not re-asserted for `expiry` is counted as
gone (its edge died without saying so) and dropped when the channel is next read.
"""
from __future__ import annotations

import asyncio
import time
import zlib
from collections import defaultdict

import structlog

from clue.publisher import Exchanges
from common import twitch
from common.shards import Shard, ShardSet, pipeline_call
from common.wire import Event, PresenceBatch, PresenceChange

log = structlog.get_logger()

BUCKETS = 64
SIZE_CACHE_SECONDS = 2.0  # how stale a channel's member count may be when deciding on JOIN lines


def bucket_key(channel: str, bucket: int) -> str:
    return f"{{p:{channel}:{bucket}}}"


def bucket_of(login: str) -> int:
    return zlib.crc32(login.encode()) % BUCKETS


def member(login: str, user_id: str) -> str:
    return f"{login} {user_id}"


def membership_lines(command: str, channel: str, logins: list[str]) -> str:
    """Several JOIN (or PART) lines as one event's line: one write delivers them all."""
    return "\r\n".join(f":{twitch.user_source(login)} {command} {channel}" for login in logins)


class Presence:
    def __init__(self, shards: ShardSet, exchanges: Exchanges, limit: int, expiry: float) -> None:
        self.shards = shards
        self.exchanges = exchanges
        self.limit = limit
        self.expiry = expiry
        self._sizes: dict[str, tuple[float, int]] = {}  # channel → (when counted, members)

    async def apply(self, batch: PresenceBatch) -> int:
        """Record an edge's changes; publish the JOIN and PART lines they make. Returns lines published."""
        now = time.time()
        by_shard: defaultdict[Shard, list[tuple[PresenceChange, tuple]]] = defaultdict(list)
        for change in batch.changes:
            key = bucket_key(change.channel, bucket_of(change.login))
            name = member(change.login, change.user_id)
            if batch.refresh:
                command: tuple = ("ZADD", key, "XX", now, name)  # still there; never a new member
            elif change.present:
                command = ("ZADD", key, now, name)  # 1: new here
            else:
                command = ("ZREM", key, name)  # 1: was here
            by_shard[self.shards.for_key(key)].append((change, command))
        groups = list(by_shard.items())
        answers = await asyncio.gather(*(pipeline_call(shard, "presence", [command for _, command in items])
                                         for shard, items in groups))
        joined: defaultdict[str, list[str]] = defaultdict(list)
        parted: defaultdict[str, list[str]] = defaultdict(list)
        for (_, items), results in zip(groups, answers, strict=True):
            for (change, _), result in zip(items, results, strict=True):
                if isinstance(result, Exception):
                    log.warning("presence_write_failed", channel=change.channel, error=str(result)[:200])
                elif result == 1 and not batch.refresh:
                    (joined if change.present else parted)[change.channel].append(change.login)
        published = 0
        for channel in sorted(set(joined) | set(parted)):
            if await self.size(channel, len(joined[channel]) - len(parted[channel])) > self.limit:
                continue  # a big channel: nobody gets a line per viewer
            for command, logins in (("JOIN", joined[channel]), ("PART", parted[channel])):
                if logins:
                    self.exchanges.publish(Event(channel=channel, command=command,
                                                 line=membership_lines(command, channel, logins)))
                    published += len(logins)
        return published

    async def size(self, channel: str, change: int = 0) -> int:
        """About how many members the channel has (counted at most SIZE_CACHE_SECONDS ago)."""
        now = time.monotonic()
        counted = self._sizes.get(channel)
        if counted is not None and now - counted[0] < SIZE_CACHE_SECONDS:
            size = max(0, counted[1] + change)
            self._sizes[channel] = (counted[0], size)
            return size
        size = sum(int(count) for count in await self._read(channel, "ZCARD"))
        self._sizes[channel] = (now, size)
        if len(self._sizes) > 100_000:  # forget the oldest counts
            for name in sorted(self._sizes, key=lambda c: self._sizes[c][0])[:50_000]:
                del self._sizes[name]
        return size

    async def members(self, channel: str) -> list[tuple[str, str]]:
        """Every (login, user id) present, by login."""
        names = [value.decode() for values in await self._read(channel, "ZRANGE", 0, -1) for value in values]
        return sorted((login, user_id) for login, _, user_id in (name.partition(" ") for name in names))

    async def names(self, channel: str) -> list[str] | None:
        """Logins present for NAMES, or None when the channel is over the limit."""
        if await self.size(channel) > self.limit:
            return None
        return [login for login, _ in await self.members(channel)]

    async def _read(self, channel: str, *command: object) -> list:
        """`command` (ZCARD, ZRANGE …) on every bucket, after dropping members not
        re-asserted within `expiry`; a bucket whose shard failed counts as empty."""
        horizon = time.time() - self.expiry
        by_shard: defaultdict[Shard, list[str]] = defaultdict(list)
        for bucket in range(BUCKETS):
            key = bucket_key(channel, bucket)
            by_shard[self.shards.for_key(key)].append(key)
        answers = await asyncio.gather(*(
            pipeline_call(shard, "presence_read", [step for key in keys for step in (
                ("ZREMRANGEBYSCORE", key, "-inf", horizon), (command[0], key, *command[1:]))])
            for shard, keys in by_shard.items()))
        return [result for results in answers for result in results[1::2] if not isinstance(result, Exception)]
