"""Which logged-in users this edge holds in which channel, and what changed since
the last tick (clue.presence keeps the cluster's view). Pure bookkeeping: the
service feeds it joins and leaves and sends `take()` once per tick.

A user with several connections in a channel is present once; only its first
join and last leave are changes, and a leave and join within one tick cancel out.
"""
from __future__ import annotations

from common.wire import Identity, PresenceChange


class PresenceTracker:
    def __init__(self) -> None:
        self._connections: dict[tuple[str, str], int] = {}  # (channel, login) → connections here
        self._user_ids: dict[tuple[str, str], str] = {}
        self._pending: dict[tuple[str, str], bool] = {}  # (channel, login) → present, since the last take

    def joined(self, channel: str, identity: Identity) -> None:
        key = (channel, identity.login)
        count = self._connections.get(key, 0)
        self._connections[key] = count + 1
        if count == 0:
            self._user_ids[key] = identity.user_id
            self._change(key, True)

    def left(self, channel: str, login: str) -> None:
        key = (channel, login)
        count = self._connections.get(key, 0)
        if count > 1:
            self._connections[key] = count - 1
        elif count == 1:
            del self._connections[key]
            self._change(key, False)

    def _change(self, key: tuple[str, str], present: bool) -> None:
        if self._pending.get(key) is (not present):
            del self._pending[key]  # the opposite change has not been sent yet: nothing happened
        else:
            self._pending[key] = present

    def take(self) -> list[PresenceChange]:
        """The changes since the last take (forgotten here: on failure, `give_back`)."""
        changes = [self._as_change(key, present) for key, present in self._pending.items()]
        self._pending = {}
        for change in changes:
            if not change.present:
                self._user_ids.pop((change.channel, change.login), None)
        return changes

    def give_back(self, changes: list[PresenceChange]) -> None:
        """Changes that could not be sent: they go out with the next tick's, unless overtaken."""
        for change in changes:
            key = (change.channel, change.login)
            if key not in self._pending:
                self._pending[key] = change.present
                if change.present or key not in self._connections:
                    self._user_ids.setdefault(key, change.user_id)

    def leave_all(self) -> None:
        """This edge is going away: everyone it holds leaves."""
        for key in list(self._connections):
            del self._connections[key]
            self._change(key, False)

    def members(self) -> list[PresenceChange]:
        """Everyone present here now (to re-assert it)."""
        return [self._as_change(key, True) for key in self._connections]

    def _as_change(self, key: tuple[str, str], present: bool) -> PresenceChange:
        return PresenceChange(channel=key[0], login=key[1], user_id=self._user_ids.get(key, ""), present=present)

    def __len__(self) -> int:
        return len(self._connections)
