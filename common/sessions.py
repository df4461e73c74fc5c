"""Where stream sessions live in Redis: written by exchanges (live) and `chatd sessions
backfill`, read by clue (`GET /api/v1/channels/{c}/sessions`).

| key | what |
| --- | --- |
| `{ss:<channel id>}` | the channel's sessions: a sorted set scored by start, members the encoded `SessionRecord` (one per start) |
| `{ss:<channel id>}:live` | the live driver's state of the channel (open run, events waiting out the lateness) |
| `{sd:<YYYY-MM-DD>}` | the index by start day: channel ids with a session starting that day |
| `{so}` | channels with live state, scored by when anyone may finish it (an exchange that died leaves some) |
| `{sa:<#chan>}` | the channel's chat per minute (`MinuteStats`, scored by minute), kept `SESSION_STATS_AGE` |
| `{hl:<#chan>}` | highlights (written by the highlights detector), read to count those inside a session |
| `{sb:<day>}:<i>/<N>` | a running backfill's lock (with expiry) |
"""
from __future__ import annotations

import asyncio
import calendar
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from common import wire
from common.config import Env, parse_duration
from common.shards import Shard, ShardSet, pipeline_call
from common.wire import LiveState, MinuteStats, SessionRecord

DAY = 86_400
OPEN_KEY = "{so}"
CHUNK = 500  # commands per pipeline: a big reconcile never holds a shard for long


@dataclass(frozen=True)
class SessionSettings:
    """The session rules and the live driver's settings: exchanges, clues and
    `chatd sessions backfill` must read the same (SESSION_* in the environment)."""

    gap: int = 900
    minute: int = 60
    lateness: float = 45.0
    chat_live: bool = False
    archive: str = "archive"
    stats_age: float = 72 * 3600.0

    @classmethod
    def from_env(cls, env: Env) -> SessionSettings:
        return cls(
            # Rule 2: this long without a minute_broadcast ends a session.
            gap=max(1, round(env.duration("SESSION_GAP", "15m"))),
            # How long one event vouches for the stream being live; the unit of "per minute" figures.
            minute=max(1, round(env.duration("SESSION_MINUTE", "1m"))),
            # Late and out-of-order events the live driver still puts in order (later ones: the backfill's).
            lateness=env.parsed("SESSION_LATENESS", "45s", parse_duration),
            # A minute with chat counts as a live minute, for channels whose software sends no events.
            chat_live=env.choice("SESSION_CHAT_LIVE", ("on", "off"), "off") == "on",
            archive=env.str("SESSION_ARCHIVE", "archive"),
            # Chat per minute is kept this long: summaries of sessions the backfill corrects need it.
            stats_age=env.duration("SESSION_STATS_AGE", "72h"),
        )


def sessions_key(channel_id: str) -> str:
    return f"{{ss:{channel_id}}}"


def live_key(channel_id: str) -> str:
    return f"{{ss:{channel_id}}}:live"


def day_key(day: str) -> str:
    return f"{{sd:{day}}}"


def stats_key(channel: str) -> str:
    return f"{{sa:{channel}}}"


def highlights_key(channel: str) -> str:
    return f"{{hl:{channel}}}"


def lock_key(day: str, partition: str) -> str:
    return f"{{sb:{day}}}:{partition}"


def day_of(seconds: int) -> str:
    """The UTC day of a time, `2026-03-05`."""
    return time.strftime("%Y-%m-%d", time.gmtime(seconds))


def day_start_of(day: str) -> int:
    """`2026-03-05` → its UTC midnight; ValueError for anything else."""
    return calendar.timegm(time.strptime(day, "%Y-%m-%d"))


