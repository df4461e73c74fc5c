"""Stream sessions, live: an observer (exchange/observers.py) in the exchange that
orders each channel, so live session work is partitioned by channel like chat.

`observe()` only keeps what it sees: `minute_broadcast` events (clue publishes
them in the channel's order, with no IRC line) and chat. Once a tick, in a task
of its own:

- events are appended to the archive (common/archive.py), which the backfill reads;
- chat is counted per minute (analytics.summaries.ChatMinutes) and minutes that
  ended are stored (`{sa:<#chan>}`); with SESSION_CHAT_LIVE a minute with chat
  is also a live minute of the channel;
- events go to the session core behind the lateness (analytics.sessions.LiveSessions);
  the sessions it opens and closes are written to `{ss:<channel id>}` and the day
  index, a closed one with its summary;
- each channel's live state (open run, events waiting) is written to Redis, so
  a restarted exchange takes up its channels where they were (loaded on their
  next event), and a channel whose stream ended while no exchange held it is
  finished by whichever exchange sweeps `{so}` first: the same events give the
  same sessions wherever they are computed.

A Redis failure keeps what was to be written for the next tick; chat is never
touched by any of it.
"""
from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

import structlog

from analytics.sessions import CLOSED, Change, LiveSessions, Rules
from analytics.summaries import ChatMinutes, summarize, tag_value
from common import archive
from common.metrics import Metrics
from common.sessions import SessionSettings, SessionStore
from common.shards import ShardSet, ShardUnavailable
from common.tasks import cancel_and_wait
from common.wire import Broadcast, Event, LiveState, MinuteStats, SessionRecord

log = structlog.get_logger()

SWEEP_EVERY = 5.0  # seconds between looks for channels no exchange holds any more
SWEEP_LIMIT = 200
MAX_UNWRITTEN = 100_000  # chat minutes kept for a Redis that is down; older ones are dropped (counted)


