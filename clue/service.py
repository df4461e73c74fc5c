"""The clue service: logins, joins and message ingestion over internal HTTP."""
from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import structlog
from aiohttp import web

from clue import stamp
from clue.channels import ChannelCache, ChannelState
from clue.config import ClueSettings
from clue.shards import ShardSet, ShardUnavailable
from clue.validation import Check, load_scripts, run_checks
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


class Rejected(Exception):
    def __init__(self, msg_id: str, **fill: Any) -> None:
        super().__init__(msg_id)
        self.msg_id = msg_id
        self.fill = fill


class ExchangePublisher:
    """Hands accepted messages to the exchange that owns their channel, batched."""

    def __init__(self, urls: list[str], token: str, metrics: Metrics, timeout: float) -> None:
        self._ring = Ring(urls)
        self._clients = {url: InternalClient(f"exchange:{url}", url, token, metrics, timeout=timeout) for url in urls}
        self._batchers = {url: Batcher(self._sender(self._clients[url])) for url in urls}

    @staticmethod
    def _sender(client: InternalClient):
        async def send(messages: list[dict[str, Any]]) -> list[int]:
            answer = await client.post("/v1/publish", {"messages": messages}, op="publish")
            return answer["seqs"]

        return send

    def publish(self, message: dict[str, Any]) -> asyncio.Future[int]:
        return self._batchers[self._ring.node_for(message["channel"])].submit(message)

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
        self.exchange = ExchangePublisher(
            settings.exchange_urls, settings.common.internal_token, metrics, settings.common.http_timeout
        )
        self.server = InternalServer(
            settings.common.internal_token,
            [
                web.post("/v1/login", self._on_login),
                web.post("/v1/join", self._on_join),
                web.post("/v1/messages", self._on_messages),
                web.get("/health", self._on_health),
            ],
        )
        self.addresses: dict[str, str] = {}

    async def start(self) -> None:
        await load_scripts(self.shards)
        self.channels.start()
        self.addresses["http"] = await self.server.start(self.settings.http_listen)

    async def stop(self) -> None:
        await self.server.stop()
        await self.channels.close()
        await self.exchange.close()
        await self.shards.close()

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
        user_state = stamp.user_state_tags(identity, state) if identity else {}
        return web.json_response({"ok": True, "room_state": state.room_state_tags(), "user_state": user_state})

    async def _on_messages(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        items = body.get("messages")
        if not isinstance(items, list):
            return json_error(400, "bad_request", "expected {messages: [...]}")
        started = time.perf_counter()
        results = await self.ingest(items)
        self.metrics.timing("ingest", (time.perf_counter() - started) * 1000)
        return web.json_response({"results": results})

    # ---- ingestion
    async def ingest(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Validate, stamp and publish a batch; one result per item, in order."""
        self.metrics.incr("messages.received", len(items))
        results: list[dict[str, Any] | None] = [None] * len(items)
        pending: list[tuple[int, dict[str, Any], Identity, ChannelState, Check]] = []
        for index, item in enumerate(items):
            try:
                identity, state, check = await self._prepare(item)
            except Rejected as rejected:
                results[index] = self._rejection(item, rejected.msg_id, **rejected.fill)
                continue
            pending.append((index, item, identity, state, check))

        await run_checks(self.shards, [entry[4] for entry in pending])

        publishing: list[tuple[int, asyncio.Future[int], dict[str, str]]] = []
        for index, item, identity, state, check in pending:
            if check.verdict != "ok":
                seconds = max(1, round(check.number / 1000)) if check.number else ""
                results[index] = self._rejection(item, check.verdict, seconds=seconds)
                continue
            message = self._stamp(item, identity, state, check)
            publishing.append((index, self.exchange.publish(message), stamp.user_state_tags(identity, state, check.member)))

        for index, future, user_state in publishing:
            try:
                await future
            except RemoteError:
                results[index] = self._rejection(items[index], "msg_service_unavailable")
                continue
            self.metrics.incr("messages.accepted")
            results[index] = {"ok": True, "id": user_state["id"], "user_state": user_state}
        return results  # type: ignore[return-value]

    async def _prepare(self, item: dict[str, Any]) -> tuple[Identity, ChannelState, Check]:
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
        check = Check(
            user_id=identity.user_id,
            channel=channel,
            text=text,
            member=str(uuid.uuid4()),
            rate_limit=self.settings.rate_limit,
            rate_window_ms=int(self.settings.rate_window * 1000),
        )
        return identity, state, check

    def _stamp(self, item: dict[str, Any], identity: Identity, state: ChannelState, check: Check) -> dict[str, Any]:
        client_tags = item.get("client_tags") or {}
        if not isinstance(client_tags, dict):
            client_tags = {}
        tags = stamp.privmsg_tags(
            identity,
            state,
            message_id=check.member,
            sent_ms=int(time.time() * 1000),
            first_msg=check.number == 1,
            client_tags={str(k): str(v) for k, v in client_tags.items()},
        )
        line = Message(
            source=twitch.user_source(identity.login), command="PRIVMSG", params=[state.name, item["text"]]
        ).serialize_without_tags()
        return {
            "channel": state.name,
            "command": "PRIVMSG",
            "tags": tags,
            "line": line,
            "origin": str(item.get("origin", "")),
        }

    def _rejection(self, item: dict[str, Any], msg_id: str, **fill: Any) -> dict[str, Any]:
        self.metrics.incr(f"messages.rejected.{msg_id}")
        channel = str(item.get("channel", "")) if isinstance(item, dict) else ""
        return {"ok": False, "msg_id": msg_id, "text": twitch.notice_text(msg_id, channel=channel, **fill)}