class SessionStore:
    def __init__(self, shards: ShardSet, timeout: float | None = None) -> None:
        self.shards = shards
        self.timeout = timeout  # per pipeline (None: CACHE_TIMEOUT)

    async def _run(self, op: str, commands: list[tuple[str, tuple[Any, ...]]]) -> list[Any]:
        """(key, command) pairs, sent per shard in pipelines; results in the order given."""
        by_shard: defaultdict[Shard, list[int]] = defaultdict(list)
        for index, (key, _) in enumerate(commands):
            by_shard[self.shards.for_key(key)].append(index)
        results: list[Any] = [None] * len(commands)

        async def on(shard: Shard, indexes: list[int]) -> None:
            for at in range(0, len(indexes), CHUNK):
                chunk = indexes[at:at + CHUNK]
                found = await pipeline_call(shard, op, [commands[i][1] for i in chunk], self.timeout)
                for index, result in zip(chunk, found, strict=True):
                    if isinstance(result, Exception):
                        raise result
                    results[index] = result

        await asyncio.gather(*(on(shard, indexes) for shard, indexes in by_shard.items()))
        return results

    # ---- sessions
    async def put(self, records: list[SessionRecord]) -> None:
        """Write sessions (replacing any with the same channel and start) and index them."""
        commands: list[tuple[str, tuple[Any, ...]]] = []
        for record in records:
            key = sessions_key(record.channel_id)
            commands.append((key, ("ZREMRANGEBYSCORE", key, record.start, record.start)))
            commands.append((key, ("ZADD", key, record.start, wire.encode(record))))
        await self._run("sessions_write", commands)
        await self._run("sessions_index", [(day_key(day_of(r.start)), ("SADD", day_key(day_of(r.start)), r.channel_id))
                                           for r in records])

    async def delete(self, sessions: list[tuple[str, int]]) -> None:
        """Remove sessions by (channel id, start); a channel leaves a day's index with its last one."""
        await self._run("sessions_write", [(sessions_key(channel_id), ("ZREMRANGEBYSCORE", sessions_key(channel_id),
                                                                       start, start))
                                           for channel_id, start in sessions])
        days = sorted({(channel_id, day_of(start)) for channel_id, start in sessions})
        left = await self._run("sessions_read", [
            (sessions_key(channel_id), ("ZCOUNT", sessions_key(channel_id), day_start, f"({day_start + DAY}"))
            for channel_id, day in days for day_start in [day_start_of(day)]])
        await self._run("sessions_index", [(day_key(day), ("SREM", day_key(day), channel_id))
                                           for (channel_id, day), count in zip(days, left, strict=True) if not count])

    async def between(self, channel_ids: list[str], low: int, high: int) -> dict[str, list[SessionRecord]]:
        """Each channel's sessions starting in [low, high)."""
        found = await self._run("sessions_read", [(sessions_key(c), ("ZRANGEBYSCORE", sessions_key(c), low,
                                                                     f"({high}")) for c in channel_ids])
        return {channel_id: [wire.decode(raw, SessionRecord) for raw in members]
                for channel_id, members in zip(channel_ids, found, strict=True)}

    async def latest(self, channel_id: str, before: int | None, limit: int) -> list[SessionRecord]:
        """The channel's sessions starting before `before` (None: any), newest first."""
        key = sessions_key(channel_id)
        high = "+inf" if before is None else f"({before}"
        [members] = await self._run("sessions_read", [(key, ("ZREVRANGEBYSCORE", key, high, "-inf", "LIMIT", 0, limit))])
        return [wire.decode(raw, SessionRecord) for raw in members]

    async def day_channels(self, day: str) -> set[str]:
        [members] = await self._run("sessions_read", [(day_key(day), ("SMEMBERS", day_key(day)))])
        return {member.decode() for member in members}

    # ---- what summaries are made of
    async def add_minutes(self, minutes: list[tuple[str, MinuteStats]], keep: float) -> None:
        horizon = int(time.time() - keep)
        commands: list[tuple[str, tuple[Any, ...]]] = []
        for channel in {channel for channel, _ in minutes}:
            key = stats_key(channel)
            commands += [(key, ("ZREMRANGEBYSCORE", key, "-inf", f"({horizon}")), (key, ("EXPIRE", key, int(keep)))]
        commands += [(stats_key(channel), ("ZADD", stats_key(channel), stats.minute, wire.encode(stats)))
                     for channel, stats in minutes]
        await self._run("stats_write", commands)

    async def summary_inputs(self, records: list[SessionRecord], minute: int
                             ) -> list[tuple[list[MinuteStats], list[bytes]]]:
        """For each session: the chat minutes that overlap it and the highlights that start in it."""
        commands: list[tuple[str, tuple[Any, ...]]] = []
        for r in records:
            commands.append((stats_key(r.channel), ("ZRANGEBYSCORE", stats_key(r.channel), r.start - minute + 1,
                                                    f"({r.end}")))
            commands.append((highlights_key(r.channel), ("ZRANGEBYSCORE", highlights_key(r.channel), r.start * 1000,
                                                         f"({r.end * 1000}")))
        found = await self._run("summary_read", commands)
        return [([wire.decode(raw, MinuteStats) for raw in found[2 * i]], list(found[2 * i + 1]))
                for i in range(len(records))]

    # ---- the live driver's state
    async def load_live(self, channel_ids: list[str]) -> dict[str, LiveState]:
        found = await self._run("live_read", [(live_key(c), ("GET", live_key(c))) for c in channel_ids])
        return {c: wire.decode(raw, LiveState) for c, raw in zip(channel_ids, found, strict=True) if raw}

    async def save_live(self, states: dict[str, tuple[LiveState, float]]) -> None:
        """Live state per channel with the time anyone may finish it."""
        await self._run("live_write", [(live_key(c), ("SET", live_key(c), wire.encode(state)))
                                       for c, (state, _) in states.items()])
        if states:
            flat = [item for c, (_, deadline) in states.items() for item in (deadline, c)]
            await self._run("live_index", [(OPEN_KEY, ("ZADD", OPEN_KEY, *flat))])

    async def drop_live(self, channel_ids: list[str]) -> None:
        if channel_ids:
            await self._run("live_write", [(live_key(c), ("DEL", live_key(c))) for c in channel_ids])
            await self._run("live_index", [(OPEN_KEY, ("ZREM", OPEN_KEY, *channel_ids))])

    async def expired(self, now: float, limit: int) -> list[str]:
        """Channels whose live state anyone may finish by now (their exchange is gone or forgot them)."""
        [members] = await self._run("live_index", [(OPEN_KEY, ("ZRANGEBYSCORE", OPEN_KEY, "-inf", now,
                                                               "LIMIT", 0, limit))])
        return [member.decode() for member in members]

    # ---- one backfill per day and partition at a time
    async def lock(self, key: str, token: str, ttl: int) -> bool:
        [taken] = await self._run("backfill_lock", [(key, ("SET", key, token, "NX", "EX", ttl))])
        return bool(taken)

    async def renew(self, key: str, token: str, ttl: int) -> bool:
        [renewed] = await self._run("backfill_lock", [(key, ("EVAL", RENEW, 1, key, token, ttl))])
        return bool(renewed)

    async def unlock(self, key: str, token: str) -> None:
        await self._run("backfill_lock", [(key, ("EVAL", RELEASE, 1, key, token))])


# Renew or release a lock only while it is still ours (it may have expired and been taken).
RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('EXPIRE', KEYS[1], ARGV[2]) end return 0"
RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
