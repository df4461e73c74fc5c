"""Stream highlights: a channel's chat rate in fixed windows, and the windows where it jumps.

Sans-I/O. `add(channel, sent_ms, message_id)` counts a message (a counter bump:
it runs on the exchange's publish path); `advance(now_ms)` closes the windows
whose time is up and returns what fired. The exchange runs it on every
channel's ordered messages (exchange/highlights.py) and `chatd highlights watch`
on what it reads over IRC (chatd/watch.py): the same code, so the same traffic
gives the same highlights.

Windows are aligned on the epoch — window k holds the messages sent in
[k·W, (k+1)·W) — so every channel's windows close together, `grace_ms` after
they end (for messages still on their way). For a closed window k:

    r_k   = c_k / W                                    messages per second
    b_k   = mean of r_j over complete j in [k−N, k−1]  the moving average: the baseline
    d_k   = r_k − r_{k−1}                              the derivative, over one window
    score = d_k / max(b_k, R)                          compare = derivative (default)
          = (r_k − b_k) / max(b_k, R)                  compare = rate

and the window is a highlight when score ≥ T, r_k ≥ R (min_rate), at least
`warmup` complete windows are in the average (comparing the derivative: window
k−1 is complete too), and the channel's last highlight is more than `cooldown`
windows back. Below R the baseline counts as R: a quiet channel's chance
handful of messages is no jump, it must climb T·R messages a second.

A window is *complete* when the detector saw all of it. The window of the first
message a detector sees from a channel is not (it may have begun earlier), nor
is anything a restart or a reconnection missed: such windows stay out of the
average and never fire, so a detector that joins mid-stream or restarts cannot
mistake what it missed for a jump, and never judges a window twice.
`state()` / `restore()` carry a channel's closed windows across a restart.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from common.config import ConfigError, Env
from common.wire import Highlight, HighlightState

UNKNOWN = -1  # the count kept for a window that is not complete
NEVER = -1  # `last` of a channel that never had a highlight
COMPARISONS = ("derivative", "rate")


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(f"expected a number above zero, got {text!r}")
    return value


@dataclass(frozen=True, slots=True)
class Settings:
    window_ms: int = 10_000  # W
    average: int = 30  # N: windows in the moving average (5 minutes)
    compare: str = "derivative"
    threshold: float = 2.0  # T: the jump, in baselines
    min_rate: float = 1.0  # messages per second below which nothing fires
    warmup: int = 6  # complete windows the average needs before anything fires
    cooldown: int = 6  # windows after a highlight that cannot fire
    grace_ms: int = 2_000  # how long after its end a window closes
    clip: int = 1_000  # message ids kept per highlight

    @classmethod
    def from_env(cls, env: Env) -> Settings:
        settings = cls(
            window_ms=round(env.duration("HIGHLIGHT_WINDOW", "10s") * 1000),
            average=env.int("HIGHLIGHT_AVERAGE", 30, minimum=1),
            compare=env.choice("HIGHLIGHT_COMPARE", COMPARISONS, "derivative"),
            threshold=env.parsed("HIGHLIGHT_THRESHOLD", "2", _positive_float),
            min_rate=env.parsed("HIGHLIGHT_MIN_RATE", "1", _positive_float),
            warmup=env.int("HIGHLIGHT_WARMUP", 6, minimum=1),
            cooldown=env.int("HIGHLIGHT_COOLDOWN", 6, minimum=0),
            grace_ms=round(env.duration("HIGHLIGHT_GRACE", "2s") * 1000),
            clip=env.int("HIGHLIGHT_CLIP", 1000, minimum=0),
        )
        if settings.window_ms < 100:
            raise ConfigError("HIGHLIGHT_WINDOW must be at least 100ms")
        if settings.warmup > settings.average:
            raise ConfigError(f"HIGHLIGHT_WARMUP ({settings.warmup}) cannot exceed HIGHLIGHT_AVERAGE "
                              f"({settings.average}): nothing would ever fire")
        return settings


def highlight_id(channel: str, window_start_ms: int) -> str:
    """Deterministic: a redelivery, a restart or another detector on the same traffic names it alike."""
    return f"{channel.lstrip('#')}:{window_start_ms}"


class _Window:
    """A window still counting."""

    __slots__ = ("count", "ids")

    def __init__(self) -> None:
        self.count = 0
        self.ids: list[str] = []


class _Channel:
    __slots__ = ("closed", "counts", "last", "open", "pending", "since")

    def __init__(self, first: int, average: int, pending: bool) -> None:
        self.closed = first - 1  # the last closed window
        self.counts: deque[int] = deque(maxlen=average)  # windows closed-len+1 … closed
        self.last = NEVER
        self.since = first + 1  # the first window this detector sees whole
        self.open: dict[int, _Window] = {}
        self.pending = pending  # waiting for restore(): its windows do not close yet


@dataclass(slots=True)
class Tick:
    """What one `advance` did."""

    highlights: list[Highlight] = field(default_factory=list)
    active: set[str] = field(default_factory=set)  # channels that closed a window with messages
    closed: int = 0  # windows closed, all channels together
    forgotten: int = 0  # channels silent for a whole average, dropped from memory


class Detector:
    """Every channel's windows. `restores`: channels seen for the first time wait
    for `restore()` (what a previous run persisted) before their windows close."""

    def __init__(self, settings: Settings, restores: bool = False) -> None:
        self.settings = settings
        self.window_ms = settings.window_ms
        self.clip = settings.clip
        self.restores = restores
        self.channels: dict[str, _Channel] = {}
        self.late = 0  # messages whose window had already closed (not counted)
        self._new: list[str] = []
        self._through = -1  # the last window closed everywhere
        self._restored = False

    def add(self, channel: str, sent_ms: int, message_id: str) -> None:
        """Count one message: on the exchange's publish path, so it stays a counter bump."""
        state = self.channels.get(channel)
        index = sent_ms // self.window_ms
        if state is None:
            state = self.channels[channel] = _Channel(index, self.settings.average, self.restores)
            if self.restores:
                self._new.append(channel)
        elif index <= state.closed:
            self.late += 1
            return
        window = state.open.get(index)
        if window is None:
            window = state.open[index] = _Window()
        window.count += 1
        if message_id and len(window.ids) < self.clip:
            window.ids.append(message_id)

    def take_new(self) -> list[str]:
        """Channels seen for the first time since the last call (to restore)."""
        new, self._new = self._new, []
        return new

    def restore(self, channel: str, state: HighlightState | None) -> None:
        """A channel's persisted windows (None: nothing usable); its windows close from now on."""
        found = self.channels.get(channel)
        if found is None or not found.pending:
            return
        found.pending = False
        self._restored = True
        if state is None or state.window_ms != self.window_ms:
            return
        found.last = max(found.last, state.last)
        if state.closed < found.closed - self.settings.average:
            return  # too old to be part of any average from here on
        found.counts.extend(state.counts[-self.settings.average:])
        for index in [index for index in found.open if index <= state.closed]:
            self.late += found.open.pop(index).count  # someone else closed that window
        found.closed = state.closed

    def state(self, channel: str) -> HighlightState | None:
        found = self.channels.get(channel)
        if found is None or found.pending:
            return None
        return HighlightState(self.window_ms, found.closed, list(found.counts), found.last)

    def gap(self, now_ms: int, channel: str | None = None) -> None:
        """Everything up to now may have been missed (a reconnection) in `channel`, or in
        every channel: those windows are not complete."""
        since = now_ms // self.window_ms + 1
        for name, found in self.channels.items():
            if channel is None or name == channel:
                found.since = max(found.since, since)

    def advance(self, now_ms: int) -> Tick:
        """Close every window whose end is `grace_ms` past; judge those that had messages."""
        tick = Tick()
        through = (now_ms - self.settings.grace_ms) // self.window_ms - 1
        if through <= self._through and not self._restored:
            return tick
        self._through, self._restored = max(self._through, through), False
        for name in list(self.channels):
            found = self.channels[name]
            if found.pending or found.closed >= through:
                continue
            for index in sorted(index for index in found.open if index <= through):
                self._skip(found, index - 1, tick)
                self._judge(name, found, index, found.open.pop(index), tick)
            self._skip(found, through, tick)
            if not found.open and len(found.counts) == found.counts.maxlen and max(found.counts) <= 0:
                del self.channels[name]
                tick.forgotten += 1
        return tick

    def _skip(self, found: _Channel, upto: int, tick: Tick) -> None:
        """Close the windows up to `upto` that had no message (only the last N matter)."""
        first = max(found.closed + 1, upto - self.settings.average + 1)
        for index in range(first, upto + 1):
            found.counts.append(0 if index >= found.since else UNKNOWN)
        tick.closed += max(0, upto - found.closed)
        found.closed = max(found.closed, upto)

    def _judge(self, name: str, found: _Channel, index: int, window: _Window, tick: Tick) -> None:
        complete = index >= found.since
        if complete:
            highlight = self._score(name, found, index, window)
            if highlight is not None:
                tick.highlights.append(highlight)
                found.last = index
        found.counts.append(window.count if complete else UNKNOWN)
        found.closed = index
        tick.closed += 1
        tick.active.add(name)

    def _score(self, name: str, found: _Channel, index: int, window: _Window) -> Highlight | None:
        settings = self.settings
        seconds = settings.window_ms / 1000
        rate = window.count / seconds
        if rate < settings.min_rate or index - found.last <= settings.cooldown:
            return None
        known = [count for count in found.counts if count >= 0]
        if len(known) < settings.warmup:
            return None
        baseline = sum(known) / len(known) / seconds
        if settings.compare == "derivative":
            previous = found.counts[-1] if found.counts else UNKNOWN
            if previous < 0:
                return None
            jump = rate - previous / seconds
        else:
            jump = rate - baseline
        score = jump / max(baseline, settings.min_rate)
        if score < settings.threshold:
            return None
        start = index * settings.window_ms
        return Highlight(id=highlight_id(name, start), channel=name, window_start_ms=start,
                         window_end_ms=start + settings.window_ms, rate=round(rate, 3), baseline=round(baseline, 3),
                         score=round(score, 3), messages=window.count, message_ids=window.ids)
