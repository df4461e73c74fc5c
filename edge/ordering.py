"""Each channel's stream as this edge delivers it: in order, once, without holes.

The exchange delivers at least once (a retried request repeats events) and may
drop what this edge was too slow to take. Per channel this keeps the stream's
identity — the exchange's boot and the channel's generation there — and the
last sequence number delivered. A repeat is dropped; a jump holds what came
after it and asks for the missing range (`Heal`); once the range is back, or
known to be gone, delivery goes on in order and only what could not be found
is counted as a gap. Free of I/O: the service carries heals out and feeds the
answers back.
"""
from __future__ import annotations

from dataclasses import dataclass

from common.wire import Event, Position

UNKNOWN = ""  # a subscription whose starting point has not been heard yet


@dataclass(slots=True, frozen=True)
class Heal:
    """Ask the exchange for the channel's events with after < seq < before."""

    channel: str
    boot: str
    gen: int
    after: int
    before: int


class _Stream:
    __slots__ = ("boot", "gen", "last", "waiting")

    def __init__(self, boot: str, gen: int, last: int) -> None:
        self.boot = boot
        self.gen = gen
        self.last = last
        # Events that arrived behind a gap, with their batch's boot, while the heal is out.
        self.waiting: list[tuple[str, Event]] | None = None


class Ordering:
    def __init__(self) -> None:
        self._streams: dict[str, _Stream] = {}
        self.duplicates = 0
        self.healed = 0
        self.gaps = 0  # events known missing that no one could supply

    # ---- subscriptions
    def open(self, channel: str) -> None:
        """This edge now subscribes to `channel`: deliver from its first event on."""
        if channel not in self._streams:
            self._streams[channel] = _Stream(UNKNOWN, 0, 0)

    def expect(self, channel: str, start: Position) -> None:
        """The exchange's word on where the subscription starts; events that got
        here before it already told us, and win."""
        stream = self._streams.get(channel)
        if stream is not None and stream.boot == UNKNOWN:
            stream.boot, stream.gen, stream.last = start.boot, start.gen, start.seq

    def forget(self, channel: str) -> None:
        self._streams.pop(channel, None)

    def position(self, channel: str) -> Position | None:
        stream = self._streams.get(channel)
        if stream is None or stream.boot == UNKNOWN:
            return None
        return Position(stream.boot, stream.gen, stream.last)

    # ---- events
    def receive(self, boot: str, events: list[Event]) -> tuple[list[Event], list[Heal]]:
        """What to deliver now, in order, and the ranges to ask for."""
        ready: list[Event] = []
        heals: list[Heal] = []
        for event in events:
            stream = self._streams.get(event.channel)
            if stream is None:
                continue  # not subscribed here (any more)
            self._take(stream, boot, event, ready, heals)
        return ready, heals

    def _take(self, stream: _Stream, boot: str, event: Event, ready: list[Event], heals: list[Heal]) -> None:
        if stream.waiting is not None:
            stream.waiting.append((boot, event))
            return
        if stream.boot == UNKNOWN:
            stream.boot, stream.gen, stream.last = boot, event.gen, event.seq
            ready.append(event)
            return
        if boot != stream.boot or event.gen != stream.gen:
            # A new stream of a channel held all along (its exchange restarted or
            # had forgotten it): everything in it is ours, from 1.
            stream.boot, stream.gen, stream.last = boot, event.gen, 0
        if event.seq <= stream.last:
            self.duplicates += 1
        elif event.seq == stream.last + 1:
            stream.last = event.seq
            ready.append(event)
        else:
            stream.waiting = [(boot, event)]
            heals.append(Heal(event.channel, stream.boot, stream.gen, stream.last, event.seq))

    def heal_answered(self, heal: Heal, events: list[Event]) -> tuple[list[Event], list[Heal]]:
        """The exchange answered a heal with what it still had (maybe nothing)."""
        stream = self._streams.get(heal.channel)
        if stream is None or stream.waiting is None or (stream.boot, stream.gen) != (heal.boot, heal.gen):
            return [], []
        ready = self._fill(stream, events, heal.before)
        waiting, stream.waiting = stream.waiting, None
        heals: list[Heal] = []
        for boot, event in waiting:
            self._take(stream, boot, event, ready, heals)
        return ready, heals

    def recover(self, channel: str, boot: str, events: list[Event]) -> list[Event]:
        """Events of a stream whose exchange died (from the clues that published
        them): whatever comes after what was delivered, in order."""
        stream = self._streams.get(channel)
        if stream is None or stream.boot != boot or not events:
            return []
        return self._fill(stream, events, max(event.seq for event in events) + 1)

    def _fill(self, stream: _Stream, events: list[Event], before: int) -> list[Event]:
        """Deliver events up to `before` in order; what is missing is counted once."""
        ready = []
        for event in sorted(events, key=lambda e: e.seq):
            if stream.last < event.seq < before:
                self.gaps += event.seq - stream.last - 1
                self.healed += 1
                stream.last = event.seq
                ready.append(event)
        if stream.last < before - 1:
            self.gaps += before - 1 - stream.last
            stream.last = before - 1
        return ready
