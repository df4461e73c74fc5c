"""The edge's local hub: which of this edge's connections sit in which channel."""
from __future__ import annotations

from typing import Protocol


class Subscriber(Protocol):
    conn_id: int


class Hub:
    def __init__(self) -> None:
        self._channels: dict[str, set] = {}

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
        return True

    def members(self, channel: str) -> set | None:
        return self._channels.get(channel)

    def __len__(self) -> int:
        return len(self._channels)
