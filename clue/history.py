"""Reading a channel's history (written by its exchange, exchange/history.py):
robotty's recent-messages API and IRCv3 CHATHISTORY.

`export()` follows recent-messages: every line gets `historical=1` and
`rm-received-ts`; a message removed by a CLEARMSG, or by a CLEARCHAT of its
sender or of the whole room, gets `rm-deleted=1`; options hide moderation
lines, hide removed messages, or turn CLEARCHAT into a NOTICE.
"""
from __future__ import annotations

import datetime
import time
from collections import defaultdict
from dataclasses import dataclass

from common import wire
from common.history import BUCKET, bucket_key, index_key
from common.irc import IRCParseError, parse
from common.shards import Shard, ShardSet, pipeline_call
from common.wire import HistoryEntry

MODERATION = frozenset({"CLEARCHAT", "CLEARMSG"})
CHAT = frozenset({"PRIVMSG", "USERNOTICE", "NOTICE"})
# NOTICEs recent-messages leaves out (they concern one user, or say nothing about the room).
IGNORED_NOTICES = frozenset({"no_permission", "host_on", "host_off", "host_target_went_offline",
                             "msg_channel_suspended"})
MAX_CHATHISTORY = 100


class HistoryReader:
    def __init__(self, shards: ShardSet, limit: int, age: float) -> None:
        self.shards = shards
        self.limit = limit
        self.age = age

    async def entries(self, channel: str) -> list[HistoryEntry]:
        """The channel's kept history, oldest first: the last `limit` lines of the last `age`."""
        index = index_key(channel)
        shard = self.shards.for_key(index)
        [count] = await pipeline_call(shard, "history_read", [("HGET", index, "n")], timeout=shard.read_timeout)
        if not count:
            return []
        count = int(count)
        first = max(0, count - self.limit)
        wanted = range(first // BUCKET, (count - 1) // BUCKET + 1)
        by_shard: defaultdict[Shard, list[int]] = defaultdict(list)
        for bucket in wanted:
            by_shard[self.shards.for_key(bucket_key(channel, bucket))].append(bucket)
        lines: dict[int, list[bytes]] = {}
        for shard, buckets in by_shard.items():
            found = await pipeline_call(shard, "history_read",
                                        [("LRANGE", bucket_key(channel, bucket), 0, -1) for bucket in buckets],
                                        timeout=shard.read_timeout)
            lines.update(zip(buckets, found, strict=True))
        horizon = (time.time() - self.age) * 1000
        kept = []
        for bucket in wanted:
            for offset, raw in enumerate(lines.get(bucket) or ()):
                if bucket * BUCKET + offset >= first:
                    entry = wire.decode(raw, HistoryEntry)
                    if entry.ts >= horizon:
                        kept.append(entry)
        return kept


# ---- recent-messages


@dataclass(frozen=True, slots=True)
class Options:
    limit: int | None = None
    before: int | None = None  # ms: only lines received before
    after: int | None = None  # ms: only lines received after
    hide_moderation: bool = False
    hide_moderated: bool = False
    clearchat_to_notice: bool = False


def deleted_ids(entries: list[HistoryEntry]) -> set[int]:
    """Positions of messages moderation removed later on (one pass, from the newest)."""
    removed: set[int] = set()
    users: set[str] = set()
    ids: set[str] = set()
    everyone = False
    for position in range(len(entries) - 1, -1, -1):
        entry = entries[position]
        if entry.command == "CLEARCHAT":
            if entry.target:
                users.add(entry.target)
            else:
                everyone = True
        elif entry.command == "CLEARMSG":
            ids.add(entry.target)
        elif entry.command in ("PRIVMSG", "USERNOTICE") and (
                everyone or entry.user_id in users or (entry.id and entry.id in ids)):
            removed.add(position)
    return removed


def export(entries: list[HistoryEntry], options: Options) -> list[str]:
    removed = deleted_ids(entries)
    out = []
    for position, entry in enumerate(entries):
        if options.before is not None and entry.ts >= options.before:
            continue
        if options.after is not None and entry.ts <= options.after:
            continue
        deleted = position in removed
        if deleted and options.hide_moderated:
            continue
        if entry.command in MODERATION and options.hide_moderation:
            continue
        line = entry.line
        try:
            message = parse(line)
        except IRCParseError:
            continue
        if entry.command == "NOTICE" and message.tags.get("msg-id") in IGNORED_NOTICES:
            continue
        if entry.command == "CLEARCHAT" and options.clearchat_to_notice:
            line = clearchat_notice(message)
        extra = f"rm-received-ts={entry.ts};historical=1"
        if deleted:
            extra = "rm-deleted=1;" + extra
        out.append(f"@{extra};{line[1:]}" if line.startswith("@") else f"@{extra} {line}")
    if options.limit is not None:
        out = out[-options.limit:] if options.limit > 0 else []
    return out


def clearchat_notice(message) -> str:
    """CLEARCHAT as recent-messages writes it with clearchat_to_notice."""
    channel = message.params[0]
    if len(message.params) < 2:
        return f"@msg-id=rm-clearchat :tmi.twitch.tv NOTICE {channel} :Chat has been cleared by a moderator."
    login = message.params[1]
    if "ban-duration" in message.tags:
        duration = human_duration(int(message.tags["ban-duration"]))
        return f"@msg-id=rm-timeout :tmi.twitch.tv NOTICE {channel} :{login} has been timed out for {duration}."
    return f"@msg-id=rm-permaban :tmi.twitch.tv NOTICE {channel} :{login} has been permanently banned."


def human_duration(seconds: int) -> str:
    """`10m 20s`, `1h`, `2d 3h` (the humantime style recent-messages uses)."""
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, seconds = divmod(seconds, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return " ".join(parts) or "0s"


# ---- CHATHISTORY (IRCv3 draft/chathistory)


class BadReference(ValueError):
    """A reference that is not `*`, `msgid=…` or `timestamp=…`, or names nothing kept."""


def _position(entries: list[HistoryEntry], reference: str) -> float:
    """Where a reference falls in the history: an index for a msgid, a half index for a time."""
    kind, _, value = reference.partition("=")
    if kind == "msgid":
        for position, entry in enumerate(entries):
            if entry.id == value:
                return position
        raise BadReference(f"no message {value!r} in the history")
    if kind == "timestamp":
        try:
            moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000
        except ValueError:
            raise BadReference(f"bad timestamp {value!r}") from None
        return next((i - 0.5 for i, entry in enumerate(entries) if entry.sent_ms > moment), len(entries) - 0.5)
    raise BadReference(f"bad reference {reference!r}")


def chathistory(entries: list[HistoryEntry], subcommand: str, references: list[str], limit: int
                ) -> list[HistoryEntry]:
    """The messages a CHATHISTORY request selects, oldest first."""
    chat = [entry for entry in entries if entry.command in CHAT]
    limit = max(0, min(limit, MAX_CHATHISTORY))
    if subcommand == "LATEST":
        if references[0] == "*":
            return chat[-limit:] if limit else []
        start = _position(chat, references[0])
        return [e for i, e in enumerate(chat) if i > start][-limit:] if limit else []
    if subcommand == "BEFORE":
        end = _position(chat, references[0])
        return [e for i, e in enumerate(chat) if i < end][-limit:] if limit else []
    if subcommand == "AFTER":
        start = _position(chat, references[0])
        return [e for i, e in enumerate(chat) if i > start][:limit]
    if subcommand == "AROUND":
        middle = _position(chat, references[0])
        ordered = sorted(range(len(chat)), key=lambda i: (abs(i - middle), i))[:limit]
        return [chat[i] for i in sorted(ordered)]
    if subcommand == "BETWEEN":
        one, two = _position(chat, references[0]), _position(chat, references[1])
        low, high = min(one, two), max(one, two)
        inside = [e for i, e in enumerate(chat) if low < i < high]
        return inside[:limit] if one <= two else inside[-limit:] if limit else []
    raise BadReference(f"unknown subcommand {subcommand!r}")
