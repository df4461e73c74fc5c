"""Stream sessions over HTTP (reached through every edge's `/api/v1/*`):

- `POST /api/v1/channels/{channel}/broadcast`: a `minute_broadcast` (one per live
  minute) from the broadcaster's software, with the broadcaster's own token.
  It is published to the exchange that owns the channel as an event with no
  IRC line, so it takes its place in the channel's one order; the exchange's
  session driver (exchange/sessions.py) archives it and runs the session core.
- `GET /api/v1/channels/{channel}/sessions`: the channel's sessions, newest
  first, each with its summary (an open one's is made on the spot); open to
  anyone, like a channel's highlights.
"""
from __future__ import annotations

import time

import msgspec
from aiohttp import web

from analytics.sessions import format_time, parse_time, session_id
from analytics.summaries import summarize
from clue.accounts import Accounts
from clue.channels import ChannelCache
from clue.oauth import OAuth
from clue.publisher import Exchanges
from common import twitch
from common.internal_http import ApiError, RemoteError, read_body, reply
from common.sessions import SessionStore
from common.shards import ShardSet, ShardUnavailable
from common.wire import Broadcast, Event, SessionRecord

FUTURE_SKEW = 60  # seconds a sender's clock may run ahead of ours
MAX_AGE = 31 * 86_400  # older events are refused: nothing would ever look at them
DEFAULT_LIMIT, MAX_LIMIT = 20, 100


class BroadcastRequest(msgspec.Struct, forbid_unknown_fields=True):
    time: str | int | None = None  # when the channel was live (default: now)


class SessionsApi:
    def __init__(self, oauth: OAuth, accounts: Accounts, channels: ChannelCache, exchanges: Exchanges,
                 shards: ShardSet, minute: int) -> None:
        self.oauth = oauth
        self.accounts = accounts
        self.channels = channels
        self.exchanges = exchanges
        self.store = SessionStore(shards, timeout=shards.read_timeout)  # it only reads, for the API
        self.minute = minute

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/api/v1/channels/{channel}/broadcast", self.on_broadcast),
                web.get("/api/v1/channels/{channel}/sessions", self.on_sessions)]

    async def on_broadcast(self, request: web.Request) -> web.Response:
        identity = await self.oauth.bearer_user(request)
        channel = _channel(request)
        if identity.login != channel[1:]:
            raise ApiError(403, f"only the broadcaster of {channel} may say it is live")
        body = await read_body(request, BroadcastRequest) if await request.read() else BroadcastRequest()
        seconds = when(body.time, time.time())
        try:
            await self.accounts.remember(identity)  # the channel is known from now on, as after a login
            state = await self.channels.get(channel)
        except ShardUnavailable:
            raise ApiError(503, "chat state is unavailable") from None
        event = Event(channel=channel, command="BROADCAST", line="", broadcast=Broadcast(state.room_id, seconds))
        try:
            await self.exchanges.publish(event)
        except RemoteError:
            raise ApiError(503, "the exchange did not take the event; try again") from None
        return reply({"ok": True, "channel": channel, "channel_id": state.room_id, "time": format_time(seconds)})

    async def on_sessions(self, request: web.Request) -> web.Response:
        # Open, like highlights and recent-messages: when a channel was live is public.
        channel = _channel(request)
        limit = _number(request.query.get("limit", str(DEFAULT_LIMIT)), "limit", 1, MAX_LIMIT)
        before = request.query.get("before")
        try:
            # The id its broadcasts carry (clue.channels: registered, else derived from the name).
            channel_id = (await self.channels.get(channel)).room_id
            records = await self.store.latest(channel_id, None if before is None else when(before, None), limit)
            if not records and await self.accounts.user_id(channel[1:]) is None:
                raise ApiError(404, f"no such channel: {channel}")
            missing = [r for r in records if r.open or r.summary is None]
            for record, (minutes, highlights) in zip(missing, await self.store.summary_inputs(missing, self.minute),
                                                     strict=True):
                record.summary = summarize(minutes, highlights, record.start, record.end, self.minute)
        except ShardUnavailable:
            raise ApiError(503, "sessions are unavailable right now") from None
        return reply({"channel": channel, "channel_id": channel_id, "sessions": [shown(r) for r in records]})


def shown(record: SessionRecord) -> dict:
    """The seed's record (`channel_id`, `start_time`, `end_time`, `id`) with its summary."""
    return {"id": session_id(record.channel_id, record.start), "channel_id": record.channel_id,
            "start_time": format_time(record.start), "end_time": format_time(record.end), "open": record.open,
            "summary": msgspec.to_builtins(record.summary)}


def when(value: str | int | None, now: float | None) -> int:
    """A time as sent (`2026-03-05 14:13:00` UTC, ISO 8601, or seconds since the epoch) →
    seconds; with `now`, refused if in the future or too old. 400 saying why."""
    if value is None:
        assert now is not None
        return int(now)
    try:
        seconds = int(value) if isinstance(value, int) or value.strip().isdigit() else parse_time(value)
    except (ValueError, OverflowError):
        raise ApiError(400, f"time must look like 2026-03-05 14:13:00 (UTC), ISO 8601 or seconds since the epoch, "
                            f"got {value!r}") from None
    if not 0 <= seconds < 1 << 40:
        raise ApiError(400, "time is out of range")
    if now is not None and seconds > now + FUTURE_SKEW:
        raise ApiError(400, f"time {format_time(seconds)} is in the future")
    if now is not None and seconds < now - MAX_AGE:
        raise ApiError(400, f"time {format_time(seconds)} is older than {MAX_AGE // 86_400} days")
    return seconds


def _channel(request: web.Request) -> str:
    channel = "#" + request.match_info["channel"].lstrip("#").lower()
    if not twitch.is_valid_channel(channel):
        raise ApiError(400, "no such channel name")
    return channel


def _number(text: str, name: str, low: int, high: int) -> int:
    if not text.isdigit() or not low <= int(text) <= high:
        raise ApiError(400, f"{name} must be a whole number from {low} to {high}")
    return int(text)
