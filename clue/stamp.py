"""Twitch's tags for accepted messages and for USERSTATE / ROOMSTATE."""
from __future__ import annotations

from clue.channels import ChannelState
from common.tokens import Identity


def badges(identity: Identity, channel: ChannelState) -> str:
    found = []
    if identity.login == channel.name.lstrip("#"):
        found.append("broadcaster/1")
    elif identity.login in channel.mods:
        found.append("moderator/1")
    elif identity.login in channel.vips:
        found.append("vip/1")
    if identity.subscriber:
        found.append("subscriber/0")
    return ",".join(found)


def is_moderator(identity: Identity, channel: ChannelState) -> bool:
    """Twitch's `mod` tag: set for moderators (not for the broadcaster)."""
    return identity.login in channel.mods


def user_type(identity: Identity, channel: ChannelState) -> str:
    return "mod" if is_moderator(identity, channel) else ""


def user_state_tags(
    identity: Identity, channel: ChannelState, message_id: str | None = None, color: str = ""
) -> dict[str, str]:
    tags = {
        "badge-info": "",
        "badges": badges(identity, channel),
        "color": color or identity.color,
        "display-name": identity.display_name,
        "emote-sets": "0",
    }
    if message_id:
        tags["id"] = message_id
    tags["mod"] = "1" if is_moderator(identity, channel) else "0"
    tags["subscriber"] = "1" if identity.subscriber else "0"
    tags["user-type"] = user_type(identity, channel)
    return tags


def privmsg_tags(
    identity: Identity,
    channel: ChannelState,
    *,
    message_id: str,
    sent_ms: int,
    first_msg: bool,
    client_tags: dict[str, str],
    color: str = "",
    emotes: str = "",
) -> dict[str, str]:
    """The tag set of a relayed PRIVMSG, in the order Twitch sends it."""
    tags = {"badge-info": "", "badges": badges(identity, channel)}
    if "client-nonce" in client_tags:
        tags["client-nonce"] = client_tags["client-nonce"]
    tags.update(
        {
            "color": color or identity.color,
            "display-name": identity.display_name,
            "emotes": emotes,
            "first-msg": "1" if first_msg else "0",
            "flags": "",
            "id": message_id,
            "mod": "1" if is_moderator(identity, channel) else "0",
        }
    )
    if "reply-parent-msg-id" in client_tags:
        tags["reply-parent-msg-id"] = client_tags["reply-parent-msg-id"]
    tags.update(
        {
            "returning-chatter": "0",
            "room-id": channel.room_id,
            "subscriber": "1" if identity.subscriber else "0",
            "tmi-sent-ts": str(sent_ms),
            "turbo": "0",
            "user-id": identity.user_id,
            "user-type": user_type(identity, channel),
        }
    )
    return tags