class SessionDriver:
    def __init__(self, shards: ShardSet, settings: SessionSettings, metrics: Metrics) -> None:
        self.store = SessionStore(shards)
        self.settings = settings
        self.metrics = metrics
        self.live = LiveSessions(Rules(gap=settings.gap, minute=settings.minute), settings.lateness)
        self.chat = ChatMinutes(settings.minute)
        self.archive = Path(settings.archive)
        self.writer = f"{socket.gethostname()}-{os.getpid()}"
        self.names: dict[str, str] = {}  # channel id → channel, for the channels held
        self.tick_seconds = min(1.0, settings.gap / 4)
        self._broadcasts: list[tuple[Broadcast, str, float]] = []  # with when each arrived
        self._chat: list[Event] = []
        self._chat_live: dict[str, int] = {}  # channel → the last minute chat made live
        self._outbox: dict[tuple[str, int], SessionRecord] = {}  # sessions to write
        self._closing: list[SessionRecord] = []  # closed sessions still to summarize
        self._dirty: set[str] = set()  # channels whose live state changed
        self._minutes: list[tuple[str, MinuteStats]] = []
        self._flushes = 0
        self._next_sweep = 0.0
        self._task: asyncio.Task[None] | None = None
        metrics.gauge_from("sessions.held", lambda: len(self.names))

    def start(self) -> None:
        try:
            self.archive.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("archive_unavailable", path=str(self.archive), detail=str(exc)[:200])
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        try:
            await self.tick(time.time(), final=True)
        except ShardUnavailable:
            log.warning("sessions_unsaved", remote="redis", channels=len(self.names))

    def observe(self, event: Event) -> None:
        if event.broadcast is not None:
            self._broadcasts.append((event.broadcast, event.channel, time.time()))
        elif event.command == "PRIVMSG" and event.channel.startswith("#"):
            self._chat.append(event)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick_seconds)
            try:
                await self.tick(time.time())
            except ShardUnavailable:
                self.metrics.incr("sessions.tick_failed")  # what was to be written waits for the next tick

    async def tick(self, now: float, final: bool = False) -> None:
        broadcasts, self._broadcasts = self._broadcasts, []
        broadcasts += self._count_chat(now)
        try:
            await self._hold([b.channel_id for b, _, _ in broadcasts if b.channel_id not in self.names])
        except ShardUnavailable:
            self._broadcasts[:0] = broadcasts  # offered next tick, in the same order
            raise
        if broadcasts:
            rows = [(b.time, b.channel_id, channel, b.source) for b, channel, _ in broadcasts]
            try:
                await asyncio.to_thread(archive.append, self.archive, self.writer, rows)
                self.metrics.incr("sessions.archived", len(rows))
            except OSError as exc:  # a full or read-only disk costs the backfill these events, not the live sessions
                self.metrics.incr("sessions.archive_failed", len(rows))
                log.warning("archive_failed", path=str(self.archive), rows=len(rows), detail=str(exc)[:200])
        changes: list[Change] = []
        for broadcast, channel, arrived in broadcasts:
            self.names[broadcast.channel_id] = channel
            verdict, found = self.live.offer(broadcast.channel_id, broadcast.time, arrived)
            self.metrics.incr(f"sessions.events.{verdict}")
            changes += found
            self._dirty.add(broadcast.channel_id)
        if now >= self._next_sweep and not final:
            self._next_sweep = now + SWEEP_EVERY
            await self._hold([c for c in await self.store.expired(now, SWEEP_LIMIT) if c not in self.names])
        changes += self.live.tick(now)
        self._minutes += self.chat.ended(float("inf") if final else now - self.tick_seconds, self._next_writer())
        if self._minutes:  # before summaries: a session's last minutes count
            del self._minutes[:-MAX_UNWRITTEN]
            await self.store.add_minutes(self._minutes, self.settings.stats_age)
            self._minutes = []
        self._record(changes)
        await self._summarize()
        if self._outbox:
            await self.store.put(list(self._outbox.values()))
            self._outbox.clear()
        await self._save()

    def _count_chat(self, now: float) -> list[tuple[Broadcast, str, float]]:
        """Count chat per minute; with SESSION_CHAT_LIVE, a channel's first message of a
        minute makes that minute live (as an event at the minute's start)."""
        chat, self._chat = self._chat, []
        made_live = []
        minute = self.settings.minute
        for event in chat:
            sent_ms = event.sent_ms or int(now * 1000)
            self.chat.add(event.channel, sent_ms, event.user_id, event.tags, event.text)
            if self.settings.chat_live:
                start = sent_ms // 1000 - sent_ms // 1000 % minute
                if self._chat_live.get(event.channel) != start and (room := tag_value(event.tags, "room-id")):
                    self._chat_live[event.channel] = start
                    made_live.append((Broadcast(room, start, "chat"), event.channel, now))
        return made_live

    def _next_writer(self) -> str:
        self._flushes += 1
        return f"{self.writer}/{self._flushes}"

    async def _hold(self, channel_ids: list[str]) -> None:
        """Take up channels' live state from Redis (left by an exchange that stopped)."""
        if not channel_ids:
            return
        for channel_id, state in (await self.store.load_live(list(dict.fromkeys(channel_ids)))).items():
            self.live.restore(channel_id, state.run, state.pending)
            self.names.setdefault(channel_id, state.channel)
            self._dirty.add(channel_id)
            self.metrics.incr("sessions.taken_up")

    def _record(self, changes: list[Change]) -> None:
        """Sessions to write: closed ones (once summarized), and the open one of every
        channel that moved (its end grows a minute at a time)."""
        for kind, session in changes:
            self._dirty.add(session.channel_id)
            channel = self.names[session.channel_id]
            if kind == CLOSED:
                self._closing.append(SessionRecord(session.channel_id, channel, session.start, session.end))
                self.metrics.incr("sessions.closed")
            else:
                self.metrics.incr("sessions.opened")
        for channel_id in self._dirty:
            current = self.live.core.current(channel_id)
            if current is not None:
                self._outbox[(channel_id, current.start)] = SessionRecord(
                    channel_id, self.names[channel_id], current.start, current.end, open=True)

    async def _summarize(self) -> None:
        if not self._closing:
            return
        inputs = await self.store.summary_inputs(self._closing, self.settings.minute)
        for record, (minutes, highlights) in zip(self._closing, inputs, strict=True):
            record.summary = summarize(minutes, highlights, record.start, record.end, self.settings.minute)
            self._outbox[(record.channel_id, record.start)] = record
        self._closing = []

    async def _save(self) -> None:
        states: dict[str, tuple[LiveState, float]] = {}
        done = []
        for channel_id in self._dirty:
            run, pending = self.live.state(channel_id)
            deadline = self.live.deadline(channel_id)
            if deadline is None:
                done.append(channel_id)
            else:
                states[channel_id] = (LiveState(self.names[channel_id], run, pending), deadline)
        await self.store.save_live(states)
        await self.store.drop_live(done)
        self._dirty.clear()
        for channel_id in done:
            self.names.pop(channel_id, None)
            self.live.forget(channel_id)
