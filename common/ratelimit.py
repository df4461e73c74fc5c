"""A sliding-window limit kept in memory: at most `limit` events per `window` seconds."""
from __future__ import annotations

from collections import deque


class WindowLimit:
    __slots__ = ("_times", "limit", "window")

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._times: deque[float] = deque()

    def allow(self, now: float) -> bool:
        """Count an event at `now` if the window has room for it."""
        times = self._times
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) >= self.limit:
            return False
        times.append(now)
        return True
