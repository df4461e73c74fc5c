"""Chat commands — `PRIVMSG #chan :/ban user` — as Twitch runs them.

Each command is an entry in `COMMANDS`: the role it needs and a handler that
changes durable state in Redis and returns an `Outcome`: a NOTICE for the
sender (Twitch's msg-id) and messages for everyone in the channel (CLEARCHAT,
CLEARMSG, ROOMSTATE, NOTICE). The HTTP moderation API runs the same table.
"""
from __future__ import annotations

import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from clue import eventsub_events as es
from clue import limits
from clue.accounts import Accounts
from clue.channels import ChannelCache, ChannelState
from common import twitch, wire
from common.irc import Message, serialize_tags
from common.shards import ShardSet, pipeline_call, user_key
from common.tokens import LOGIN_RE
from common.wire import Event, Identity, LookupReply

# Channel settings (clue.channels) → their ROOMSTATE tags.
SETTING_TAGS = {"slow": "slow", "emote_only": "emote-only", "subs_only": "subs-only", "r9k": "r9k",
                "followers_only": "followers-only"}
MAX_TIMEOUT = 14 * 24 * 3600
DEFAULT_TIMEOUT = 600
DEFAULT_SLOW = 30
SLOW_RANGE = (1, 120)
_DURATION = re.compile(r"^(\d+)([smhdw]?)$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class Role(IntEnum):
    VIEWER = 0
    VIP = 1
    MODERATOR = 2
    BROADCASTER = 3


def role_of(login: str, state: ChannelState) -> Role:
    if login == state.owner:
        return Role.BROADCASTER
    if login in state.mods:
        return Role.MODERATOR
    if login in state.vips:
        return Role.VIP
    return Role.VIEWER


@dataclass
class Outcome:
    """What a command did: `msg_id` (with `fill`) for the sender, or None when the
    broadcasts already tell everyone, the sender included."""

    msg_id: str | None
    fill: dict[str, Any] = field(default_factory=dict)
    ok: bool = True
    broadcasts: list[Event] = field(default_factory=list)

    def answer(self, channel: str) -> wire.Outcome:
        """The result an edge (or the HTTP API) gets back."""
        if not self.msg_id:
            return wire.Outcome(ok=self.ok)
        text = twitch.notice_text(self.msg_id, channel=channel, **self.fill)
        return wire.Outcome(ok=self.ok, msg_id=self.msg_id, text=text)


def refused(msg_id: str, **fill: Any) -> Outcome:
    return Outcome(msg_id, fill, ok=False)


@dataclass
class Context:
    identity: Identity
    state: ChannelState
    role: Role
    args: list[str]

    @property
    def channel(self) -> str:
        return self.state.name

    @property
    def caller(self) -> es.Person:
        return self.identity.user_id, self.identity.login, self.identity.display_name


Handler = Callable[["Commands", Context], Awaitable[Outcome]]


class Commands:
    def __init__(self, shards: ShardSet, channels: ChannelCache, accounts: Accounts, server_name: str,
                 lookup_message: Callable[[str, str], Awaitable[LookupReply | None]]) -> None:
        self.shards = shards
        self.accounts = accounts
        self.channels = channels
        self.server = server_name
        # (channel, message id) → the message's sender, text and time, or None; from the exchange.
        self.lookup_message = lookup_message

    async def run(self, identity: Identity, state: ChannelState, text: str) -> Outcome:
        name, *args = text[1:].split()
        entry = COMMANDS.get(name.lower())
        if entry is None:
            return refused("unrecognized_cmd", command=name)
        needed, handler = entry
        role = role_of(identity.login, state)
        if role < needed:
            return refused("no_permission")
        return await handler(self, Context(identity, state, role, args))

    # ---- shared pieces
    def broadcast(self, state: ChannelState, command: str, tags: dict[str, str], params: list[str]) -> Event:
        message = Message(source=self.server, command=command, params=[state.name, *params])
        line = message.serialize_without_tags(trailing=bool(params))
        return Event(channel=state.name, command=command, line=line, tags=serialize_tags(tags), sent_ms=now_ms())

    async def change_settings(self, state: ChannelState, changes: dict[str, int]) -> Event:
        """Write room modes; the ROOMSTATE (and channel.chat_settings.update) that tells everyone."""
        await self.channels.update_settings(state.name, changes)
        tags = {"room-id": state.room_id} | {SETTING_TAGS[name]: str(value) for name, value in changes.items()}
        event = self.broadcast(state, "ROOMSTATE", tags, [])
        event.notify = [es.notify("channel.chat_settings.update",
                                  es.chat_settings_update(state.broadcaster, state.settings | changes))]
        return event

    def silent(self, state: ChannelState, *notify: wire.Notify) -> Event:
        """An event with no IRC line: only EventSub hears of it (a new moderator, an unban)."""
        return Event(channel=state.name, command="", line="", sent_ms=now_ms(), notify=list(notify))

    async def person(self, user_id: str, login: str) -> es.Person:
        """(user id, login, display name) of a user, as EventSub names people."""
        profile = await self.accounts.user(user_id)
        return user_id, login, (profile or {}).get("display_name") or login

    def room_notice(self, state: ChannelState, msg_id: str, **fill: Any) -> Event:
        text = twitch.notice_text(msg_id, channel=state.name, **fill)
        return self.broadcast(state, "NOTICE", {"msg-id": msg_id}, [text])

    async def user_id(self, login: str) -> str | None:
        """A login's user id as its tokens name it, recorded at every login;
        None for a login that has never logged in: no such user."""
        return await self.accounts.user_id(login)

    async def ban_ttl(self, channel: str, user_id: str) -> int:
        """-2: not banned, -1: banned, >0: timed out for that many more ms."""
        key = user_key(user_id, f"ban:{channel}")
        [ttl] = await pipeline_call(self.shards.for_key(key), "ban_ttl", [("PTTL", key)])
        return int(ttl)

    async def set_ban(self, ctx: Context, user_id: str, seconds: int | None) -> None:
        key = user_key(user_id, f"ban:{ctx.channel}")
        command = ("SET", key, "1") if seconds is None else ("SET", key, "1", "PX", seconds * 1000)
        await pipeline_call(self.shards.for_key(key), "ban", [command])

    async def lift_ban(self, ctx: Context, user_id: str) -> None:
        key = user_key(user_id, f"ban:{ctx.channel}")
        await pipeline_call(self.shards.for_key(key), "unban", [("DEL", key)])

    def clearchat(self, ctx: Context, login: str, user_id: str, seconds: int | None) -> Event:
        tags = {"room-id": ctx.state.room_id, "target-user-id": user_id, "tmi-sent-ts": str(now_ms())}
        if seconds is not None:
            tags = {"ban-duration": str(seconds), **tags}
        return self.broadcast(ctx.state, "CLEARCHAT", tags, [login])


def now_ms() -> int:
    return int(time.time() * 1000)


async def target_user(commands: Commands, ctx: Context, usage: str) -> tuple[str, str] | Outcome:
    """The command's target as (login, user id), or the refusal to answer with."""
    login = target_login(ctx, usage)
    if isinstance(login, Outcome):
        return login
    user_id = await commands.user_id(login)
    if user_id is None:
        return refused("invalid_user", user=login)
    return login, user_id


def target_login(ctx: Context, usage: str) -> str | Outcome:
    if not ctx.args:
        return refused(usage)
    login = ctx.args[0].lstrip("@").lower()
    if not LOGIN_RE.match(login):
        return refused("invalid_user", user=ctx.args[0])
    return login


def parse_duration(text: str) -> int | None:
    match = _DURATION.match(text.lower())
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)] if match else None


