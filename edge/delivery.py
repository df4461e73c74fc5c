"""Fan-out of delivered events to this edge's connections.

Each event is encoded once per form — clue formatted it once, so the forms are
`line` and `@tags line`, joined without re-escaping anything — each channel's
events are joined into one payload per capability variant, and every
connection gets one write per channel per batch. The connection that sent a
message is skipped for that message only.
"""
from __future__ import annotations

from collections import defaultdict

from common.wire import Event
from edge.hub import Hub
from edge.session import COMMANDS, MEMBERSHIP, TAGS

# Twitch sends these only to connections that asked for twitch.tv/commands …
COMMANDS_ONLY = frozenset(
    {"CLEARCHAT", "CLEARMSG", "ROOMSTATE", "USERNOTICE", "USERSTATE", "NOTICE", "HOSTTARGET", "WHISPER"}
)
# … and other users' JOIN/PART only to those with twitch.tv/membership.
MEMBERSHIP_ONLY = frozenset({"JOIN", "PART"})


class Encoded:
    __slots__ = ("needs", "origin", "plain", "tagged")

    def __init__(self, event: Event) -> None:
        self.plain = (event.line + "\r\n").encode()
        self.tagged = ("@" + event.tags + " " + event.line + "\r\n").encode() if event.tags else self.plain
        command = event.command
        self.needs = COMMANDS if command in COMMANDS_ONLY else MEMBERSHIP if command in MEMBERSHIP_ONLY else 0
        self.origin = event.origin


def _payload(messages: list[Encoded], variant: int, skip_origin: str | None = None) -> tuple[bytes, int]:
    parts = [
        message.tagged if variant & TAGS else message.plain
        for message in messages
        if (message.needs & variant) == message.needs and (skip_origin is None or message.origin != skip_origin)
    ]
    return b"".join(parts), len(parts)


def deliver(hub: Hub, edge_id: str, events: list[Event]) -> int:
    """Write events, already in order, to local subscribers; returns deliveries."""
    by_channel: defaultdict[str, list[Event]] = defaultdict(list)
    for event in events:
        if event.line:  # events with no IRC line are for EventSub (or control) alone
            by_channel[event.channel].append(event)

    delivered = 0
    origin_prefix = edge_id + "/"
    for channel, channel_events in by_channel.items():
        members = hub.members(channel)
        if not members:
            continue
        messages = [Encoded(event) for event in channel_events]
        # Connections on this edge that sent one of these messages.
        senders = {
            int(message.origin[len(origin_prefix):])
            for message in messages
            if message.origin and message.origin.startswith(origin_prefix)
        }
        by_variant: dict[int, tuple[bytes, int]] = {}
        for conn in members:
            variant = conn.session.variant
            if senders and conn.conn_id in senders:
                payload, count = _payload(messages, variant, skip_origin=origin_prefix + str(conn.conn_id))
            else:
                cached = by_variant.get(variant)
                if cached is None:
                    cached = by_variant[variant] = _payload(messages, variant)
                payload, count = cached
            if count:
                conn.write(payload)
                delivered += count
    return delivered
