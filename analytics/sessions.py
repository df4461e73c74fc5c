"""Stream sessions from `minute_broadcast` events: the seed's three rules, as one pure core.

Fed each channel's event times in order and a clock, `SessionCore` yields the
sessions it opens and closes:

1. the first event of a channel opens a session;
2. `gap` (15 min) without events closes it: an event `gap` or more after the
   previous one opens a new session, one less than `gap` after it continues it;
3. a session longer than 24 hours is cut at every UTC midnight it crosses, so
   its pieces are [start, midnight), [midnight, midnight + 24 h), …,
   [last midnight, end): all but the first start at UTC midnight, each lies in
   one UTC day. A session of 24 hours or less is never cut, midnight or not.

An event at time t vouches for the stream being live during [t, t + minute):
a session ends at the end of its last live minute (cut to the midnight when
rule 3 applies). A session that has crossed the 24-hour mark is only known to
be longer than 24 hours when an event past that mark arrives; then its pieces
before the last midnight passed close at once, in a burst, and the rest goes on.

The live driver (exchange/sessions.py, through `LiveSessions` below, which waits
`lateness` for late and out-of-order events) and the daily backfill
(chatd/backfill.py) both run this core: fed the same events they produce the
same sessions. Times are whole seconds since the epoch, UTC.
"""
from __future__ import annotations

import bisect
import datetime
from collections.abc import Iterable
from dataclasses import dataclass

DAY = 86_400
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # the seed's records: "2021-03-05 14:13:00"
OPENED, CLOSED = "opened", "closed"


@dataclass(frozen=True, slots=True)
class Rules:
    gap: int = 900  # rule 2: this long without events ends a session
    minute: int = 60  # how long one event vouches for the stream being live
    longest: int = DAY  # rule 3: sessions longer than this are cut at UTC midnights


@dataclass(frozen=True, slots=True)
class Session:
    channel_id: str
    start: int
    end: int  # open: the end of its last live minute so far
    open: bool = False

    @property
    def id(self) -> str:
        return session_id(self.channel_id, self.start)


def session_id(channel_id: str, start: int) -> str:
    return f"{channel_id}:{format_time(start)}"


def format_time(seconds: int) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime(TIME_FORMAT)


def parse_time(text: str) -> int:
    """`2021-03-05 14:13:00` (UTC, the seed's form) or ISO 8601 (`2021-03-05T14:13:00Z`,
    any offset) → seconds; ValueError otherwise."""
    value = datetime.datetime.fromisoformat(text.strip())  # Python 3.11 reads a trailing Z
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    return int(value.timestamp())


Change = tuple[str, Session]  # (OPENED or CLOSED, the session)