# ---- handlers


async def ban(commands: Commands, ctx: Context) -> Outcome:
    return await _ban_or_timeout(commands, ctx, None)


async def timeout(commands: Commands, ctx: Context) -> Outcome:
    seconds = DEFAULT_TIMEOUT
    if len(ctx.args) > 1:
        parsed = parse_duration(ctx.args[1])
        if parsed is None or parsed < 1:
            return refused("usage_timeout")
        if parsed > MAX_TIMEOUT:
            return refused("bad_timeout_duration")
        seconds = parsed
    return await _ban_or_timeout(commands, ctx, seconds)


async def _ban_or_timeout(commands: Commands, ctx: Context, seconds: int | None) -> Outcome:
    kind = "ban" if seconds is None else "timeout"
    login = target_login(ctx, f"usage_{kind}")
    if isinstance(login, Outcome):
        return login
    if login == ctx.identity.login:
        return refused(f"bad_{kind}_self")
    if login == ctx.state.owner:
        return refused(f"bad_{kind}_broadcaster")
    if login in ctx.state.mods and ctx.role < Role.BROADCASTER:
        return refused(f"bad_{kind}_mod", user=login)
    target = await target_user(commands, ctx, f"usage_{kind}")
    if isinstance(target, Outcome):
        return target
    login, user_id = target
    if seconds is None and await commands.ban_ttl(ctx.channel, user_id) == -1:
        return refused("already_banned", user=login)
    await commands.set_ban(ctx, user_id, seconds)
    outcome = Outcome(f"{kind}_success", {"user": login, "seconds": seconds or ""})
    event = commands.clearchat(ctx, login, user_id, seconds)
    event.target = user_id
    target = await commands.person(user_id, login)
    reason = " ".join(ctx.args[1 if seconds is None else 2:])
    now = time.time()
    event.notify = [
        es.notify("channel.ban", es.ban(ctx.state.broadcaster, target, ctx.caller, reason, now,
                                        None if seconds is None else now + seconds)),
        es.notify("channel.chat.clear_user_messages", es.chat_clear_user_messages(ctx.state.broadcaster, target)),
    ]
    outcome.broadcasts.append(event)
    return outcome


