"""The clue service: logins, joins and message ingestion over internal HTTP."""
from __future__ import annotations

import asyncio
import uuid

import msgspec
import structlog
from aiohttp import web

from clue import limits, stamp
from clue.accounts import Accounts
from clue.channels import ChannelCache, ChannelState
from clue.commands import Commands
from clue.config import ClueSettings
from clue.helix import Helix
from clue.highlights import HighlightsApi
from clue.history import HistoryReader
from clue.ingest import Ingest
from clue.modlog import ModerationLog
from clue.oauth import OAuth, OAuthError
from clue.operator import OperatorApi
from clue.presence import Presence
from clue.publisher import Exchanges
from clue.recent import HistoryApi
from clue.routes import ANNOUNCE as ROUTES_ANNOUNCE
from clue.routes import RouteTable
from clue.sessions import SessionsApi
from clue.triggers import Triggers
from clue.validation import load_scripts
from common import twitch
from common.internal_http import (
    ApiError,
    InternalServer,
    RemoteError,
    metrics_route,
    read_body,
    reply,
)
from common.metrics import Metrics
from common.shards import ShardSet, ShardUnavailable, pipeline_call, user_key
from common.tasks import cancel_and_wait
from common.wire import (
    EventRange,
    JoinBatch,
    JoinReply,
    JoinRequest,
    JoinResults,
    LoginReply,
    LoginRequest,
    PresenceBatch,
    SubmitBatch,
    SubmitResults,
    TailRequest,
)

log = structlog.get_logger()

JOIN_LOGIN_WINDOW_MS = 10_000
# HTTP status of a refused API command by its msg-id (anything else is 400).
API_STATUS = {"no_permission": 403, "msg_service_unavailable": 503}
TAIL_PRUNE_INTERVAL = 1.0


