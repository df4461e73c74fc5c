"""The clue service: logins, joins and message ingestion over internal HTTP."""
from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from clue import stamp
from clue.channels import ChannelCache, ChannelState
from clue.commands import Commands, Role, login_key, role_of
from clue.config import ClueSettings
from clue.emotes import emotes_tag
from clue.routes import ANNOUNCE as ROUTES_ANNOUNCE
from clue.routes import RouteTable
from clue.shards import ShardSet, ShardUnavailable, channel_key, pipeline_call, user_key
from clue.validation import DUPLICATE_WINDOW_MS, Check, load_scripts, run_checks
from common import twitch
from common.batch import Batcher
from common.internal_http import (
    InternalClient,
    InternalServer,
    RemoteError,
    json_error,
    read_json,
)
from common.irc import Message
from common.metrics import Metrics
from common.ring import Ring
from common.tokens import Identity, TokenError, verify_token

log = structlog.get_logger()


@dataclass(slots=True)
class Pending:
    """One message of a batch on its way through the checks."""

    index: int
    item: dict[str, Any]
    identity: Identity
    state: ChannelState
    check: Check
    text: str
    emotes: str
    role: Role
    command: bool


def early_verdict(state: ChannelState, identity: Identity, role: Role, only_emotes: bool) -> str:
    """Refusals decided from cached channel state; the check script reports them
    after bans and timeouts, keeping Twitch's order."""
    settings = state.settings
    if settings["subs_only"] and role < Role.VIP and not identity.subscriber:
        return "msg_subsonly"
    if settings["emote_only"] and role < Role.MODERATOR and not only_emotes:
        return "msg_emoteonly"
    return ""


JOIN_LOGIN_WINDOW_MS = 10_000

# HTTP status of a refused API command by its msg-id (anything else is 400).
API_STATUS = {"no_permission": 403, "msg_service_unavailable": 503}


class Rejected(Exception):
    def __init__(self, msg_id: str, **fill: Any) -> None:
        super().__init__(msg_id)
        self.msg_id = msg_id
        self.fill = fill


