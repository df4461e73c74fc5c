"""Helix chat endpoints: users, chat messages, settings, colors, announcements, whispers."""
from __future__ import annotations

import re
import time
import uuid

from aiohttp import web

from clue import eventsub_events as es
from clue import stamp
from clue.channels import ChannelState
from clue.commands import Commands, Role, role_of
from clue.helix.base import Call, HelixBase, HelixError, paginate
from clue.ingest import Ingest
from clue.presence import Presence
from common import twitch
from common.irc import Message, serialize_tags
from common.shards import pipeline_call, user_key
from common.tokens import USER
from common.twitch import rfc3339_seconds as rfc3339
from common.wire import Event, Identity, Submission

MAX_USERS = 100
# Helix's announcement colors → the msg-param-color of the USERNOTICE.
ANNOUNCEMENT_COLORS = {"blue": "BLUE", "green": "GREEN", "orange": "ORANGE", "purple": "PURPLE", "primary": "PRIMARY"}
# Helix's named chat colors (snake case) → chatd's /color names.
_SNAKE = re.compile(r"_([a-z])")


class ChatEndpoints:
    def __init__(self, base: HelixBase, ingest: Ingest, commands: Commands, presence: Presence) -> None:
        self.base = base
        self.ingest = ingest
        self.commands = commands
        self.presence = presence

    def routes(self) -> list[web.RouteDef]:
        e = self.base.endpoint
        return [
            web.get("/helix/users", e(self.users)),
            web.post("/helix/chat/messages", e(self.send_message, scopes_all=("user:write:chat",))),
            web.get("/helix/chat/settings", e(self.get_settings)),
            web.patch("/helix/chat/settings",
                      e(self.patch_settings, scopes_all=("moderator:manage:chat_settings",), tokens=(USER,))),
            web.get("/helix/chat/chatters", e(self.chatters, scopes_all=("moderator:read:chatters",), tokens=(USER,))),
            web.get("/helix/chat/color", e(self.get_color)),
            web.put("/helix/chat/color", e(self.put_color, scopes_all=("user:manage:chat_color",), tokens=(USER,))),
            web.post("/helix/chat/announcements",
                     e(self.announce, scopes_all=("moderator:manage:announcements",), tokens=(USER,))),
            web.post("/helix/whispers", e(self.whisper, scopes_all=("user:manage:whispers",), tokens=(USER,))),
        ]

    # ---- users
    async def users(self, call: Call) -> web.Response:
        ids, logins = call.params("id"), [login.lower() for login in call.params("login")]
        if len(ids) + len(logins) > MAX_USERS:
            raise HelixError(400, f"Can request at most {MAX_USERS} users at once")
        if not ids and not logins:
            if call.user_id is None:
                raise HelixError(400, "Missing required parameter \"id\" or \"login\" (an app token has no user)")
            ids = [call.user_id]
        for login in logins:
            found = await self.base.accounts.user_id(login)
            if found is not None:
                ids.append(found)
        data = []
        for user_id in dict.fromkeys(ids):
            profile = await self.base.accounts.user(user_id) if user_id.isdigit() else None
            if profile is None:
                continue
            entry = {
                "id": user_id, "login": profile["login"], "display_name": profile.get("display_name") or
                profile["login"], "type": "", "broadcaster_type": "", "description": "", "profile_image_url": "",
                "offline_image_url": "", "view_count": 0,
                "created_at": rfc3339(float(profile.get("created_at", "0"))),
            }
            if user_id == call.user_id and call.grant.has("user:read:email"):
                entry["email"] = f"{profile['login']}@chatd.invalid"
            data.append(entry)
        return call.json({"data": data})

    # ---- chat messages
    async def send_message(self, call: Call) -> web.Response:
        body = await call.body()
        # twurple sends the ids in the query string, Twitch's docs in the body: both work on Twitch.
        broadcaster_id, sender_id, text = (str(body.get(k) or call.param(k, required=False))
                                           for k in ("broadcaster_id", "sender_id", "message"))
        for name, value in (("broadcaster_id", broadcaster_id), ("sender_id", sender_id), ("message", text)):
            if not value:
                raise HelixError(400, f"Missing required parameter \"{name}\"")
        identity = await self._sender(call, sender_id)
        state = await self.base.channel(broadcaster_id)
        if call.grant.identity is None:
            await self.base.app_acts_for(call, sender_id, ("user:write:chat",), broadcaster_id,
                                         role_of(identity.login, state) >= Role.MODERATOR)
        if twitch.is_command(text) and not twitch.is_action(text):
            return call.json({"data": [{"message_id": "", "is_sent": False, "drop_reason": {
                "code": "msg_rejected", "message": "Chat commands are not sent as messages; use their Helix endpoints."
            }}]})
        client_tags = {}
        if body.get("reply_parent_message_id"):
            client_tags["reply-parent-msg-id"] = str(body["reply_parent_message_id"])
        submission = Submission(id=str(uuid.uuid4()), channel=state.name, text=text, identity=identity,
                                client_tags=client_tags)
        [outcome] = await self.ingest.run([submission])
        if outcome.ok:
            return call.json({"data": [{"message_id": submission.id, "is_sent": True}]})
        return call.json({"data": [{"message_id": "", "is_sent": False,
                                    "drop_reason": {"code": outcome.msg_id, "message": outcome.text}}]})

    async def _sender(self, call: Call, sender_id: str) -> Identity:
        """Who sends: the user token's own user, or — with an app token — a user known to chatd."""
        if call.grant.identity is not None:
            call.require_user(sender_id, "sender_id")
            return call.grant.identity
        profile = await self.base.user(sender_id)
        return Identity(login=profile["login"], user_id=sender_id,
                        display_name=profile.get("display_name") or profile["login"])

    # ---- settings
    async def get_settings(self, call: Call) -> web.Response:
        state = await self.base.channel(call.param("broadcaster_id"))
        moderator_id = call.param("moderator_id", required=False)
        return call.json({"data": [settings_view(state.room_id, state.settings, moderator_id)]})

    async def patch_settings(self, call: Call) -> web.Response:
        state, _, moderator_id = await self.moderated_channel(call)
        changes = settings_changes(await call.body(), state.settings)
        if changes:
            event = await self.commands.change_settings(state, changes)
            await self.ingest.exchanges.publish(event)
        return call.json({"data": [settings_view(state.room_id, state.settings | changes, moderator_id)]})

    async def moderated_channel(self, call: Call) -> tuple[ChannelState, Identity, str]:
        """The channel `broadcaster_id` names, for the token's user as `moderator_id`:
        a 403 unless that user is its broadcaster or one of its moderators."""
        moderator_id = call.param("moderator_id")
        call.require_user(moderator_id, "moderator_id")
        state = await self.base.channel(call.param("broadcaster_id"))
        identity = call.grant.identity
        assert identity is not None
        if role_of(identity.login, state) < Role.MODERATOR:
            raise HelixError(403, "The user in moderator_id is not one of the broadcaster's moderators")
        return state, identity, moderator_id

    # ---- chatters
    async def chatters(self, call: Call) -> web.Response:
        """Who is in the channel (logged-in users, as clue.presence knows them), by login."""
        state, _, _ = await self.moderated_channel(call)
        members = await self.presence.members(state.name)
        page, pagination = paginate(members, call, most=1000, default=100)
        names = await self.base.accounts.display_names([user_id for _, user_id in page])
        data = [{"user_id": user_id, "user_login": login, "user_name": names.get(user_id) or login}
                for login, user_id in page]
        return call.json({"data": data, "pagination": pagination, "total": len(members)})

    # ---- colors
    async def get_color(self, call: Call) -> web.Response:
        ids = call.params("user_id")
        if not ids:
            raise HelixError(400, "Missing required parameter \"user_id\"")
        if len(ids) > MAX_USERS:
            raise HelixError(400, f"Can request at most {MAX_USERS} users at once")
        data = []
        for user_id in dict.fromkeys(ids):
            profile = await self.base.accounts.user(user_id) if user_id.isdigit() else None
            if profile is None:
                continue
            key = user_key(user_id, "color")
            [color] = await pipeline_call(self.base.shards.for_key(key), "color", [("GET", key)])
            data.append({"user_id": user_id, "user_login": profile["login"],
                         "user_name": profile.get("display_name") or profile["login"],
                         "color": color.decode() if color else ""})
        return call.json({"data": data})

    async def put_color(self, call: Call) -> web.Response:
        call.require_user(call.param("user_id"), "user_id")
        color = call.param("color")
        named = _SNAKE.sub(lambda match: match.group(1), color.lower())  # blue_violet → blueviolet
        wanted = named if named in twitch.NAMED_COLORS else color
        identity = call.grant.identity
        assert identity is not None
        state = await self.base.channels.get("#" + identity.login)
        outcome = await self.commands.run(identity, state, f"/color {wanted}")
        if not outcome.ok:
            raise HelixError(400, "The named color is not valid: use a hex color like #9146FF or a Twitch color name")
        return call.empty()

    # ---- announcements
    async def announce(self, call: Call) -> web.Response:
        state, identity, _ = await self.moderated_channel(call)
        body = await call.body()
        text = str(body.get("message", ""))
        color = str(body.get("color", "primary")).lower()
        if not text or len(text) > twitch.MAX_MESSAGE_CHARS or any(char in text for char in "\r\n\0"):
            raise HelixError(400, "The message must be 1 to 500 characters on one line")
        if color not in ANNOUNCEMENT_COLORS:
            raise HelixError(400, f"The color must be one of {', '.join(ANNOUNCEMENT_COLORS)}")
        await self.ingest.exchanges.publish(announcement(self.commands.server, state, identity, text,
                                                         ANNOUNCEMENT_COLORS[color], self.ingest.settings.emotes))
        return call.empty()

    # ---- whispers
    async def whisper(self, call: Call) -> web.Response:
        call.require_user(call.param("from_user_id"), "from_user_id")
        to = await self.base.user(call.param("to_user_id"))
        text = str((await call.body()).get("message", ""))
        if not text or any(char in text for char in "\r\n\0"):
            raise HelixError(400, "The message is empty or not on one line")
        identity = call.grant.identity
        assert identity is not None
        state = await self.base.channels.get("#" + identity.login)
        outcome = await self.ingest.run_command(identity, state, f"/w {to['login']} {text}", str(uuid.uuid4()))
        if outcome.msg_id in ("whisper_limit_per_sec", "whisper_limit_per_min", "msg_ratelimit"):
            raise HelixError(429, outcome.text)
        if not outcome.ok:
            raise HelixError(400, outcome.text or "The whisper could not be sent")
        return call.empty()


