"""Each channel's stream at its exchange: sequence, recent history, who wants it.

The history serves three readers: an edge that saw a gap asks for the missing
range; an edge that (re)subscribes after losing its subscription, or after this
exchange restarted, gets what was ordered since its position; /delete looks a
recent message up by id. Ids also make publishing idempotent: a submission
retried after a failover is ordered once.

A channel nobody subscribes to and nobody writes to is forgotten after a while,
so state stays bounded however many channels come and go. A channel that is
created again gets a new generation (`gen`): edges tell its stream apart from
the one that was forgotten.
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from common import wire
from common.wire import CLOSED, Event

if TYPE_CHECKING:
    from exchange.links import EdgeLink

# Ids are remembered this long (retries of a submission arrive within seconds).
IDEMPOTENCY_SECONDS = 60.0


@dataclass(slots=True)
class Entry:
    seq: int
    rv: int
    encoded: bytes


@dataclass(slots=True)
class Move:
    cluster: str
    version: int
    to: str


class ChannelLog:
    __slots__ = ("name", "gen", "seq", "history", "by_id", "id_times", "subscribers", "last_write", "moved")

    def __init__(self, name: str, gen: int) -> None:
        self.name = name
        self.gen = gen
        self.seq = 0
        self.history: deque[Entry] = deque()
        self.by_id: dict[str, int] = {}  # message id → seq, or CLOSED
        self.id_times: deque[tuple[float, str]] = deque()
        self.subscribers: set[EdgeLink] = set()
        self.last_write = time.monotonic()
        self.moved: Move | None = None

    def seen(self, message_id: str) -> int | None:
        """The seq an id was ordered with, CLOSED, or None if it is new."""
        return self.by_id.get(message_id)

    def order(self, event: Event, history_limit: int) -> bytes:
        """Give the event the next sequence number; returns it encoded, once."""
        self.seq += 1
        event.seq = self.seq
        event.gen = self.gen
        encoded = wire.encode(event)
        self.history.append(Entry(self.seq, event.rv, encoded))
        if len(self.history) > history_limit:
            self.history.popleft()
        now = time.monotonic()
        self.last_write = now
        if event.id:
            self._remember(event.id, self.seq, now)
        return encoded

    def close(self, message_id: str) -> None:
        """Settle an id as never published: a late publish of it is refused."""
        self._remember(message_id, CLOSED, time.monotonic())

    def _remember(self, message_id: str, seq: int, now: float) -> None:
        self.by_id[message_id] = seq
        self.id_times.append((now, message_id))
        horizon = now - IDEMPOTENCY_SECONDS
        while self.id_times and self.id_times[0][0] < horizon:
            _, old = self.id_times.popleft()
            self.by_id.pop(old, None)

    def since(self, after: int) -> list[bytes]:
        """Encoded events with seq > after, in order."""
        if not self.history or after >= self.seq:
            return []
        first = self.history[0].seq
        start = max(0, after + 1 - first)
        return [self.history[i].encoded for i in range(start, len(self.history))]

    def between(self, after: int, before: int) -> tuple[list[bytes], bool]:
        """Encoded events with after < seq < before; complete if none is missing."""
        if not self.history:
            return [], before - after <= 1
        first = self.history[0].seq
        wanted = range(max(after + 1, first), min(before, self.seq + 1))
        found = [self.history[seq - first].encoded for seq in wanted]
        return found, after + 1 >= first and before <= self.seq + 1

    def since_version(self, version: int) -> tuple[list[bytes], int]:
        """Events ordered since a route version (a live move); and the seq before them."""
        found = [entry for entry in self.history if entry.rv >= version]
        baseline = found[0].seq - 1 if found else self.seq
        return [entry.encoded for entry in found], baseline

    def find(self, message_id: str) -> Event | None:
        seq = self.by_id.get(message_id)
        if not seq or seq < 0 or not self.history:
            return None
        index = seq - self.history[0].seq
        if index < 0:
            return None
        return wire.decode(self.history[index].encoded, Event)

    def position(self, boot: str) -> wire.Position:
        return wire.Position(boot, self.gen, self.seq)


class ChannelTable:
    """Every channel this exchange holds, created on first use, forgotten when idle."""

    def __init__(self, history_limit: int, idle_seconds: float) -> None:
        self.history_limit = history_limit
        self.idle_seconds = idle_seconds
        self._channels: dict[str, ChannelLog] = {}
        self._generations = 0

    def __len__(self) -> int:
        return len(self._channels)

    def __iter__(self) -> Iterator[ChannelLog]:
        return iter(self._channels.values())

    def get(self, name: str) -> ChannelLog | None:
        return self._channels.get(name)

    def open(self, name: str) -> ChannelLog:
        log = self._channels.get(name)
        if log is None:
            self._generations += 1
            log = self._channels[name] = ChannelLog(name, self._generations)
        return log

    def sweep(self) -> int:
        """Forget channels nobody subscribes to or wrote to lately; returns how many."""
        horizon = time.monotonic() - self.idle_seconds
        idle = [name for name, log in self._channels.items() if not log.subscribers and log.last_write < horizon]
        for name in idle:
            del self._channels[name]
        return len(idle)