class Exchanges:
    """Hands accepted messages, batched, to the exchange that owns their channel
    in the cluster the routing table names for it."""

    def __init__(self, clusters: dict[str, list[str]], routes: RouteTable, token: str, metrics: Metrics,
                 timeout: float) -> None:
        self._routes = routes
        self._rings = {cluster: Ring(urls) for cluster, urls in clusters.items()}
        urls = list(dict.fromkeys(url for found in clusters.values() for url in found))
        self._clients = {url: InternalClient(f"exchange:{url}", url, token, metrics, timeout=timeout) for url in urls}
        self._batchers = {url: Batcher(self._sender(self._clients[url])) for url in urls}

    @staticmethod
    def _sender(client: InternalClient):
        async def send(messages: list[dict[str, Any]]) -> list[int]:
            answer = await client.post("/v1/publish", {"messages": messages}, op="publish")
            return answer["seqs"]

        return send

    def owner(self, channel: str, cluster: str | None = None) -> str:
        if cluster is None:
            # Whispers (`@login` pseudo-channels) travel in the group cluster where there is one.
            whisper = channel.startswith(twitch.WHISPER_PREFIX) and "group" in self._rings
            cluster = "group" if whisper else self._routes.cluster_for(channel)
        ring = self._rings.get(cluster)
        if ring is None:
            log.warning("unknown_cluster", cluster=cluster, channel=channel)
            ring = self._rings["main"]
        return ring.node_for(channel)

    def publish(self, message: dict[str, Any]) -> asyncio.Future[int]:
        channel = message["channel"]
        # The route version lets the exchange tell messages from before a move.
        message["rv"] = self._routes.version_for(channel)
        return self._batchers[self.owner(channel)].submit(message)

    async def move(self, channel: str, old_cluster: str, new_cluster: str, version: int) -> None:
        """Tell the channel's old exchange where it lives now."""
        old, new = self.owner(channel, old_cluster), self.owner(channel, new_cluster)
        if old != new:
            payload = {"channel": channel, "cluster": new_cluster, "version": version, "to": new}
            await self._clients[old].post("/v1/move", payload, op="move")

    async def lookup(self, channel: str, message_id: str) -> dict[str, Any] | None:
        """A recent message of `channel` from the exchange that owns it."""
        client = self._clients[self.owner(channel)]
        try:
            return await client.post("/v1/lookup", {"channel": channel, "id": message_id}, op="lookup")
        except RemoteError as exc:
            if exc.reason.startswith("HTTP 404"):
                return None
            raise

    async def close(self) -> None:
        for batcher in self._batchers.values():
            await batcher.close()
        for client in self._clients.values():
            await client.close()


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
        self.commands = Commands(self.shards, self.channels, settings.common.server_name, self.exchange.lookup)
        self.server = InternalServer(
            settings.common.internal_token,
            [
                web.post("/v1/login", self._on_login),
                web.post("/v1/join", self._on_join),
                web.post("/v1/messages", self._on_messages),
                web.post("/api/v1/channels/{channel}/commands", self._on_api_command),
                web.get("/api/v1/channels/{channel}", self._on_api_channel),
                web.get("/health", self._on_health),
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
        self.addresses["http"] = await self.server.start(self.settings.http_listen)

    async def stop(self) -> None:
        await self.server.stop()
        await self.channels.close()
        await self.exchange.close()
        await self.shards.close()

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

    # ---- handlers
    async def _on_health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def _on_login(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        try:
            identity = verify_token(self.settings.chat_secret, str(body.get("token", "")))
        except TokenError as exc:
            self.metrics.incr("logins.failed")
            return json_error(401, "login_failed", str(exc))
        try:
            if await self._over_limit(identity.user_id, "logins"):
                self.metrics.incr("logins.ratelimited")
                return json_error(429, "login_ratelimit", "too many logins; try again in a few seconds")
            # Lets /ban and friends find the user id a login's tokens carry.
            key = login_key(identity.login)
            await pipeline_call(self.shards.for_key(key), "login", [("SET", key, identity.user_id)])
        except ShardUnavailable:
            pass  # fail open: a login changes no chat state, and messages are still checked
        self.metrics.incr("logins.ok")
        return web.json_response({"identity": identity.to_dict()})

    async def _on_join(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        channel = str(body.get("channel", ""))
        if not twitch.is_valid_channel(channel):
            return json_error(400, "bad_channel", "channel must look like #name")
        try:
            state = await self.channels.get(channel)
        except ShardUnavailable:
            return web.json_response({"ok": False, "msg_id": "msg_join_failed"})
        identity = Identity.from_dict(body["identity"]) if body.get("identity") else None
        try:
            if identity is not None and await self._over_limit(identity.user_id, "joins"):
                self.metrics.incr("joins.ratelimited")
                return web.json_response({"ok": False, "msg_id": "msg_join_ratelimit"})
        except ShardUnavailable:
            return web.json_response({"ok": False, "msg_id": "msg_join_failed"})
        user_state = stamp.user_state_tags(identity, state) if identity else {}
        return web.json_response({
            "ok": True,
            "room_state": state.room_state_tags(),
            "user_state": user_state,
            "cluster": self.routes.cluster_for(channel),
        })

    async def _over_limit(self, user_id: str, what: str) -> bool:
        """Twitch allows 20 logins and 20 JOINs per user per 10 s (JOIN_RATE_LIMIT;
        a fixed window on the user's shard: one round trip)."""
        key = user_key(user_id, what)
        _, count = await pipeline_call(
            self.shards.for_key(key), what, [("SET", key, 0, "PX", JOIN_LOGIN_WINDOW_MS, "NX"), ("INCR", key)]
        )
        return int(count) > self.settings.join_limit

    async def _on_messages(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        items = body.get("messages")
        if not isinstance(items, list):
            return json_error(400, "bad_request", "expected {messages: [...]}")
        started = time.perf_counter()
        results = await self.ingest(items)
        self.metrics.timing("ingest", (time.perf_counter() - started) * 1000)
        return web.json_response({"results": results})

    # ---- the moderation API for bots and tools (users' bearer tokens)
    def _api_identity(self, request: web.Request) -> Identity:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        try:
            if scheme.lower() != "bearer":
                raise TokenError("no bearer token")
            return verify_token(self.settings.chat_secret, token.removeprefix("oauth:"))
        except TokenError as exc:
            raise web.HTTPUnauthorized(
                text=json.dumps({"error": "unauthorized", "message": str(exc)}), content_type="application/json"
            ) from None

    async def _api_state(self, request: web.Request) -> ChannelState:
        channel = "#" + request.match_info["channel"].lstrip("#").lower()
        if not twitch.is_valid_channel(channel):
            raise web.HTTPBadRequest(
                text=json.dumps({"error": "bad_channel", "message": "no such channel name"}),
                content_type="application/json",
            )
        try:
            return await self.channels.get(channel)
        except ShardUnavailable:
            raise web.HTTPServiceUnavailable(
                text=json.dumps({"error": "unavailable", "message": "chat state is unavailable"}),
                content_type="application/json",
            ) from None

    async def _on_api_command(self, request: web.Request) -> web.Response:
        """`{"command": "/ban troll"}` → what the same line in chat would do."""
        identity = self._api_identity(request)
        state = await self._api_state(request)
        body = await read_json(request)
        text = str(body.get("command", "")).strip()
        if not twitch.is_command(text):
            return json_error(400, "bad_command", 'expected {"command": "/name args"}')
        answer = await self._run_command(identity, state, text)
        status = 200 if answer["ok"] else API_STATUS.get(answer.get("msg_id", ""), 400)
        return web.json_response(answer, status=status)

    async def _on_api_channel(self, request: web.Request) -> web.Response:
        self._api_identity(request)
        state = await self._api_state(request)
        return web.json_response({
            "channel": state.name,
            "room_state": state.room_state_tags(),
            "broadcaster": state.owner,
            "mods": sorted(state.mods),
            "vips": sorted(state.vips),
        })

    # ---- ingestion
    async def ingest(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Validate, stamp and publish a batch; one result per item, in order."""
        self.metrics.incr("messages.received", len(items))
        results: list[dict[str, Any] | None] = [None] * len(items)
        pending: list[Pending] = []
        for index, item in enumerate(items):
            try:
                prepared = await self._prepare(index, item)
            except Rejected as rejected:
                results[index] = self._rejection(item, rejected.msg_id, **rejected.fill)
                continue
            if prepared.command:
                results[index] = await self._run_command(prepared.identity, prepared.state, prepared.text)
            else:
                pending.append(prepared)

        await run_checks(self.shards, [entry.check for entry in pending])
        await self._check_unique(pending)

        publishing: list[tuple[Pending, asyncio.Future[int], dict[str, str]]] = []
        for entry in pending:
            check = entry.check
            if check.verdict != "ok":
                seconds = max(1, round(check.number / 1000)) if check.number else ""
                results[entry.index] = self._rejection(entry.item, check.verdict, seconds=seconds)
                continue
            user_state = stamp.user_state_tags(entry.identity, entry.state, check.member, color=check.color)
            publishing.append((entry, self.exchange.publish(self._stamp(entry)), user_state))

        for entry, future, user_state in publishing:
            try:
                await future
            except RemoteError:
                results[entry.index] = self._rejection(entry.item, "msg_service_unavailable")
                continue
            self.metrics.incr("messages.accepted")
            results[entry.index] = {"ok": True, "id": user_state["id"], "user_state": user_state}
        return results  # type: ignore[return-value]

    async def _prepare(self, index: int, item: dict[str, Any]) -> Pending:
        try:
            identity = Identity.from_dict(item["identity"])
            channel = str(item["channel"])
            text = str(item["text"])
        except (KeyError, TypeError):
            raise Rejected("msg_bad_request") from None
        if not twitch.is_valid_channel(channel):
            raise Rejected("msg_channel_suspended")
        if len(text) > twitch.MAX_MESSAGE_CHARS:
            raise Rejected("msg_too_long")
        if not text.strip() or any(char in text for char in "\r\n\0"):
            raise Rejected("msg_bad_request")
        try:
            state = await self.channels.get(channel)
        except ShardUnavailable:
            raise Rejected("msg_service_unavailable") from None
        role = role_of(identity.login, state)
        command = twitch.is_command(text)
        if twitch.is_action(text):
            text = f"\x01ACTION {text.partition(' ')[2]}\x01"
            command = False
        emotes, only_emotes = emotes_tag(text, self.settings.emotes)
        check = Check(
            user_id=identity.user_id,
            channel=channel,
            text=text,
            member=str(uuid.uuid4()),
            rate_limit=self.settings.rate_limit_privileged if role >= Role.VIP else self.settings.rate_limit,
            rate_window_ms=int(self.settings.rate_window * 1000),
            # Twitch's exemptions: VIPs skip slow and subscribers-only mode,
            # moderators and the broadcaster every mode and the duplicate check.
            duplicate_window_ms=0 if role >= Role.MODERATOR else DUPLICATE_WINDOW_MS,
            slow_ms=state.settings["slow"] * 1000 if role < Role.VIP else 0,
            early_verdict=early_verdict(state, identity, role, only_emotes),
        )
        return Pending(index, item, identity, state, check, text, emotes, role, command)

    async def _run_command(self, identity: Identity, state: ChannelState, text: str) -> dict[str, Any]:
        self.metrics.incr("commands.received")
        try:
            outcome = await self.commands.run(identity, state, text)
            for message in outcome.broadcasts:
                await self.exchange.publish(message)
        except (ShardUnavailable, RemoteError):
            return self._rejection({"channel": state.name}, "msg_service_unavailable")
        self.metrics.incr(f"commands.{'done' if outcome.ok else 'refused'}")
        return outcome.answer(state.name)

    async def _check_unique(self, pending: list[Pending]) -> None:
        """Unique-chat mode: a message must not repeat one sent in the channel
        in the last hour. This costs a second round trip, to the channel's
        shard, and only while the mode is on."""
        for entry in pending:
            if entry.check.verdict != "ok" or not entry.state.settings["r9k"] or entry.role >= Role.MODERATOR:
                continue
            digest = hashlib.blake2b(entry.text.strip().lower().encode(), digest_size=12).hexdigest()
            key = channel_key(entry.state.name, f"r9k:{digest}")
            try:
                [fresh] = await pipeline_call(self.shards.for_key(key), "r9k", [("SET", key, "1", "NX", "EX", 3600)])
            except ShardUnavailable:
                entry.check.verdict = "msg_service_unavailable"
                continue
            if not fresh:
                entry.check.verdict = "msg_r9k"

    def _stamp(self, entry: Pending) -> dict[str, Any]:
        client_tags = entry.item.get("client_tags") or {}
        if not isinstance(client_tags, dict):
            client_tags = {}
        tags = stamp.privmsg_tags(
            entry.identity,
            entry.state,
            message_id=entry.check.member,
            sent_ms=int(time.time() * 1000),
            first_msg=entry.check.number == 1,
            client_tags={str(k): str(v) for k, v in client_tags.items()},
            color=entry.check.color,
            emotes=entry.emotes,
        )
        line = Message(
            source=twitch.user_source(entry.identity.login), command="PRIVMSG", params=[entry.state.name, entry.text]
        ).serialize_without_tags(trailing=True)
        return {
            "channel": entry.state.name,
            "command": "PRIVMSG",
            "tags": tags,
            "line": line,
            "origin": str(entry.item.get("origin", "")),
        }

    def _rejection(self, item: dict[str, Any], msg_id: str, **fill: Any) -> dict[str, Any]:
        self.metrics.incr(f"messages.rejected.{msg_id}")
        channel = str(item.get("channel", "")) if isinstance(item, dict) else ""
        return {"ok": False, "msg_id": msg_id, "text": twitch.notice_text(msg_id, channel=channel, **fill)}
