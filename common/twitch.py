"""Twitch's dialect: names, NOTICE texts and the fixed lines real clients expect."""
from __future__ import annotations

import datetime
import math
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
    # moderation commands
    "no_permission": "You don't have permission to perform that action.",
    "unrecognized_cmd": "Unrecognized command: /{command}",
    "invalid_user": "Invalid username: {user}",
    "ban_success": "{user} is now banned from this channel.",
    "already_banned": "{user} is already banned in this channel.",
    "bad_ban_self": "You cannot ban yourself.",
    "bad_ban_broadcaster": "You cannot ban the broadcaster.",
    "bad_ban_mod": "You cannot ban moderator {user} unless you are the owner of this channel.",
    "usage_ban": 'Usage: "/ban <username> [reason]" - Permanently prevent a user from chatting.',
    "unban_success": "{user} is no longer banned from this channel.",
    "bad_unban_no_ban": "{user} is not banned from this channel.",
    "usage_unban": 'Usage: "/unban <username>" - Removes a ban on a user.',
    "timeout_success": "{user} has been timed out for {seconds} seconds.",
    "bad_timeout_self": "You cannot timeout yourself.",
    "bad_timeout_broadcaster": "You cannot timeout the broadcaster.",
    "bad_timeout_mod": "You cannot timeout moderator {user} unless you are the owner of this channel.",
    "bad_timeout_duration": "You cannot time somebody out for more than two weeks.",
    "usage_timeout": 'Usage: "/timeout <username> [duration][time unit] [reason]" - Temporarily prevent a user from chatting.',
    "untimeout_success": "{user} is no longer timed out in this channel.",
    "untimeout_banned": '{user} is permanently banned. Use "/unban" to remove a ban.',
    "untimeout_no_timeout": "{user} is not timed out in this channel.",
    "usage_untimeout": 'Usage: "/untimeout <username>" - Removes a timeout on a user.',
    "clear_success": "Chat was cleared by a moderator.",
    "delete_message_success": "The message from {user} is now deleted.",
    "bad_delete_message_error": "The message could not be found or is too old to delete.",
    "bad_delete_message_broadcaster": "You cannot delete the broadcaster's messages.",
    "bad_delete_message_mod": "You cannot delete messages from another moderator {user}.",
    "usage_delete": 'Usage: "/delete <msg id>" - Deletes the specified message.',
    "slow_on": "This room is now in slow mode. You may send messages every {seconds} seconds.",
    "slow_off": "This room is no longer in slow mode.",
    "usage_slow_on": 'Usage: "/slow [duration]" - Enables slow mode. Duration is 1 to 120 seconds.',
    "emote_only_on": "This room is now in emote-only mode.",
    "emote_only_off": "This room is no longer in emote-only mode.",
    "already_emote_only_on": "This room is already in emote-only mode.",
    "already_emote_only_off": "This room is not in emote-only mode.",
    "r9k_on": "This room is now in unique-chat mode.",
    "r9k_off": "This room is no longer in unique-chat mode.",
    "already_r9k_on": "This room is already in unique-chat mode.",
    "already_r9k_off": "This room is not in unique-chat mode.",
    "subs_on": "This room is now in subscribers-only mode.",
    "subs_off": "This room is no longer in subscribers-only mode.",
    "already_subs_on": "This room is already in subscribers-only mode.",
    "already_subs_off": "This room is not in subscribers-only mode.",
    "mod_success": "You have added {user} as a moderator of this channel.",
    "bad_mod_mod": "{user} is already a moderator of this channel.",
    "bad_mod_banned": "{user} is banned in this channel.",
    "usage_mod": 'Usage: "/mod <username>" - Grant moderator status to a user.',
    "unmod_success": "You have removed {user} as a moderator of this channel.",
    "bad_unmod_mod": "{user} is not a moderator of this channel.",
    "usage_unmod": 'Usage: "/unmod <username>" - Revoke moderator status from a user.',
    "vip_success": "You have added {user} as a VIP of this channel.",
    "bad_vip_grantee_already_vip": "{user} is already a VIP of this channel.",
    "bad_vip_grantee_banned": "{user} is banned in this channel.",
    "usage_vip": 'Usage: "/vip <username>" - Grant VIP status to a user.',
    "unvip_success": "You have removed {user} as a VIP of this channel.",
    "bad_unvip_grantee_not_vip": "{user} is not a VIP of this channel.",
    "usage_unvip": 'Usage: "/unvip <username>" - Revoke VIP status from a user.',
    "room_mods": "The moderators of this channel are: {list}",
    "no_mods": "There are no moderators of this channel.",
    "vips_success": "The VIPs of this channel are: {list}.",
    "no_vips": "This channel does not have any VIPs.",
    "color_changed": "Your color has been changed.",
    "usage_color": 'Usage: "/color <color>" - Change your username color. Color must be in hex (#000000) or one of '
                   "the following: Blue, BlueViolet, CadetBlue, Chocolate, Coral, DodgerBlue, Firebrick, GoldenRod, "
                   "Green, HotPink, OrangeRed, Red, SeaGreen, SpringGreen, YellowGreen.",
    "usage_whisper": 'Usage: "/w <username> <message>" - Whisper a message to another user.',
    "whisper_invalid_self": "You cannot whisper to yourself.",
    "whisper_invalid_login": "No user matching that username: {user}",
    "msg_join_ratelimit": "You are joining channels too quickly. Try again in a few seconds.",
    "whisper_limit_per_sec": "You are sending whispers too fast. Try again in a second.",
    "whisper_limit_per_min": "You are sending whispers too fast. Try again in a minute.",
}


