"""Read-mostly channel state (modes, moderators, VIPs) with an in-process cache.

The state lives in Redis on the channel's shard. Each clue process caches it
and drops an entry when any writer announces a change on the shard's
`chatd:invalidate` pub/sub channel; the TTL is only a safety net for a lost
announcement. A lost pub/sub connection clears the whole cache.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from clue.accounts import login_key, profile_key
from common.metrics import Metrics
from common.shards import ShardSet, channel_key, pipeline_call
from common.tokens import stable_id

log = structlog.get_logger()

INVALIDATE = "chatd:invalidate"

# Channel settings kept in the `{c:#chan}:settings` hash, with their defaults.
SETTING_DEFAULTS: dict[str, int] = {
    "slow": 0,  # seconds between a user's messages; 0 = off
    "emote_only": 0,
    "subs_only": 0,
    "r9k": 0,
    "followers_only": -1,  # minutes; -1 = off
}


@dataclass(frozen=True, slots=True)
class ChannelState:
    name: str
    room_id: str  # the broadcaster's user id
    settings: dict[str, int] = field(default_factory=lambda: dict(SETTING_DEFAULTS))
    mods: frozenset[str] = frozenset()
    vips: frozenset[str] = frozenset()
    owner_display_name: str = ""
    # EventSub types someone subscribed to here: clue builds those events, no others.
    eventsub: frozenset[str] = frozenset()

    @property
    def owner(self) -> str:
        """The broadcaster: the login the channel is named after."""
        return self.name.lstrip("#")

    @property
    def broadcaster(self) -> tuple[str, str, str]:
        """(user id, login, display name), as EventSub names people."""
        return self.room_id, self.owner, self.owner_display_name or self.owner

    def room_state_tags(self) -> dict[str, str]:
        s = self.settings
        return {
            "emote-only": str(s["emote_only"]),
            "followers-only": str(s["followers_only"]),
            "r9k": str(s["r9k"]),
            "rituals": "0",
            "room-id": self.room_id,
            "slow": str(s["slow"]),
            "subs-only": str(s["subs_only"]),
        }


class ChannelCache:
    def __init__(self, shards: ShardSet, metrics: Metrics, ttl: float) -> None:
        self._shards = shards
        self._metrics = metrics
        self._ttl = ttl
        self._entries: dict[str, tuple[float, ChannelState]] = {}
        self._loading: dict[str, asyncio.Future[ChannelState]] = {}
        self._listeners: list[asyncio.Task[None]] = []
        # Other pub/sub announcements (e.g. route changes) → handlers.
        self.announcements: dict[str, Callable[[str], Awaitable[None]]] = {}

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._listeners = [loop.create_task(self._listen(shard)) for shard in self._shards]

    async def close(self) -> None:
        for task in self._listeners:
            task.cancel()
        await asyncio.gather(*self._listeners, return_exceptions=True)

    async def get(self, channel: str) -> ChannelState:
        entry = self._entries.get(channel)
        if entry is not None and entry[0] > time.monotonic():
            self._metrics.incr("cache.hit")
            return entry[1]
        self._metrics.incr("cache.miss")
        loading = self._loading.get(channel)
        if loading is None:
            # One load per channel at a time, however many messages wait for it.
            loading = asyncio.ensure_future(self._load(channel))
            self._loading[channel] = loading
            loading.add_done_callback(lambda _: self._loading.pop(channel, None))
        return await asyncio.shield(loading)

    def invalidate(self, channel: str) -> None:
        self._entries.pop(channel, None)

    async def _load(self, channel: str) -> ChannelState:
        shard = self._shards.for_key(channel_key(channel, "settings"))
        settings_raw, mods, vips, eventsub = await pipeline_call(
            shard,
            "channel_load",
            [
                ("HGETALL", channel_key(channel, "settings")),
                ("SMEMBERS", channel_key(channel, "mods")),
                ("SMEMBERS", channel_key(channel, "vips")),
                ("HGETALL", channel_key(channel, "eventsub")),
            ],
        )
        room_id, display_name = await self._broadcaster(channel.lstrip("#"))
        settings = dict(SETTING_DEFAULTS)
        for key, value in (settings_raw or {}).items():
            name = key.decode()
            if name in settings:
                settings[name] = int(value)
        state = ChannelState(
            name=channel,
            room_id=room_id,
            settings=settings,
            mods=frozenset(m.decode() for m in mods or ()),
            vips=frozenset(v.decode() for v in vips or ()),
            owner_display_name=display_name,
            eventsub=frozenset(kind.decode() for kind, count in (eventsub or {}).items() if int(count) > 0),
        )
        self._entries[channel] = (time.monotonic() + self._ttl, state)
        return state

    async def _broadcaster(self, login: str) -> tuple[str, str]:
        """The channel owner's user id and display name: as registered when they
        logged in (a token may name any id), else derived from the login."""
        key = login_key(login)
        [found] = await pipeline_call(self._shards.for_key(key), "user_id", [("GET", key)])
        if not found:
            return stable_id(login), login
        user_id = found.decode()
        [name] = await pipeline_call(self._shards.for_key(profile_key(user_id)), "user_read",
                                     [("HGET", profile_key(user_id), "display_name")])
        return user_id, name.decode() if name else login

    async def update_settings(self, channel: str, changes: dict[str, int]) -> None:
        """Write settings and tell every clue process to drop its copy."""
        unknown = set(changes) - set(SETTING_DEFAULTS)
        if unknown:
            raise ValueError(f"unknown channel settings: {', '.join(sorted(unknown))}")
        shard = self._shards.for_key(channel_key(channel, "settings"))
        flat = [item for pair in changes.items() for item in pair]
        await pipeline_call(
            shard,
            "channel_write",
            [("HSET", channel_key(channel, "settings"), *flat), ("PUBLISH", INVALIDATE, channel)],
        )
        self.invalidate(channel)

    async def update_members(self, channel: str, set_name: str, login: str, *, add: bool) -> None:
        """Add to or remove from a role set (`mods`, `vips`) and announce it."""
        key = channel_key(channel, set_name)
        await pipeline_call(
            self._shards.for_key(key),
            "channel_write",
            [("SADD" if add else "SREM", key, login), ("PUBLISH", INVALIDATE, channel)],
        )
        self.invalidate(channel)

    async def _listen(self, shard) -> None:
        """Follow one shard's invalidations for as long as the process runs."""
        while True:
            pubsub = shard.pubsub_client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(INVALIDATE, *self.announcements)
                # Anything cached before (re)subscribing may have missed a change.
                self._entries.clear()
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    topic, subject = message["channel"].decode(), message["data"].decode()
                    if topic == INVALIDATE:
                        self.invalidate(subject)
                        self._metrics.incr("cache.invalidated")
                    else:
                        await self.announcements[topic](subject)
            except asyncio.CancelledError:
                await pubsub.aclose()
                raise
            except Exception as exc:  # the shard went away: retry, and don't trust the cache
                log.warning("invalidation_lost", remote="redis", shard=shard.address, detail=str(exc)[:200])
                self._entries.clear()
                await pubsub.aclose()
                await asyncio.sleep(0.5)