def settings_view(broadcaster_id: str, settings: dict[str, int], moderator_id: str) -> dict:
    """chatd's channel settings as Helix shows them."""
    view = {
        "broadcaster_id": broadcaster_id,
        "slow_mode": settings["slow"] > 0,
        "slow_mode_wait_time": settings["slow"] or None,
        "follower_mode": settings["followers_only"] >= 0,
        "follower_mode_duration": settings["followers_only"] if settings["followers_only"] >= 0 else None,
        "subscriber_mode": bool(settings["subs_only"]),
        "emote_mode": bool(settings["emote_only"]),
        "unique_chat_mode": bool(settings["r9k"]),
    }
    if moderator_id:
        view |= {"moderator_id": moderator_id, "non_moderator_chat_delay": False,
                 "non_moderator_chat_delay_duration": None}
    return view


def settings_changes(body: dict, current: dict[str, int]) -> dict[str, int]:
    """A PATCH body → the chatd settings it changes (400 for what chatd cannot do)."""
    changes: dict[str, int] = {}

    def flag(name: str) -> bool | None:
        value = body.get(name)
        if value is not None and not isinstance(value, bool):
            raise HelixError(400, f"\"{name}\" must be true or false")
        return value

    for field, setting in (("emote_mode", "emote_only"), ("subscriber_mode", "subs_only"),
                           ("unique_chat_mode", "r9k")):
        value = flag(field)
        if value is not None:
            changes[setting] = int(value)
    def number(name: str, low: int, high: int, default: int) -> int:
        value = body.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise HelixError(400, f"\"{name}\" must be a whole number from {low} through {high}")
        return value

    # The durations are checked even when their mode is not being switched: a wrong type is a 400.
    wait = number("slow_mode_wait_time", 3, 120, 30)
    minutes = number("follower_mode_duration", 0, 129600, 0)
    slow = flag("slow_mode")
    if slow is not None:
        changes["slow"] = wait if slow else 0
    follower = flag("follower_mode")
    if follower is not None:
        changes["followers_only"] = minutes if follower else -1
    if flag("non_moderator_chat_delay"):
        raise HelixError(400, "chatd has no non-moderator chat delay")
    return {name: value for name, value in changes.items() if current.get(name) != value}


