"""Stream summaries: what a session's chat did, from per-minute counts.

The exchange that orders a channel counts its chat per minute (`ChatMinutes`:
messages, who spoke, first-time chatters, emotes) and stores each minute that
ended; a session's summary is a fold over the minutes it covers plus the
highlights whose window starts inside it (`summarize`). Keeping minutes, not
sessions, means a session the backfill corrects gets a correct summary too.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

from common.wire import EmoteCount, MinuteStats, SessionSummary

TOP_EMOTES = 5
TOP_HIGHLIGHTS = 5


def tag_value(tags: str, name: str) -> str:
    """One tag's value in Twitch's escaped tag string ("" when absent)."""
    key = name + "="
    if tags.startswith(key):
        start = len(key)
    else:
        at = tags.find(";" + key)
        if at < 0:
            return ""
        start = at + 1 + len(key)
    end = tags.find(";", start)
    return tags[start:] if end < 0 else tags[start:end]


def emote_uses(emotes_tag: str, text: str) -> list[tuple[str, str, int]]:
    """(emote id, its text, uses) from Twitch's `emotes` tag, `25:0-4,6-10/88:12-19`."""
    uses = []
    for part in emotes_tag.split("/"):
        emote_id, _, ranges = part.partition(":")
        spans = [span for span in ranges.split(",") if span]
        if not emote_id or not spans:
            continue
        first, _, last = spans[0].partition("-")
        name = text[int(first):int(last) + 1] if first.isdigit() and last.isdigit() else ""
        uses.append((emote_id, name, len(spans)))
    return uses


@dataclass(slots=True)
class _Minute:
    messages: int = 0
    first_time: int = 0
    chatters: set[str] = field(default_factory=set)
    emotes: Counter[str] = field(default_factory=Counter)
    names: dict[str, str] = field(default_factory=dict)


class ChatMinutes:
    """Each channel's chat, counted per minute of `minute` seconds by the time it was sent."""

    def __init__(self, minute: int) -> None:
        self.minute = minute
        self._minutes: dict[tuple[str, int], _Minute] = {}

    def add(self, channel: str, sent_ms: int, user_id: str, tags: str, text: str) -> None:
        seconds = sent_ms // 1000
        key = (channel, seconds - seconds % self.minute)
        counted = self._minutes.get(key)
        if counted is None:
            counted = self._minutes[key] = _Minute()
        counted.messages += 1
        counted.chatters.add(user_id)
        if tag_value(tags, "first-msg") == "1":
            counted.first_time += 1
        emotes = tag_value(tags, "emotes")
        if emotes:
            for emote_id, name, uses in emote_uses(emotes, text):
                counted.emotes[emote_id] += uses
                counted.names.setdefault(emote_id, name)

    def ended(self, now: float, writer: str) -> list[tuple[str, MinuteStats]]:
        """Minutes over by `now` (all of them with `now` infinite), handed over and forgotten."""
        done = [key for key in self._minutes if key[1] + self.minute <= now]
        return [(channel, _stats(minute, self._minutes.pop((channel, minute)), writer))
                for channel, minute in done]


def _stats(minute: int, counted: _Minute, writer: str) -> MinuteStats:
    return MinuteStats(minute=minute, messages=counted.messages, first_time=counted.first_time,
                       chatters=sorted(counted.chatters), emotes=dict(counted.emotes), names=counted.names,
                       writer=writer)


def summarize(minutes: list[MinuteStats], highlights: list[bytes | str], start: int, end: int,
              minute: int) -> SessionSummary:
    """A session [start, end)'s summary from the minutes that overlap it (several
    records of one minute add up) and the highlights (`{hl:<#chan>}` members: JSON
    with `id`, `window_start_ms`, `score`) whose window starts inside it."""
    per_minute: Counter[int] = Counter()
    chatters: set[str] = set()
    first_time = 0
    emotes: Counter[str] = Counter()
    names: dict[str, str] = {}
    for stats in minutes:
        if stats.minute >= end or stats.minute + minute <= start:
            continue
        per_minute[stats.minute] += stats.messages
        chatters.update(stats.chatters)
        first_time += stats.first_time
        emotes.update(stats.emotes)
        for emote_id, name in stats.names.items():
            names.setdefault(emote_id, name)
    inside = []
    for raw in highlights:
        try:
            found = json.loads(raw)
            if start * 1000 <= int(found["window_start_ms"]) < end * 1000:
                inside.append((float(found.get("score", 0)), str(found.get("id", ""))))
        except (ValueError, TypeError, KeyError):
            continue  # not ours to judge: a malformed highlight is left out of the count
    inside.sort(reverse=True)
    return SessionSummary(
        messages=sum(per_minute.values()),
        unique_chatters=len(chatters),
        first_time_chatters=first_time,
        peak_messages_per_minute=max(per_minute.values(), default=0),
        highlights=len(inside),
        top_highlights=[highlight_id for _, highlight_id in inside[:TOP_HIGHLIGHTS]],
        top_emotes=[EmoteCount(emote_id, names.get(emote_id, ""), count)
                    for emote_id, count in sorted(emotes.items(), key=lambda item: (-item[1], item[0]))[:TOP_EMOTES]],
    )