class ClueService:
    def __init__(self, settings: ClueSettings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.shards = ShardSet(settings.cache_servers, settings.cache_max_conns, settings.cache_timeout, metrics)
        self.channels = ChannelCache(self.shards, metrics, settings.channel_cache_ttl)
        self.routes = RouteTable(self.shards)
        self.exchange = Exchanges(
            settings.exchange_urls, self.routes, settings.common.internal_token, metrics, settings.common.http_timeout
        )
        self.channels.announcements[ROUTES_ANNOUNCE] = self._on_route_change
        self.accounts = Accounts(self.shards)
        self.oauth = OAuth(settings.chat_secret, self.accounts)
        self.commands = Commands(self.shards, self.channels, self.accounts, settings.common.server_name,
                                 self.exchange.lookup)
        self.modlog = ModerationLog(self.shards, metrics)
        self.ingest = Ingest(settings, metrics, self.shards, self.channels, self.exchange, self.commands,
                             self.modlog)
        self.presence = Presence(self.shards, self.exchange, settings.membership_limit, settings.presence_expiry)
        self.helix = Helix(self.oauth, self.accounts, self.channels, self.shards, self.ingest, self.commands,
                           self.exchange, self.presence)
        self.oauth.on_user_revoked = self._revoked
        self.history = HistoryApi(HistoryReader(self.shards, settings.history_limit, settings.history_age))
        self._pruner: asyncio.Task[None] | None = None
        self.server = InternalServer(
            settings.common.internal_token,
            [
                web.post("/v1/login", self._on_login),
                web.post("/v1/joins", self._on_joins),
                web.post("/v1/messages", self._on_messages),
                web.post("/v1/tail", self._on_tail),
                web.post("/v1/history", self.history.on_history),
                web.post("/v1/presence", self._on_presence),
                web.get("/api/v2/recent-messages/{login}", self.history.recent_messages),
                web.post("/api/v1/channels/{channel}/commands", self._on_api_command),
                web.post("/api/v1/channels/{channel}/trigger", Triggers(
                    self.oauth, self.accounts, self.channels, self.exchange, settings.common.server_name,
                    settings.emotes).on_trigger),
                *SessionsApi(self.oauth, self.accounts, self.channels, self.exchange, self.shards,
                             settings.sessions.minute).routes(),
                web.get("/api/v1/channels/{channel}", self._on_api_channel),
                web.get("/api/v1/channels/{channel}/highlights", HighlightsApi(self.shards).on_list),
                web.get("/oauth2/validate", self.oauth.on_validate),
                web.post("/oauth2/token", self.oauth.on_token),
                web.post("/oauth2/revoke", self.oauth.on_revoke),
                web.post("/oauth2/authorize", self.oauth.on_authorize),
                *self.helix.routes(),
                *OperatorApi(self.shards, self.routes, list(settings.exchange_urls), self.modlog).routes(),
                web.get("/health", self._on_health),
                metrics_route(metrics),
            ],
        )
        self.addresses: dict[str, str] = {}

    async def start(self) -> None:
        await load_scripts(self.shards)
        try:
            await self.routes.load()
        except ShardUnavailable:
            log.warning("routes_unavailable", remote="redis")  # reloaded entry by entry as changes come
        self.channels.start()
        self._pruner = asyncio.get_running_loop().create_task(self._prune_tails())
        self.addresses["http"] = await self.server.start(self.settings.http_listen)

    async def stop(self) -> None:
        await cancel_and_wait(self._pruner)
        await self.server.stop()
        await self.channels.close()
        await self.exchange.close()
        await self.shards.close()

    async def _prune_tails(self) -> None:
        while True:
            await asyncio.sleep(TAIL_PRUNE_INTERVAL)
            self.exchange.tails.prune()

    async def _on_route_change(self, channel: str) -> None:
        """A channel moved: its old exchange must hand it over (every clue says so;
        the exchange acts once per version)."""
        try:
            (old, _), (new, version) = await self.routes.refresh(channel)
            if old != new:
                log.info("route_changed", channel=channel, old=old, new=new, version=version)
                await self.exchange.move(channel, old, new, version)
        except (ShardUnavailable, RemoteError) as exc:
            log.warning("route_change_failed", channel=channel, detail=str(exc)[:200])

    async def _revoked(self, client_id: str, user_id: str) -> None:
        await self.helix.eventsub.revoke(client_id, user_id, "authorization_revoked")

    # ---- handlers for edges
    async def _on_health(self, request: web.Request) -> web.Response:
        return reply({"ok": True, "cluster": self.settings.cluster})

    async def _on_login(self, request: web.Request) -> web.Response:
        body = await read_body(request, LoginRequest)
        try:
            grant = await self.oauth.authenticate(body.token)
        except OAuthError as exc:
            self.metrics.incr("logins.failed")
            raise ApiError(401, exc.message) from None
        identity = grant.identity
        assert identity is not None
        if not grant.has("chat:read"):  # as on Twitch: IRC needs chat:read
            self.metrics.incr("logins.failed")
            raise ApiError(401, "the token lacks the chat:read scope")
        try:
            if await self._over_limit(identity.user_id, "logins"):
                self.metrics.incr("logins.ratelimited")
                raise ApiError(429, "too many logins; try again in a few seconds")
            # Lets /ban, Helix ids and EventSub conditions find the user.
            await self.accounts.remember(identity)
        except ShardUnavailable:
            pass  # fail open: a login changes no chat state, and messages are still checked
        self.metrics.incr("logins.ok")
        return reply(LoginReply(identity))

    async def _on_joins(self, request: web.Request) -> web.Response:
        body = await read_body(request, JoinBatch)
        return reply(JoinResults(list(await asyncio.gather(*(self._join(join) for join in body.joins)))))

    async def _join(self, body: JoinRequest) -> JoinReply:
        if not twitch.is_valid_channel(body.channel):
            return JoinReply(ok=False, msg_id="msg_channel_suspended")  # edges check names first: not reached
        try:
            state = await self.channels.get(body.channel)
            if body.identity is not None and await self._over_limit(
                    body.identity.user_id, "joins", limits.join_limit(self.settings, body.identity)):
                self.metrics.incr("joins.ratelimited")
                return JoinReply(ok=False, msg_id="msg_join_ratelimit")
        except ShardUnavailable:
            return JoinReply(ok=False, msg_id="msg_join_failed")
        names: list[str] = []
        if body.names and body.identity is not None:
            try:
                names = await self.presence.names(body.channel) or []
            except ShardUnavailable:
                names = []  # NAMES lists the joiner alone; the JOIN itself goes on
        return JoinReply(
            ok=True,
            room_state=state.room_state_tags(),
            user_state=stamp.user_state_tags(body.identity, state) if body.identity else {},
            cluster=self.routes.cluster_for(body.channel),
            names=names,
        )

    async def _on_presence(self, request: web.Request) -> web.Response:
        body = await read_body(request, PresenceBatch)
        try:
            published = await self.presence.apply(body)
        except ShardUnavailable:
            raise ApiError(503, "presence is unavailable right now") from None
        self.metrics.incr("presence.changes", len(body.changes))
        self.metrics.incr("presence.lines", published)
        return reply({"lines": published})

    async def _over_limit(self, user_id: str, what: str, limit: int = 0) -> bool:
        """Twitch allows 20 logins and 20 JOINs per user per 10 s (JOIN_RATE_LIMIT,
        or `limit`; a fixed window on the user's shard: one round trip)."""
        key = user_key(user_id, what)
        _, count = await pipeline_call(
            self.shards.for_key(key), what, [("SET", key, 0, "PX", JOIN_LOGIN_WINDOW_MS, "NX"), ("INCR", key)]
        )
        return int(count) > (limit or self.settings.join_limit)

    async def _on_messages(self, request: web.Request) -> web.Response:
        body = await read_body(request, SubmitBatch)
        with self.metrics.timer("ingest"):
            results = await self.ingest.run(body.messages)
        return reply(SubmitResults(results))

    async def _on_tail(self, request: web.Request) -> web.Response:
        """What this clue published to an exchange during one of its boots (it died)."""
        body = await read_body(request, TailRequest)
        events = [event for channel, seq in body.after.items()
                  for event in self.exchange.tails.after(body.exchange, body.boot, channel, seq)]
        return reply(EventRange(events=events, complete=True))

    # ---- the moderation API for bots and tools (users' bearer tokens)
    async def _api_state(self, request: web.Request) -> ChannelState:
        channel = "#" + request.match_info["channel"].lstrip("#").lower()
        if not twitch.is_valid_channel(channel):
            raise ApiError(400, "no such channel name")
        try:
            return await self.channels.get(channel)
        except ShardUnavailable:
            raise ApiError(503, "chat state is unavailable") from None

    async def _on_api_command(self, request: web.Request) -> web.Response:
        """`{"command": "/ban troll"}` → what the same line in chat would do."""
        identity = await self.oauth.bearer_user(request)
        state = await self._api_state(request)
        body = await read_body(request, ApiCommand)
        text = body.command.strip()
        if not twitch.is_command(text) or any(char in text for char in "\r\n\0"):
            raise ApiError(400, 'expected {"command": "/name args"} on one line')
        outcome = await self.ingest.run_command(identity, state, text, str(uuid.uuid4()))
        status = 200 if outcome.ok else API_STATUS.get(outcome.msg_id, 400)
        return reply({"ok": outcome.ok, "msg_id": outcome.msg_id, "text": outcome.text}, status=status)

    async def _on_api_channel(self, request: web.Request) -> web.Response:
        await self.oauth.bearer_user(request)
        state = await self._api_state(request)
        return reply({
            "channel": state.name,
            "room_state": state.room_state_tags(),
            "broadcaster": state.owner,
            "mods": sorted(state.mods),
            "vips": sorted(state.vips),
        })


class ApiCommand(msgspec.Struct):
    command: str