async def _unbanned(commands: Commands, ctx: Context, login: str, user_id: str) -> Event:
    target = await commands.person(user_id, login)
    return commands.silent(ctx.state, es.notify("channel.unban", es.unban(ctx.state.broadcaster, target, ctx.caller)))


async def unban(commands: Commands, ctx: Context) -> Outcome:
    target = await target_user(commands, ctx, "usage_unban")
    if isinstance(target, Outcome):
        return target
    login, user_id = target
    if await commands.ban_ttl(ctx.channel, user_id) == -2:
        return refused("bad_unban_no_ban", user=login)
    await commands.lift_ban(ctx, user_id)
    return Outcome("unban_success", {"user": login}, broadcasts=[await _unbanned(commands, ctx, login, user_id)])


async def untimeout(commands: Commands, ctx: Context) -> Outcome:
    target = await target_user(commands, ctx, "usage_untimeout")
    if isinstance(target, Outcome):
        return target
    login, user_id = target
    ttl = await commands.ban_ttl(ctx.channel, user_id)
    if ttl == -2:
        return refused("untimeout_no_timeout", user=login)
    if ttl == -1:
        return refused("untimeout_banned", user=login)
    await commands.lift_ban(ctx, user_id)
    return Outcome("untimeout_success", {"user": login},
                   broadcasts=[await _unbanned(commands, ctx, login, user_id)])


async def clear(commands: Commands, ctx: Context) -> Outcome:
    tags = {"room-id": ctx.state.room_id, "tmi-sent-ts": str(now_ms())}
    event = commands.broadcast(ctx.state, "CLEARCHAT", tags, [])
    event.notify = [es.notify("channel.chat.clear", es.chat_clear(ctx.state.broadcaster))]
    return Outcome(None, broadcasts=[event])


async def delete(commands: Commands, ctx: Context) -> Outcome:
    if not ctx.args:
        return refused("usage_delete")
    message = await commands.lookup_message(ctx.channel, ctx.args[0])
    if message is None:
        return refused("bad_delete_message_error")
    login = message.login
    if login == ctx.state.owner:
        return refused("bad_delete_message_broadcaster")
    if login in ctx.state.mods and ctx.role < Role.BROADCASTER:
        return refused("bad_delete_message_mod", user=login)
    tags = {"login": login, "room-id": ctx.state.room_id, "target-msg-id": ctx.args[0], "tmi-sent-ts": str(now_ms())}
    outcome = Outcome("delete_message_success", {"user": login})
    event = commands.broadcast(ctx.state, "CLEARMSG", tags, [message.text])
    event.target = ctx.args[0]
    target = await commands.person(await commands.user_id(login) or "", login)
    event.notify = [es.notify("channel.chat.message_delete",
                              es.chat_message_delete(ctx.state.broadcaster, target, ctx.args[0]))]
    outcome.broadcasts.append(event)
    return outcome


