"""The `event` objects of Twitch's EventSub notifications, in Twitch's shape.

Pure: chatd's values in, the dict Twitch would put under `payload.event` out —
every documented field present, Twitch's names and types, null where Twitch
sends null — and `notify()` encodes one once for the wire. Shapes follow the
docs examples kept in tests/fixtures/twitch/eventsub_notification_*.json.

A person is `(user_id, login, display_name)`; Twitch spells the three as
`<role>_user_id`, `<role>_user_login` and `<role>_user_name` (plain `user_id`, …
for the event's user).
"""
from __future__ import annotations

import re
from typing import Any

import msgspec

from common import wire
from common.twitch import rfc3339

Person = tuple[str, str, str]  # (user_id, login, display_name)

# Who an anonymous chat notification (an anonymous gift) comes from. Twitch's
# field table types chatter_user_id/_login/_name as strings, never null, and
# client libraries (pyTwitchAPI, twurple) read them as such; the values are
# chatd's choice: the account Twitch's IRC names for anonymous gifts
# (USERNOTICE login=ananonymousgifter, user-id 274598607).
ANONYMOUS_GIFTER: Person = ("274598607", "ananonymousgifter", "AnAnonymousGifter")

# channel.chat.notification: one key per notice type, null unless it is the one.
NOTICE_TYPES = (
    "sub", "resub", "sub_gift", "community_sub_gift", "gift_paid_upgrade", "prime_paid_upgrade",
    "pay_it_forward", "raid", "unraid", "announcement", "bits_badge_tier", "charity_donation",
)
# The shared-chat variants Twitch's current docs example also carries; chatd has
# no shared chat, so they are always null (present because Twitch sends them).
SHARED_CHAT_NOTICE_KEYS = tuple(f"shared_chat_{kind}" for kind in NOTICE_TYPES)

# Cheermote tiers: a cheermote's tier is the largest of these not above its bits.
CHEER_TIERS = (1, 100, 1000, 5000, 10000)
# A cheer word: a prefix (letters, may hold digits, ends in a letter: `4Head`) and a bit count.
_CHEERMOTE = re.compile(r"([A-Za-z0-9]*[A-Za-z])([1-9][0-9]*)")

# chatd's emote set stands for Twitch's global emotes: emote set "0", owner "0" (chatd's choice;
# a real emote's fragment may carry another set and its owner's id).
GLOBAL_EMOTE_SET = "0"
GLOBAL_EMOTE_OWNER = "0"


# ---- pieces


def person(role: str, who: Person | None) -> dict[str, str | None]:
    """`<role>_user_id`, `<role>_user_login`, `<role>_user_name` (all null for
    nobody); the role "user" is plain `user_id`, `user_login`, `user_name`."""
    prefix = "" if role == "user" else f"{role}_"
    user_id, login, name = who if who is not None else (None, None, None)
    return {f"{prefix}user_id": user_id, f"{prefix}user_login": login, f"{prefix}user_name": name}


def parse_badges(tag: str) -> list[dict[str, str]]:
    """Twitch's IRC `badges` tag (`broadcaster/1,subscriber/0`) as EventSub badges.
    `info` would come from the `badge-info` tag, which chatd always leaves empty."""
    badges = []
    for item in tag.split(","):
        if item:
            set_id, _, version = item.partition("/")
            badges.append({"set_id": set_id, "id": version, "info": ""})
    return badges


def cheer_tier(bits: int) -> int:
    return max(tier for tier in CHEER_TIERS if tier <= bits) if bits >= 1 else CHEER_TIERS[0]


def _fragment(kind: str, text: str, cheermote: dict | None = None, emote: dict | None = None) -> dict[str, Any]:
    return {"type": kind, "text": text, "cheermote": cheermote, "emote": emote, "mention": None}


def fragments(text: str, emotes: dict[str, str], *, cheers: bool = False) -> list[dict[str, Any]]:
    """`message.fragments`: whole words that are emote names become emote
    fragments, with `cheers` words like `Cheer100` become cheermotes, and every
    run in between (spaces included) one text fragment — the texts joined give
    back `text`. Mentions stay text: chatd does not look users up here."""
    parts: list[dict[str, Any]] = []
    plain: list[str] = []

    def flush() -> None:
        if run := "".join(plain):
            parts.append(_fragment("text", run))
        plain.clear()

    def special(fragment: dict[str, Any]) -> None:
        flush()
        parts.append(fragment)

    for index, word in enumerate(text.split(" ")):
        if index:
            plain.append(" ")
        emote_id = emotes.get(word)
        cheer = _CHEERMOTE.fullmatch(word) if cheers and emote_id is None else None
        if emote_id is not None:
            special(_fragment("emote", word, emote={"id": emote_id, "emote_set_id": GLOBAL_EMOTE_SET,
                                                    "owner_id": GLOBAL_EMOTE_OWNER, "format": ["static"]}))
        elif cheer is not None:
            bits = int(cheer.group(2))
            special(_fragment("cheermote", word, cheermote={"prefix": cheer.group(1).lower(), "bits": bits,
                                                            "tier": cheer_tier(bits)}))
        else:
            plain.append(word)
    flush()
    return parts


def _no_source() -> dict[str, None]:
    """Shared chat's `source_*` fields: chatd has no shared chat, so always null."""
    return {"source_broadcaster_user_id": None, "source_broadcaster_user_login": None,
            "source_broadcaster_user_name": None, "source_message_id": None, "source_badges": None}


# ---- channel.chat.*


