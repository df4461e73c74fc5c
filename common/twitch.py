"""Twitch's dialect: names, NOTICE texts and the fixed lines real clients expect."""
from __future__ import annotations

import re

CAPABILITIES = ("twitch.tv/tags", "twitch.tv/commands", "twitch.tv/membership")

CHANNEL_RE = re.compile(r"^#[a-z0-9_]{1,25}$")
ANONYMOUS_RE = re.compile(r"^justinfan\d+$")

MAX_MESSAGE_CHARS = 500

# msg-id → NOTICE text; `{channel}` and `{seconds}` are filled in.
NOTICE_TEXTS: dict[str, str] = {
    "msg_banned": "You are permanently banned from talking in {channel}.",
    "msg_timedout": "You are timed out for {seconds} more seconds.",
    "msg_ratelimit": "Your message was not sent because you are sending messages too quickly.",
    "msg_duplicate": (
        "Your message was not sent because it is identical to the previous one you sent, "
        "less than 30 seconds ago."
    ),
    "msg_slowmode": (
        "This room is in slow mode and you are sending messages too quickly. "
        "You will be able to talk again in {seconds} seconds."
    ),
    "msg_emoteonly": "This room is in emote-only mode.",
    "msg_r9k": "The message you sent was not unique. This room is in unique-chat mode.",
    "msg_subsonly": "This room is in subscribers-only mode.",
    "msg_too_long": "Your message was not sent because it is longer than 500 characters.",
    "msg_channel_suspended": "This channel does not exist or has been suspended.",
    "msg_login_required": "You must log in with a token to send messages.",
    "msg_service_unavailable": "Your message was not sent because chat is unavailable. Try again.",
    "msg_join_failed": "Could not join {channel} right now. Try again.",
}


def notice_text(msg_id: str, channel: str = "", seconds: int | str = "") -> str:
    template = NOTICE_TEXTS.get(msg_id, "Your message was not sent.")
    return template.format(channel=channel.lstrip("#"), seconds=seconds)


def user_source(login: str) -> str:
    return f"{login}!{login}@{login}.tmi.twitch.tv"


def normalize_channel(name: str) -> str:
    """Twitch channel names are case-insensitive; clients may send `#Name`."""
    return name.strip().lower()


def is_valid_channel(name: str) -> bool:
    return bool(CHANNEL_RE.match(name))


def is_anonymous_nick(nick: str) -> bool:
    return bool(ANONYMOUS_RE.match(nick))