def mode(setting: str, tag: str, on_value: int, off_value: int, on_id: str, off_id: str, *, turn_on: bool,
         already: bool = True) -> Handler:
    """A handler that switches one room mode and tells the whole room."""

    async def handler(commands: Commands, ctx: Context) -> Outcome:
        value = on_value if turn_on else off_value
        if setting == "slow" and turn_on and ctx.args:
            seconds = parse_duration(ctx.args[0])
            if seconds is None or not SLOW_RANGE[0] <= seconds <= SLOW_RANGE[1]:
                return refused("usage_slow_on")
            value = seconds
        if already and ctx.state.settings[setting] == value:
            return refused(f"already_{on_id if turn_on else off_id}")
        roomstate = await commands.change_settings(ctx.state, {setting: value})
        return Outcome(None, broadcasts=[
            roomstate, commands.room_notice(ctx.state, on_id if turn_on else off_id, seconds=value),
        ])

    return handler


def roles(kind: str, *, grant: bool) -> Handler:
    """/mod, /unmod, /vip, /unvip: the broadcaster edits a role set."""
    set_name = "mods" if kind == "mod" else "vips"

    async def handler(commands: Commands, ctx: Context) -> Outcome:
        login = target_login(ctx, f"usage_{'' if grant else 'un'}{kind}")
        if isinstance(login, Outcome):
            return login
        members = ctx.state.mods if kind == "mod" else ctx.state.vips
        if grant and login in members:
            return refused("bad_mod_mod" if kind == "mod" else "bad_vip_grantee_already_vip", user=login)
        if not grant and login not in members:
            return refused("bad_unmod_mod" if kind == "mod" else "bad_unvip_grantee_not_vip", user=login)
        if grant:
            target = await target_user(commands, ctx, f"usage_{kind}")
            if isinstance(target, Outcome):
                return target
            if await commands.ban_ttl(ctx.channel, target[1]) == -1:
                return refused("bad_mod_banned" if kind == "mod" else "bad_vip_grantee_banned", user=login)
        await commands.channels.update_members(ctx.channel, set_name, login, add=grant)
        outcome = Outcome(f"{'' if grant else 'un'}{kind}_success", {"user": login})
        if kind == "mod":
            who = await commands.person(await commands.user_id(login) or "", login)
            build = es.moderator_add if grant else es.moderator_remove
            outcome.broadcasts.append(commands.silent(ctx.state, es.notify(
                "channel.moderator.add" if grant else "channel.moderator.remove", build(ctx.state.broadcaster, who))))
        return outcome

    return handler


async def list_mods(commands: Commands, ctx: Context) -> Outcome:
    if not ctx.state.mods:
        return Outcome("no_mods")
    return Outcome("room_mods", {"list": ", ".join(sorted(ctx.state.mods))})


async def list_vips(commands: Commands, ctx: Context) -> Outcome:
    if not ctx.state.vips:
        return Outcome("no_vips")
    return Outcome("vips_success", {"list": ", ".join(sorted(ctx.state.vips))})