def chat_message(broadcaster: Person, chatter: Person, message_id: str, text: str, *, emotes: dict[str, str],
                 color: str, badges: str, message_type: str = "text", reply: dict | None = None,
                 bits: int = 0) -> dict:
    """channel.chat.message."""
    return {
        **person("broadcaster", broadcaster),
        **person("chatter", chatter),
        "message_id": message_id,
        "message": {"text": text, "fragments": fragments(text, emotes, cheers=bits > 0)},
        "color": color,
        "badges": parse_badges(badges),
        "message_type": message_type,
        "cheer": {"bits": bits} if bits > 0 else None,
        "reply": reply,
        "channel_points_custom_reward_id": None,
        "channel_points_animation_id": None,
        **_no_source(),
    }


def chat_notification(broadcaster: Person, chatter: Person | None, notice_type: str, *, system_message: str,
                      message_id: str, text: str = "", emotes: dict[str, str] | None = None, color: str = "",
                      badges: str = "", detail: dict | None = None) -> dict:
    """channel.chat.notification. `detail` is Twitch's object for `notice_type`
    (`{"sub_tier": "1000", "is_prime": false, "duration_months": 1}` for sub);
    unraid's is empty. `chatter` None: anonymous (see ANONYMOUS_GIFTER)."""
    if notice_type not in NOTICE_TYPES:
        raise ValueError(f"unknown notice_type {notice_type!r}")
    if detail is None:
        if notice_type != "unraid":
            raise ValueError(f"notice_type {notice_type!r} needs its detail object")
        detail = {}
    return {
        **person("broadcaster", broadcaster),
        **person("chatter", chatter if chatter is not None else ANONYMOUS_GIFTER),
        "chatter_is_anonymous": chatter is None,
        "color": color,
        "badges": parse_badges(badges),
        "system_message": system_message,
        "message_id": message_id,
        "message": {"text": text, "fragments": fragments(text, emotes or {})},
        "notice_type": notice_type,
        **{kind: detail if kind == notice_type else None for kind in NOTICE_TYPES},
        **dict.fromkeys(SHARED_CHAT_NOTICE_KEYS),
        **_no_source(),
    }


def chat_clear(broadcaster: Person) -> dict:
    """channel.chat.clear."""
    return person("broadcaster", broadcaster)


def chat_clear_user_messages(broadcaster: Person, target: Person) -> dict:
    """channel.chat.clear_user_messages."""
    return {**person("broadcaster", broadcaster), **person("target", target)}


def chat_message_delete(broadcaster: Person, target: Person, message_id: str) -> dict:
    """channel.chat.message_delete."""
    return {**person("broadcaster", broadcaster), **person("target", target), "message_id": message_id}


def chat_settings_update(broadcaster: Person, settings: dict[str, int]) -> dict:
    """channel.chat_settings.update from chatd's settings (clue.channels.SETTING_DEFAULTS
    names): slow seconds (0 off), emote_only/subs_only/r9k 0/1, followers_only minutes (-1 off)."""
    slow = settings.get("slow", 0)
    followers = settings.get("followers_only", -1)
    return {
        **person("broadcaster", broadcaster),
        "emote_mode": bool(settings.get("emote_only", 0)),
        "follower_mode": followers >= 0,
        "follower_mode_duration_minutes": followers if followers >= 0 else None,
        "slow_mode": slow > 0,
        "slow_mode_wait_time_seconds": slow if slow > 0 else None,
        "subscriber_mode": bool(settings.get("subs_only", 0)),
        "unique_chat_mode": bool(settings.get("r9k", 0)),
    }


# ---- moderation


def ban(broadcaster: Person, user: Person, moderator: Person, reason: str, banned_at: float,
        ends_at: float | None) -> dict:
    """channel.ban; `ends_at` None: permanent."""
    return {
        **person("user", user),
        **person("broadcaster", broadcaster),
        **person("moderator", moderator),
        "reason": reason,
        "banned_at": rfc3339(banned_at),
        "ends_at": rfc3339(ends_at) if ends_at is not None else None,
        "is_permanent": ends_at is None,
    }


def unban(broadcaster: Person, user: Person, moderator: Person) -> dict:
    """channel.unban."""
    return {**person("user", user), **person("broadcaster", broadcaster), **person("moderator", moderator)}


def moderator_add(broadcaster: Person, user: Person) -> dict:
    """channel.moderator.add."""
    return {**person("user", user), **person("broadcaster", broadcaster)}


def moderator_remove(broadcaster: Person, user: Person) -> dict:
    """channel.moderator.remove."""
    return {**person("user", user), **person("broadcaster", broadcaster)}


# ---- whispers, subs, raids, cheers


def whisper(sender: Person, recipient: Person, whisper_id: str, text: str) -> dict:
    """user.whisper.message."""
    return {**person("from", sender), **person("to", recipient), "whisper_id": whisper_id,
            "whisper": {"text": text}}


def subscribe(broadcaster: Person, user: Person, tier: str, is_gift: bool) -> dict:
    """channel.subscribe; `tier` is "1000", "2000" or "3000"."""
    return {**person("user", user), **person("broadcaster", broadcaster), "tier": tier, "is_gift": is_gift}


def raid(from_broadcaster: Person, to_broadcaster: Person, viewers: int) -> dict:
    """channel.raid."""
    return {**person("from_broadcaster", from_broadcaster), **person("to_broadcaster", to_broadcaster),
            "viewers": viewers}


def cheer(broadcaster: Person, user: Person | None, message: str, bits: int) -> dict:
    """channel.cheer; `user` None: an anonymous cheer (Twitch nulls the user fields)."""
    return {"is_anonymous": user is None, **person("user", user), **person("broadcaster", broadcaster),
            "message": message, "bits": bits}


# ---- onto the wire


def notify(type: str, event: dict) -> wire.Notify:
    """The event encoded once, as it rides an Event to every EventSub session."""
    return wire.Notify(type, msgspec.Raw(wire.encode(event)))
