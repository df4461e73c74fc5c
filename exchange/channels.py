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
from common.wire import Event

if TYPE_CHECKING:
    from exchange.links import EdgeLink

# Ids are remembered this long: retries of a submission, and its settling,
# come within seconds.
IDEMPOTENCY_SECONDS = 30.0
NO_SUBSCRIBERS: frozenset[EdgeLink] = frozenset()


@dataclass(slots=True)
class Entry:
    seq: int
    rv: int
    id: str
    at: float  # when it was ordered (monotonic)
    encoded: bytes


@dataclass(slots=True)
class Move:
    cluster: str
    version: int
    to: str


class MessageIds:
    """Ids ordered (or settled as never ordered) lately, exchange-wide: message
    ids are unique, so one map serves every channel and costs nothing per channel."""

    def __init__(self, seconds: float = IDEMPOTENCY_SECONDS) -> None:
        self._seconds = seconds
        self._seqs: dict[str, int] = {}
        self._times: deque[tuple[float, str]] = deque()

    def get(self, message_id: str) -> int | None:
        """The seq the id was ordered with, CLOSED, or None if it is new."""
        return self._seqs.get(message_id)

    def remember(self, message_id: str, seq: int, now: float) -> None:
        self._seqs[message_id] = seq
        self._times.append((now, message_id))
        horizon = now - self._seconds
        while self._times and self._times[0][0] < horizon:
            _, old = self._times.popleft()
            self._seqs.pop(old, None)


class ChannelLog:
    __slots__ = ("gen", "history", "last_write", "moved", "name", "seq", "subscribers")

    def __init__(self, name: str, gen: int) -> None:
        self.name = name
        self.gen = gen
        self.seq = 0
        # A list trimmed in steps, not a deque: most channels hold a few events,
        # and an empty deque alone costs more than all of them.
        self.history: list[Entry] = []
        self.subscribers: frozenset[EdgeLink] | set[EdgeLink] = NO_SUBSCRIBERS
        self.last_write = time.monotonic()
        self.moved: Move | None = None

    def subscribe(self, link: EdgeLink) -> None:
        if not self.subscribers:
            self.subscribers = set()
        self.subscribers.add(link)  # type: ignore[union-attr]

    def unsubscribe(self, link: EdgeLink) -> None:
        if link in self.subscribers:
            self.subscribers.discard(link)  # type: ignore[union-attr]

    def order(self, event: Event, history_limit: int) -> bytes:
        """Give the event the next sequence number; returns it encoded, once."""
        self.seq += 1
        event.seq = self.seq
        event.gen = self.gen
        encoded = wire.encode(event)
        history = self.history
        now = time.monotonic()
        history.append(Entry(self.seq, event.rv, event.id, now, encoded))
        if len(history) > history_limit + history_limit // 4 + 1:
            del history[: len(history) - history_limit]
        self.last_write = now
        return encoded

    def _first(self) -> int:
        return self.history[0].seq if self.history else self.seq + 1

    def since(self, after: int) -> list[bytes]:
        """Encoded events with seq > after, in order."""
        start = max(0, after + 1 - self._first())
        return [entry.encoded for entry in self.history[start:]]

    def between(self, after: int, before: int) -> tuple[list[bytes], bool]:
        """Encoded events with after < seq < before; complete if none is missing."""
        first = self._first()
        wanted = range(max(after + 1, first), min(before, self.seq + 1))
        found = [self.history[seq - first].encoded for seq in wanted]
        return found, after + 1 >= first and before <= self.seq + 1

    def since_version(self, version: int) -> tuple[list[bytes], int]:
        """Events ordered since a route version (a live move); and the seq before them."""
        found = [entry for entry in self.history if entry.rv >= version]
        baseline = found[0].seq - 1 if found else self.seq
        return [entry.encoded for entry in found], baseline

    def recent(self, seconds: float) -> list[bytes]:
        """Encoded events ordered in the last `seconds`, in order."""
        horizon = time.monotonic() - seconds
        start = len(self.history)
        while start > 0 and self.history[start - 1].at >= horizon:
            start -= 1
        return [entry.encoded for entry in self.history[start:]]

    def find(self, message_id: str) -> Event | None:
        """A message still in the history, by id (for /delete: rare, so a scan)."""
        for entry in reversed(self.history):
            if entry.id == message_id:
                return wire.decode(entry.encoded, Event)
        return None

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