async def whisper(commands: Commands, ctx: Context) -> Outcome:
    """/w user text: a WHISPER to every connection of that user, on any edge."""
    login = target_login(ctx, "usage_whisper")
    if isinstance(login, Outcome):
        return login
    text = " ".join(ctx.args[1:])
    if not text:
        return refused("usage_whisper")
    if login == ctx.identity.login:
        return refused("whisper_invalid_self")
    user_id = await commands.user_id(login)
    if user_id is None:
        return refused("whisper_invalid_login", user=login)
    sender = ctx.identity
    whisper_id = uuid.uuid4().hex
    # Whispers that could go count against Twitch's whisper windows (3 a second, 100 a minute).
    full = await limits.charge(commands.shards, sender.user_id, "whispers", whisper_id, limits.WHISPER_WINDOWS)
    if full:
        return refused(limits.WHISPER_REFUSALS[full - 1])
    low, high = sorted((int(sender.user_id), int(user_id)))
    tags = {
        "badges": "",
        "color": sender.color,
        "display-name": sender.display_name,
        "emotes": "",
        "message-id": whisper_id,
        "thread-id": f"{low}_{high}",
        "turbo": "0",
        "user-id": sender.user_id,
        "user-type": "",
    }
    line = Message(source=twitch.user_source(sender.login), command="WHISPER", params=[login, text])
    recipient = await commands.person(user_id, login)
    message = Event(channel=twitch.whisper_inbox(login), command="WHISPER", tags=serialize_tags(tags),
                    line=line.serialize_without_tags(trailing=True), id=tags["message-id"], login=sender.login,
                    text=text, sent_ms=now_ms(),
                    notify=[es.notify("user.whisper.message", es.whisper(ctx.caller, recipient, tags["message-id"],
                                                                          text))])
    return Outcome(None, broadcasts=[message])


async def color(commands: Commands, ctx: Context) -> Outcome:
    if not ctx.args:
        return refused("usage_color")
    wanted = ctx.args[0]
    value = twitch.NAMED_COLORS.get(wanted.lower()) or (wanted.upper() if re.match(r"^#[0-9a-fA-F]{6}$", wanted) else "")
    if not value:
        return refused("usage_color")
    key = user_key(ctx.identity.user_id, "color")
    await pipeline_call(commands.shards.for_key(key), "color", [("SET", key, value)])
    return Outcome("color_changed")


COMMANDS: dict[str, tuple[Role, Handler]] = {
    "ban": (Role.MODERATOR, ban),
    "unban": (Role.MODERATOR, unban),
    "timeout": (Role.MODERATOR, timeout),
    "untimeout": (Role.MODERATOR, untimeout),
    "clear": (Role.MODERATOR, clear),
    "delete": (Role.MODERATOR, delete),
    "slow": (Role.MODERATOR, mode("slow", "slow", DEFAULT_SLOW, 0, "slow_on", "slow_off", turn_on=True, already=False)),
    "slowoff": (Role.MODERATOR, mode("slow", "slow", DEFAULT_SLOW, 0, "slow_on", "slow_off", turn_on=False,
                                     already=False)),
    "emoteonly": (Role.MODERATOR, mode("emote_only", "emote-only", 1, 0, "emote_only_on", "emote_only_off",
                                       turn_on=True)),
    "emoteonlyoff": (Role.MODERATOR, mode("emote_only", "emote-only", 1, 0, "emote_only_on", "emote_only_off",
                                          turn_on=False)),
    "uniquechat": (Role.MODERATOR, mode("r9k", "r9k", 1, 0, "r9k_on", "r9k_off", turn_on=True)),
    "uniquechatoff": (Role.MODERATOR, mode("r9k", "r9k", 1, 0, "r9k_on", "r9k_off", turn_on=False)),
    "subscribers": (Role.MODERATOR, mode("subs_only", "subs-only", 1, 0, "subs_on", "subs_off", turn_on=True)),
    "subscribersoff": (Role.MODERATOR, mode("subs_only", "subs-only", 1, 0, "subs_on", "subs_off", turn_on=False)),
    "mod": (Role.BROADCASTER, roles("mod", grant=True)),
    "unmod": (Role.BROADCASTER, roles("mod", grant=False)),
    "vip": (Role.BROADCASTER, roles("vip", grant=True)),
    "unvip": (Role.BROADCASTER, roles("vip", grant=False)),
    "mods": (Role.VIEWER, list_mods),
    "vips": (Role.VIEWER, list_vips),
    "color": (Role.VIEWER, color),
    "w": (Role.VIEWER, whisper),
}
# tmi.js sends the older names for unique chat.
COMMANDS["r9kbeta"] = COMMANDS["uniquechat"]
COMMANDS["r9kbetaoff"] = COMMANDS["uniquechatoff"]
