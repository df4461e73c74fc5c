"""The edge's local hub: which of this edge's connections sit in which channel."""
from __future__ import annotations

from typing import Protocol


class Subscriber(Protocol):
    conn_id: int


class Hub:
    def __init__(self) -> None:
        self._channels: dict[str, set] = {}
        # Highest sequence number delivered per channel, with the exchange boot
        # it belongs to: a jump means messages were lost and is counted.
        self.last_seq: dict[str, tuple[str, int]] = {}

    def add(self, conn: Subscriber, channel: str) -> bool:
        """Add a connection; True when it is the channel's first on this edge."""
        members = self._channels.get(channel)
        if members is None:
            self._channels[channel] = {conn}
            return True
        members.add(conn)
        return False

    def remove(self, conn: Subscriber, channel: str) -> bool:
        """Remove a connection; True when the channel has no one left here."""
        members = self._channels.get(channel)
        if members is None:
            return False
        members.discard(conn)
        if members:
            return False
        del self._channels[channel]
        self.last_seq.pop(channel, None)
        return True

    def members(self, channel: str) -> set | None:
        return self._channels.get(channel)

    def channels(self) -> list[str]:
        return list(self._channels)

    def __len__(self) -> int:
        return len(self._channels)

    def observe_seq(self, channel: str, boot: str, seq: int) -> int:
        """Record a delivered sequence number; returns how many were skipped."""
        previous = self.last_seq.get(channel)
        self.last_seq[channel] = (boot, seq)
        if previous is None or previous[0] != boot or seq <= previous[1]:
            return 0
        return seq - previous[1] - 1
