"""`POST /api/v1/channels/{channel}/trigger`: test events on demand.

The channel's owner (their own bearer token) makes chatd publish a sub, raid,
cheer, … as Twitch would send it (clue.usernotice builds them), through the
exchange that owns the channel, so every edge shows it in the channel's one
order and EventSub sessions get the matching notifications. Nothing is charged
or stored: these are test events, like the Twitch CLI's `event trigger`.
"""
from __future__ import annotations

import dataclasses
import time
import uuid
from typing import Annotated

import msgspec
from aiohttp import web

from clue import usernotice as un
from clue.accounts import Accounts
from clue.channels import ChannelCache
from clue.helix.chat import ANNOUNCEMENT_COLORS
from clue.oauth import OAuth
from clue.publisher import Exchanges
from common import twitch
from common.internal_http import ApiError, RemoteError, read_body, reply
from common.shards import ShardUnavailable
from common.tokens import LOGIN_RE, stable_id

# Made-up people a trigger names unless told otherwise (their ids derive from the login).
DEFAULT_USER = "testuser"
DEFAULT_RECIPIENT = "testrecipient"
DEFAULT_GIFTER = "testgifter"
MAX_MONTHS = 1000
MAX_COUNT = 100  # Twitch's largest community gift
MAX_VIEWERS = 1_000_000
MAX_BITS = 10_000_000


class TriggerRequest(msgspec.Struct, forbid_unknown_fields=True):
    kind: str
    user: str = DEFAULT_USER
    tier: str = "1000"
    months: Annotated[int, msgspec.Meta(ge=0, le=MAX_MONTHS)] = 0
    count: Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT)] = 0
    viewers: Annotated[int, msgspec.Meta(ge=0, le=MAX_VIEWERS)] = un.DEFAULT_VIEWERS
    bits: Annotated[int, msgspec.Meta(ge=0, le=MAX_BITS)] = 0
    message: str = ""
    color: str = "primary"
    recipient: str = DEFAULT_RECIPIENT
    gifter: str = DEFAULT_GIFTER


class Triggers:
    def __init__(self, oauth: OAuth, accounts: Accounts, channels: ChannelCache, exchanges: Exchanges,
                 server: str, emotes: dict[str, str]) -> None:
        self.oauth = oauth
        self.accounts = accounts
        self.channels = channels
        self.exchanges = exchanges
        self.server = server
        self.emotes = emotes

    async def on_trigger(self, request: web.Request) -> web.Response:
        owner = (await self.oauth.bearer_user(request)).login
        channel = "#" + request.match_info["channel"].lstrip("#").lower()
        if not twitch.is_valid_channel(channel):
            raise ApiError(400, "no such channel name")
        if owner != channel[1:]:  # a test event in someone else's channel would look real to its viewers
            raise ApiError(403, f"only the broadcaster may trigger test events in {channel}")
        body = await read_body(request, TriggerRequest)
        body = msgspec.structs.replace(body, user=body.user.lower(), recipient=body.recipient.lower(),
                                       gifter=body.gifter.lower())
        options = options_for(body, channel)
        try:
            state = await self.channels.get(channel)
            user = await self._person(body.user)
            if body.kind == "subgift":
                options = dataclasses.replace(options, recipient=await self._person(body.recipient))
            elif body.kind == "giftpaidupgrade":
                options = dataclasses.replace(options, gifter=await self._person(body.gifter))
        except ShardUnavailable:
            raise ApiError(503, "chat state is unavailable") from None
        notice = un.Notice(server=self.server, state=state, user=user, message_id=str(uuid.uuid4()),
                           sent_ms=int(time.time() * 1000), emotes=self.emotes)
        events = un.build(body.kind, notice, options)
        try:
            for event in events:  # the channel's own event first: its order is the one that counts
                await self.exchanges.publish(event)
        except RemoteError:
            raise ApiError(503, "the exchange did not take the event; try again") from None
        lines = [f"@{event.tags} {event.line}" for event in events if event.line]
        return reply({"ok": True, "kind": body.kind, "channel": channel, "id": events[0].id, "lines": lines})

    async def _person(self, login: str) -> un.Person:
        """A registered user as they are known, else a made-up one with a derived id."""
        user_id = await self.accounts.user_id(login)
        if user_id is None:
            return stable_id(login), login, login
        profile = await self.accounts.user(user_id) or {}
        return user_id, login, profile.get("display_name") or login


def options_for(body: TriggerRequest, channel: str) -> un.Options:
    """Check the request against what its kind accepts; 400 saying what is wrong."""
    kind = body.kind
    if kind not in un.KINDS:
        raise ApiError(400, f"unknown kind {kind!r}; one of {', '.join(un.KINDS)}")
    for field, login in (("user", body.user), ("recipient", body.recipient), ("gifter", body.gifter)):
        if not LOGIN_RE.match(login):
            raise ApiError(400, f"{field} must be a login (1-25 characters of a-z, 0-9 and _)")
    tier = un.PRIME if body.tier.lower() == "prime" else body.tier
    if tier not in (*un.TIERS, un.PRIME):
        raise ApiError(400, "tier must be 1000, 2000, 3000 or prime")
    if tier == un.PRIME and kind in un.PAID_ONLY:
        raise ApiError(400, f"a {kind} cannot be Prime")
    if body.message and kind not in un.WITH_MESSAGE:
        raise ApiError(400, f"a {kind} carries no message")
    limit = twitch.MAX_MESSAGE_CHARS - (len(f"Cheer{body.bits or un.DEFAULT_BITS['cheer']} ") if kind == "cheer"
                                        else 0)
    if len(body.message) > limit or any(char in body.message for char in "\r\n\0"):
        raise ApiError(400, f"the message must be at most {limit} characters on one line")
    if body.color not in ANNOUNCEMENT_COLORS:
        raise ApiError(400, f"color must be one of {', '.join(ANNOUNCEMENT_COLORS)}")
    if kind == "raid" and body.user == channel[1:]:
        raise ApiError(400, "a channel cannot raid itself")
    if kind == "subgift" and body.recipient == body.user:
        raise ApiError(400, "a gift goes to someone else")
    if kind == "giftpaidupgrade" and body.gifter == body.user:
        raise ApiError(400, "the gifter must be someone else")
    return un.Options(tier=tier, months=body.months, count=body.count, viewers=body.viewers, bits=body.bits,
                      message=body.message, color=body.color)