def notice_text(msg_id: str, channel: str = "", **fill: object) -> str:
    template = NOTICE_TEXTS.get(msg_id, "Your message was not sent.")
    values = {"channel": channel.lstrip("#"), "seconds": "", "user": "", "list": "", "command": ""}
    values.update({key: str(value) for key, value in fill.items()})
    return template.format(**values)


# Named colors `/color` accepts, as Twitch lists them.
NAMED_COLORS: dict[str, str] = {
    "blue": "#0000FF", "blueviolet": "#8A2BE2", "cadetblue": "#5F9EA0", "chocolate": "#D2691E",
    "coral": "#FF7F50", "dodgerblue": "#1E90FF", "firebrick": "#B22222", "goldenrod": "#DAA520",
    "green": "#008000", "hotpink": "#FF69B4", "orangered": "#FF4500", "red": "#FF0000",
    "seagreen": "#2E8B57", "springgreen": "#00FF7F", "yellowgreen": "#9ACD32",
}


def user_source(login: str) -> str:
    return f"{login}!{login}@{login}.tmi.twitch.tv"


def normalize_channel(name: str) -> str:
    """Twitch channel names are case-insensitive; clients may send `#Name`."""
    return name.strip().lower()


def is_valid_channel(name: str) -> bool:
    return bool(CHANNEL_RE.match(name))


def is_anonymous_nick(nick: str) -> bool:
    return bool(ANONYMOUS_RE.match(nick))


def is_command(text: str) -> bool:
    """`/ban user` or `.ban user`: a chat command rather than chat."""
    return len(text) > 1 and text[0] in "/." and text[1].isalpha()


def is_action(text: str) -> bool:
    """`/me waves`: sent as a command, delivered as chat (a CTCP ACTION)."""
    return is_command(text) and text[1:].split(" ", 1)[0].lower() == "me"


# Whispers to a user travel on this pseudo-channel, which every one of the user's
# connections listens on; `#` never starts it, so it cannot clash with a channel.
WHISPER_PREFIX = "@"


def whisper_inbox(login: str) -> str:
    return f"{WHISPER_PREFIX}{login}"


def rfc3339(epoch: float) -> str:
    """UTC, nanosecond digits, like Twitch's `2020-07-15T18:15:11.171067130Z`."""
    seconds = math.floor(epoch)
    nanos = round((epoch - seconds) * 1_000_000_000)
    if nanos == 1_000_000_000:
        seconds, nanos = seconds + 1, 0
    stamp = datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{nanos:09d}Z"


def rfc3339_seconds(epoch: float) -> str:
    """UTC to the second, as Helix writes `created_at`: `2021-09-28T18:22:31Z`."""
    return datetime.datetime.fromtimestamp(math.floor(epoch), datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