def announcement(server: str, state: ChannelState, identity: Identity, text: str, color: str,
                 emotes: dict[str, str]) -> Event:
    """USERNOTICE msg-id=announcement, and the channel.chat.notification it also is."""
    message_id = str(uuid.uuid4())
    sent_ms = int(time.time() * 1000)
    user_tags = stamp.user_state_tags(identity, state)
    tags = {
        "badge-info": "", "badges": user_tags["badges"], "color": identity.color,
        "display-name": identity.display_name, "emotes": "", "flags": "", "id": message_id,
        "login": identity.login, "mod": user_tags["mod"], "msg-id": "announcement", "msg-param-color": color,
        "room-id": state.room_id, "subscriber": user_tags["subscriber"], "system-msg": "",
        "tmi-sent-ts": str(sent_ms), "user-id": identity.user_id, "user-type": user_tags["user-type"],
    }
    line = Message(source=server, command="USERNOTICE", params=[state.name, text])
    chatter = (identity.user_id, identity.login, identity.display_name)
    notify = es.notify("channel.chat.notification", es.chat_notification(
        state.broadcaster, chatter, "announcement", system_message="", message_id=message_id, text=text,
        emotes=emotes, color=identity.color, badges=tags["badges"], detail={"color": color}))
    return Event(channel=state.name, command="USERNOTICE", line=line.serialize_without_tags(trailing=True),
                 tags=serialize_tags(tags), id=message_id, login=identity.login, user_id=identity.user_id, text=text,
                 sent_ms=sent_ms, notify=[notify])