class SessionCore:
    """Open runs per channel; each is [start, last event, current piece's start, next cut]
    (next cut 0: rule 3 has not applied yet)."""

    def __init__(self, rules: Rules = Rules()) -> None:
        self.rules = rules
        self.runs: dict[str, list[int]] = {}

    def feed(self, channel_id: str, times: Iterable[int]) -> list[Change]:
        """A channel's events, in time order. An event no later than the last one
        fed changes nothing (a duplicate, or a minute already covered)."""
        gap, minute, longest = self.rules.gap, self.rules.minute, self.rules.longest
        run = self.runs.get(channel_id)
        changes: list[Change] = []
        for t in times:
            if run is not None:
                last = run[1]
                if t <= last:
                    continue
                if t - last < gap:
                    run[1] = t
                    cut = run[3]
                    if cut:
                        if t >= cut:  # past a midnight of a session already over 24 hours
                            self._cut(channel_id, run, t, changes)
                    elif t + minute - run[0] > longest:  # rule 3 applies from now on
                        run[3] = (run[0] // DAY + 1) * DAY
                        if t >= run[3]:
                            self._cut(channel_id, run, t, changes)
                    continue
                changes.append((CLOSED, self._closed(channel_id, run)))
            run = self.runs[channel_id] = [t, t, t, 0]
            changes.append((OPENED, Session(channel_id, t, t + minute, True)))
        return changes

    def _cut(self, channel_id: str, run: list[int], t: int, changes: list[Change]) -> None:
        """Close the pieces up to the last midnight at or before t; the run goes on from it."""
        minute = self.rules.minute
        while run[3] <= t:
            changes.append((CLOSED, Session(channel_id, run[2], run[3])))
            run[2] = run[3]
            run[3] += DAY
            changes.append((OPENED, Session(channel_id, run[2], min(t + minute, run[3]), True)))

    def advance(self, clock: float) -> list[Change]:
        """Close every run whose last event is `gap` or more before `clock`."""
        horizon = clock - self.rules.gap
        ended = [channel_id for channel_id, run in self.runs.items() if run[1] <= horizon]
        return [(CLOSED, self._closed(channel_id, self.runs.pop(channel_id))) for channel_id in ended]

    def _closed(self, channel_id: str, run: list[int]) -> Session:
        end = run[1] + self.rules.minute
        return Session(channel_id, run[2], min(end, run[3]) if run[3] else end)

    def current(self, channel_id: str) -> Session | None:
        """The channel's open session as it stands."""
        run = self.runs.get(channel_id)
        if run is None:
            return None
        end = run[1] + self.rules.minute
        return Session(channel_id, run[2], min(end, run[3]) if run[3] else end, True)


def sessions_of(channel_id: str, times: Iterable[int], rules: Rules = Rules(), clock: float | None = None
                ) -> list[Session]:
    """Every session of a channel's events (sorted), as the core yields them: closed
    ones, then the open one if `clock` (default: never) has not closed it."""
    core = SessionCore(rules)
    changes = core.feed(channel_id, times)
    changes += core.advance(float("inf") if clock is None else clock)
    found = [session for kind, session in changes if kind == CLOSED]
    current = core.current(channel_id)
    return found + ([current] if current is not None else [])


# ---- the live driver's half: late and out-of-order events

FED, PENDING, COVERED, LATE = "fed", "pending", "covered", "late"


class LiveSessions:
    """The core behind a watermark, for events that arrive as they happen.

    Events wait `lateness` before the core sees them, in time order, so an
    event that arrives up to `lateness` after a later one still counts as if
    on time; the clock the core runs on is `now - lateness`. An event older
    than that is still fed at once when it continues the open session, or
    when it opens one that no session closed since could have held and that
    the clock cannot close before what follows it is fed (less than `gap`
    behind the clock): a stream whose every event comes minutes late is
    followed live. Anything else is too late for the live driver and left to
    the backfill.
    """

    def __init__(self, rules: Rules, lateness: float) -> None:
        self.core = SessionCore(rules)
        self.lateness = lateness
        self.pending: dict[str, list[int]] = {}
        self.closed_last: dict[str, int] = {}  # the last event of each channel's session closed lately

    def offer(self, channel_id: str, t: int, now: float) -> tuple[str, list[Change]]:
        """An event at `t` that arrived at `now`: what became of it, and what it changed."""
        watermark = now - self.lateness
        run = self.core.runs.get(channel_id)
        if run is not None and t <= run[1]:
            return COVERED, []
        if t >= watermark:
            waiting = self.pending.setdefault(channel_id, [])
            index = bisect.bisect_left(waiting, t)
            if index < len(waiting) and waiting[index] == t:
                return COVERED, []
            waiting.insert(index, t)
            return PENDING, []
        gap = self.core.rules.gap
        if run is not None or (t > watermark - gap and t >= self.closed_last.get(channel_id, t - gap) + gap):
            # Later than anything fed (or the first of a new session): what waits before it goes first.
            waiting = self.pending.get(channel_id, [])
            earlier = bisect.bisect_left(waiting, t)
            changes = self.core.feed(channel_id, [*waiting[:earlier], t])
            del waiting[:earlier]
            if not waiting:
                self.pending.pop(channel_id, None)
            return FED, changes
        return LATE, []

    def tick(self, now: float) -> list[Change]:
        """Feed what has waited long enough, then close what the clock ends."""
        watermark = now - self.lateness
        changes: list[Change] = []
        for channel_id in [c for c, waiting in self.pending.items() if waiting[0] <= watermark]:
            waiting = self.pending[channel_id]
            ready = bisect.bisect_right(waiting, watermark)
            changes += self.core.feed(channel_id, waiting[:ready])
            if ready == len(waiting):
                del self.pending[channel_id]
            else:
                del waiting[:ready]
        last = {channel_id: run[1] for channel_id, run in self.core.runs.items()}
        closed = self.core.advance(watermark)
        for _, session in closed:
            self.closed_last[session.channel_id] = last[session.channel_id]
        horizon = watermark - 2 * self.core.rules.gap  # no late event can reach these any more
        for channel_id in [c for c, t in self.closed_last.items() if t < horizon]:
            del self.closed_last[channel_id]
        return changes + closed

    def state(self, channel_id: str) -> tuple[list[int] | None, list[int]]:
        """What to keep of a channel across a restart: its open run and what waits."""
        run = self.core.runs.get(channel_id)
        return (list(run) if run else None), list(self.pending.get(channel_id, ()))

    def restore(self, channel_id: str, run: list[int] | None, pending: list[int]) -> None:
        if run:
            self.core.runs[channel_id] = list(run)
        if pending:
            self.pending[channel_id] = sorted(set(pending) | set(self.pending.get(channel_id, ())))

    def deadline(self, channel_id: str) -> float | None:
        """When the channel's state can be finished by anyone (no event can change it
        after then): its last known event + gap + lateness; None: nothing held."""
        run = self.core.runs.get(channel_id)
        waiting = self.pending.get(channel_id)
        last = max(run[1] if run else 0, waiting[-1] if waiting else 0)
        return last + self.core.rules.gap + self.lateness if last else None

    def forget(self, channel_id: str) -> None:
        self.core.runs.pop(channel_id, None)
        self.pending.pop(channel_id, None)
