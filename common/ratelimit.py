"""A sliding-window limit kept in memory: at most `limit` events per `window` seconds."""
from __future__ import annotations

import bisect


class WindowLimit:
    # A list, not a deque: an empty deque costs about 600 bytes, and every connection keeps one of these.
    __slots__ = ("_times", "limit", "window")

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._times: list[float] = []  # in order: the clock never goes back

    def allow(self, now: float) -> bool:
        """Count an event at `now` if the window has room for it."""
        times = self._times
        if times and times[0] <= now - self.window:
            del times[:bisect.bisect_right(times, now - self.window)]
        if len(times) >= self.limit:
            return False
        times.append(now)
        return True
