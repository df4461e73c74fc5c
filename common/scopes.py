"""Twitch's OAuth scopes, as a bit set inside chatd's tokens.

The order is part of the token format: append new scopes, never reorder or remove.
"""
from __future__ import annotations

from collections.abc import Iterable

SCOPES: tuple[str, ...] = (
    "chat:read", "chat:edit", "whispers:read", "whispers:edit",
    "user:read:chat", "user:write:chat", "user:bot", "channel:bot",
    "user:read:whispers", "user:manage:whispers", "user:manage:chat_color", "user:read:email",
    "channel:moderate", "moderation:read", "moderator:read:chatters", "moderator:manage:chat_settings",
    "moderator:manage:announcements", "moderator:manage:banned_users", "moderator:manage:chat_messages",
    "channel:manage:moderators", "channel:read:vips", "channel:manage:vips", "channel:read:subscriptions",
    "bits:read", "moderator:read:chat_settings", "moderator:read:banned_users",
    "moderator:read:moderators", "moderator:read:vips", "moderator:read:chat_messages",
    "channel:read:redemptions", "channel:manage:broadcast", "moderator:read:followers",
)
_BITS = {scope: 1 << index for index, scope in enumerate(SCOPES)}
ALL = (1 << len(SCOPES)) - 1


class UnknownScope(ValueError):
    """A scope chatd does not know (a typo, or one Twitch has and chatd does not grant)."""


def to_bits(scopes: Iterable[str]) -> int:
    bits = 0
    for scope in scopes:
        if scope not in _BITS:
            raise UnknownScope(f"unknown scope: {scope!r}")
        bits |= _BITS[scope]
    return bits


def to_names(bits: int) -> list[str]:
    return [scope for scope, bit in _BITS.items() if bits & bit]


def parse(text: str) -> int:
    """Scopes as OAuth sends them: separated by spaces (or `+`, or commas on the CLI)."""
    return to_bits(item for item in text.replace("+", " ").replace(",", " ").split() if item)
