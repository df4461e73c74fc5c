"""Fan-out of delivered events to this edge's connections.

Each event is encoded once per form — clue formatted it once, so the forms are
`line` and `@tags line`, joined without re-escaping anything — each channel's
events are joined into one payload per capability variant, and every
connection gets one write per channel per batch. The connection that sent a
message is skipped for that message only.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from common.wire import Event
from edge import ircv3
from edge.hub import Hub
from edge.session import COMMANDS, MEMBERSHIP, TAGS

# Twitch sends these only to connections that asked for twitch.tv/commands …
COMMANDS_ONLY = frozenset(
    {"CLEARCHAT", "CLEARMSG", "ROOMSTATE", "USERNOTICE", "USERSTATE", "NOTICE", "HOSTTARGET", "WHISPER"}
)
# … and other users' JOIN/PART only to those with twitch.tv/membership.
MEMBERSHIP_ONLY = frozenset({"JOIN", "PART"})


class Encoded:
    __slots__ = ("_shaped", "event", "logins", "needs", "origin", "plain", "tagged")

    def __init__(self, event: Event) -> None:
        self.event = event
        self.plain = (event.line + "\r\n").encode()
        self.tagged = ("@" + event.tags + " " + event.line + "\r\n").encode() if event.tags else self.plain
        command = event.command
        self.needs = COMMANDS if command in COMMANDS_ONLY else MEMBERSHIP if command in MEMBERSHIP_ONLY else 0
        self.origin = event.origin
        self._shaped: dict[int, bytes] | None = None  # IRCv3 forms, made for the variants that ask
        # JOIN and PART come several to an event (clue.presence); whose they are, to leave
        # out a joiner's own, which its edge sent it at once.
        self.logins = frozenset(line[1:line.index("!")] for line in event.line.split("\r\n")) \
            if self.needs == MEMBERSHIP else frozenset()

    def without(self, login: str) -> bytes:
        """This membership event's lines but `login`'s own."""
        kept = [line for line in self.event.line.split("\r\n") if not line.startswith(f":{login}!")]
        return "".join(line + "\r\n" for line in kept).encode()

    def form(self, variant: int) -> bytes:
        if not variant & ircv3.EXTRA_TAGS:
            return self.tagged if variant & TAGS else self.plain
        shaped = self._shaped if self._shaped is not None else {}
        self._shaped = shaped
        found = shaped.get(variant)
        if found is None:
            event = self.event
            extra = ircv3.extra_tags(variant, event.sent_ms, event.id)
            twitch_tags = bool(variant & (TAGS | ircv3.MESSAGE_TAGS))
            found = shaped[variant] = (ircv3.shape(event.tags, event.line, variant, twitch_tags, extra)
                                       + "\r\n").encode()
        return found


def _payload(messages: list[Encoded], variant: int, skip_origin: str | None = None, login: str | None = None
             ) -> tuple[bytes, int]:
    """What one connection gets; `skip_origin`: its own chat, `login`: its own JOIN or PART, left out."""
    parts = [
        message.without(login) if login is not None and login in message.logins else message.form(variant)
        for message in messages
        if (message.needs & variant) == message.needs and (skip_origin is None or message.origin != skip_origin)
    ]
    return b"".join(parts), len(parts)


def deliver(hub: Hub, edge_id: str, events: list[Event],
            counted: Callable[[str, int], None] | None = None) -> tuple[int, int]:
    """Write events, already in order, to local subscribers; returns (deliveries, writes):
    their ratio is how many messages a write carried (and tells `counted` each channel's deliveries)."""
    by_channel: defaultdict[str, list[Event]] = defaultdict(list)
    for event in events:
        if event.line:  # events with no IRC line are for EventSub (or control) alone
            by_channel[event.channel].append(event)

    delivered = writes = 0
    origin_prefix = edge_id + "/"
    for channel, channel_events in by_channel.items():
        members = hub.members(channel)
        if not members:
            continue
        before = delivered
        messages = [Encoded(event) for event in channel_events]
        # Connections on this edge that sent one of these messages.
        senders = {
            int(message.origin[len(origin_prefix):])
            for message in messages
            if message.origin and message.origin.startswith(origin_prefix)
        }
        # Logins with JOIN or PART lines here, for connections that take membership.
        joiners = frozenset().union(*(message.logins for message in messages))
        by_variant: dict[int, tuple[bytes, int]] = {}
        for conn in members:
            variant = conn.session.variant
            if senders and conn.conn_id in senders and not variant & ircv3.ECHO:
                payload, count = _payload(messages, variant, skip_origin=origin_prefix + str(conn.conn_id))
            elif joiners and variant & MEMBERSHIP and conn.session.nick in joiners:
                payload, count = _payload(messages, variant, login=conn.session.nick)
            else:
                cached = by_variant.get(variant)
                if cached is None:
                    cached = by_variant[variant] = _payload(messages, variant)
                payload, count = cached
            if count:
                conn.write(payload)
                delivered += count
                writes += 1
        if counted is not None:
            counted(channel, delivered - before)
    return delivered, writes
