"""The moderation log: what moderators did, per channel and cluster-wide, newest first.

Every command that needs a moderator (or the broadcaster) and was carried out is
recorded, whichever way it came (IRC, the HTTP API, Helix: they all run
clue.commands through Ingest.run_command). Each channel keeps its last
CHANNEL_KEPT entries on the channel's own shard, beside its settings; the last
RECENT_KEPT of every channel are kept together for the operator console. The log
is best effort: a shard that cannot take an entry costs the entry, never the
moderation action (counted in `modlog.lost`).
"""
from __future__ import annotations

import asyncio

import structlog

from clue.commands import COMMANDS, Role
from common import wire
from common.metrics import Metrics
from common.shards import ShardSet, ShardUnavailable, channel_key, pipeline_call
from common.wire import Identity, ModerationEntry

log = structlog.get_logger()

CHANNEL_KEPT = 200
RECENT_KEPT = 500
AGE_SECONDS = 30 * 86400  # a channel's log expires a month after its last entry
RECENT_KEY = "{modlog}:recent"
# Commands whose first argument is whom they act on (a login, or a message for /delete).
TARGETED = frozenset({"ban", "unban", "timeout", "untimeout", "delete", "mod", "unmod", "vip", "unvip"})
# Older names, logged as what they do.
ALIASES = {"r9kbeta": "uniquechat", "r9kbetaoff": "uniquechatoff"}


def channel_log_key(channel: str) -> str:
    return channel_key(channel, "modlog")


def is_moderation(text: str) -> bool:
    """A command line that needs a moderator (or the broadcaster) to run."""
    name = text[1:].split(" ", 1)[0].lower()
    entry = COMMANDS.get(name)
    return entry is not None and entry[0] >= Role.MODERATOR


def entry_for(identity: Identity, channel: str, text: str, now_ms: int) -> ModerationEntry:
    """The log entry of a command line that was carried out."""
    name, *args = text[1:].split()
    action = ALIASES.get(name.lower(), name.lower())
    target = ""
    if action in TARGETED and args:
        target = args[0] if action == "delete" else args[0].lstrip("@").lower()
        args = args[1:]
    return ModerationEntry(ts=now_ms, channel=channel, moderator=identity.login, action=action, target=target,
                           detail=" ".join(args)[:500])


class ModerationLog:
    def __init__(self, shards: ShardSet, metrics: Metrics) -> None:
        self.shards = shards
        self.metrics = metrics

    async def record(self, entry: ModerationEntry) -> None:
        encoded = wire.encode(entry)
        writes = [(channel_log_key(entry.channel), CHANNEL_KEPT), (RECENT_KEY, RECENT_KEPT)]
        results = await asyncio.gather(*(self._push(key, kept, encoded) for key, kept in writes),
                                       return_exceptions=True)
        if any(isinstance(result, ShardUnavailable) for result in results):
            self.metrics.incr("modlog.lost")
            log.warning("modlog_lost", remote="redis", channel=entry.channel, action=entry.action)

    async def _push(self, key: str, kept: int, encoded: bytes) -> None:
        await pipeline_call(self.shards.for_key(key), "modlog", [
            ("LPUSH", key, encoded), ("LTRIM", key, 0, kept - 1), ("EXPIRE", key, AGE_SECONDS)])

    async def read(self, channel: str | None, limit: int) -> list[ModerationEntry]:
        """The newest `limit` entries of a channel (None: of every channel)."""
        key = RECENT_KEY if channel is None else channel_log_key(channel)
        shard = self.shards.for_key(key)
        [raw] = await pipeline_call(shard, "modlog_read", [("LRANGE", key, 0, limit - 1)], shard.read_timeout)
        entries = []
        for item in raw or []:
            try:
                entries.append(wire.decode(item, ModerationEntry))
            except wire.DecodeError:
                continue  # an entry of another version: skipped, not fatal
        return entries
