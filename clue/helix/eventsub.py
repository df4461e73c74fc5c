"""Helix's EventSub endpoints: subscriptions (WebSocket and conduit transports)
and conduits with their shards.

A subscription is stored (clue.eventsub_store) and handed to the edge holding
its session as a control event on the session's own stream (`$<session id>`),
through the exchange like every other event; from then on that edge hears the
subscription's channel and turns its events into notifications.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from aiohttp import web

from clue.commands import Role, role_of
from clue.eventsub_store import (
    MAX_CONDUITS,
    MAX_PER_SESSION,
    MAX_SHARDS,
    EventSubStore,
    Stored,
)
from clue.helix.base import Call, HelixBase, HelixError, paginate
from clue.publisher import Exchanges
from common import twitch
from common.internal_http import ApiError, read_body, reply
from common.tokens import APP, USER
from common.twitch import rfc3339_seconds as rfc3339
from common.wire import (
    Control,
    Event,
    SessionRequest,
    SessionSubscriptions,
    Subscription,
)

SESSION_PREFIX = "$"  # a session's control stream: `$<session id>`
# What the Helix listing reports as the cost budget (chatd charges nothing).
MAX_TOTAL_COST = 10_000
GONE_SESSION = "The websocket transport session does not exist or has already disconnected"


def session_channel(session_id: str) -> str:
    return SESSION_PREFIX + session_id


@dataclass(frozen=True, slots=True)
class Kind:
    """A subscription type: its condition, the scopes its token needs, whose stream it hears."""

    condition: tuple[str, ...]
    scopes_any: tuple[str, ...] = ()
    reader_is_user: bool = False  # condition.user_id must be the token's user (the chat types)
    moderator: bool = False  # the token's user must moderate the broadcaster's channel
    stream: str = "broadcaster"  # broadcaster: its channel; user: the user's whisper inbox


CHAT = Kind(("broadcaster_user_id", "user_id"), ("user:read:chat", "user:bot"), reader_is_user=True)
KINDS: dict[str, Kind] = {
    "channel.chat.message": CHAT,
    "channel.chat.notification": CHAT,
    "channel.chat.clear": CHAT,
    "channel.chat.clear_user_messages": CHAT,
    "channel.chat.message_delete": CHAT,
    "channel.chat_settings.update": CHAT,
    "channel.ban": Kind(("broadcaster_user_id",), ("channel:moderate",), moderator=True),
    "channel.unban": Kind(("broadcaster_user_id",), ("channel:moderate",), moderator=True),
    "channel.moderator.add": Kind(("broadcaster_user_id",), ("moderation:read",), moderator=True),
    "channel.moderator.remove": Kind(("broadcaster_user_id",), ("moderation:read",), moderator=True),
    "channel.subscribe": Kind(("broadcaster_user_id",), ("channel:read:subscriptions",), moderator=True),
    "channel.cheer": Kind(("broadcaster_user_id",), ("bits:read",), moderator=True),
    "channel.raid": Kind(("to_broadcaster_user_id",)),
    "user.whisper.message": Kind(("user_id",), ("user:read:whispers", "user:manage:whispers"), stream="user"),
}


class EventSubEndpoints:
    def __init__(self, base: HelixBase, store: EventSubStore, exchanges: Exchanges) -> None:
        self.base = base
        self.store = store
        self.exchanges = exchanges

    def routes(self) -> list[web.RouteDef]:
        e = self.base.endpoint
        return [
            web.post("/helix/eventsub/subscriptions", e(self.subscribe)),
            web.get("/helix/eventsub/subscriptions", e(self.list_subscriptions)),
            web.delete("/helix/eventsub/subscriptions", e(self.unsubscribe)),
            web.get("/helix/eventsub/conduits", e(self.list_conduits, tokens=(APP,))),
            web.post("/helix/eventsub/conduits", e(self.create_conduit, tokens=(APP,))),
            web.patch("/helix/eventsub/conduits", e(self.update_conduit, tokens=(APP,))),
            web.delete("/helix/eventsub/conduits", e(self.delete_conduit, tokens=(APP,))),
            web.get("/helix/eventsub/conduits/shards", e(self.list_shards, tokens=(APP,))),
            web.patch("/helix/eventsub/conduits/shards", e(self.update_shards, tokens=(APP,))),
        ]

    async def _control(self, session_id: str, op: str, subscription: Subscription | None = None,
                       status: str = "") -> None:
        channel = session_channel(session_id)
        await self.exchanges.publish(Event(channel=channel, command="", line="",
                                           control=Control(op, subscription, status)))

    # ---- subscriptions
    async def subscribe(self, call: Call) -> web.Response:
        body = await call.body()
        kind_name, version = str(body.get("type", "")), str(body.get("version", ""))
        condition, transport = body.get("condition"), body.get("transport")
        kind = KINDS.get(kind_name)
        if kind is None:
            raise HelixError(400, f"The subscription type {kind_name!r} is not supported")
        if version != "1":
            raise HelixError(400, f"The version {version!r} of {kind_name} is not supported")
        if not isinstance(condition, dict) or not isinstance(transport, dict):
            raise HelixError(400, "condition and transport must be objects")
        condition = {key: str(value) for key, value in condition.items()}
        missing = [key for key in kind.condition if not condition.get(key)]
        if kind_name == "channel.raid" and condition.get("from_broadcaster_user_id"):
            missing = []
        if missing:
            raise HelixError(400, f"The condition is missing {', '.join(missing)}")
        channel = await self._authorize(call, kind_name, kind, condition)
        method = transport.get("method")
        created = rfc3339(time.time())
        if method == "websocket":
            if call.grant.kind != USER:
                raise HelixError(400, "A WebSocket transport needs a user access token")
            session_id = str(transport.get("session_id", ""))
            session = await self.store.session(session_id) if session_id else None
            if session is None or session.get("status") != "connected":
                raise HelixError(400, GONE_SESSION)
            held = await self.store.session_subscriptions(session_id)
            if len(held) >= MAX_PER_SESSION:
                raise HelixError(429, f"A WebSocket session holds at most {MAX_PER_SESSION} subscriptions")
            shown = {"method": "websocket", "session_id": session_id,
                     "connected_at": rfc3339(float(session["connected_at"]))}
            duplicates = held
        elif method == "conduit":
            if call.grant.kind != APP:
                raise HelixError(400, "A conduit transport needs an app access token")
            conduit = await self.store.conduit(str(transport.get("conduit_id", "")))
            if conduit is None or conduit["client_id"] != call.grant.client_id:
                raise HelixError(404, "The conduit was not found")
            shown = {"method": "conduit", "conduit_id": conduit["id"]}
            duplicates = await self.store.conduit_subscriptions(conduit["id"])
        else:
            raise HelixError(400, "The transport method must be websocket or conduit (chatd has no webhooks)")
        if any(d.subscription.type == kind_name and d.subscription.condition == condition for d in duplicates):
            raise HelixError(409, "subscription already exists")
        subscription = Subscription(id=str(uuid.uuid4()), type=kind_name, version=version, condition=condition,
                                    transport=shown, created_at=created, channel=channel,
                                    created_ms=int(time.time() * 1000))
        stored = Stored(subscription, client_id=call.grant.client_id, user_id=call.user_id or "")
        if not await self.store.add(stored):  # the session closed meanwhile
            raise HelixError(400, GONE_SESSION)
        await self._deliver_to(stored)
        total = len(await self.store.by_client(call.grant.client_id))
        return call.json({"data": [view(stored)], "total": total, "total_cost": 0,
                          "max_total_cost": MAX_TOTAL_COST}, status=202)

    async def _authorize(self, call: Call, name: str, kind: Kind, condition: dict[str, str]) -> str:
        """Check the token may have this subscription; the stream its events come through."""
        grant = call.grant
        if kind.scopes_any and grant.kind == USER and not any(grant.has(scope) for scope in kind.scopes_any):
            raise HelixError(403, f"subscription missing proper authorization: {name} needs one of "
                                  f"{', '.join(kind.scopes_any)}")
        if kind.reader_is_user and grant.kind == USER and condition["user_id"] != call.user_id:
            raise HelixError(403, "The user_id in the condition must be the token's user")
        if kind.stream == "user":
            if grant.kind == USER and condition["user_id"] != call.user_id:
                raise HelixError(403, "The user_id in the condition must be the token's user")
            return twitch.whisper_inbox((await self.base.user(condition["user_id"]))["login"])
        broadcaster_id = condition.get("broadcaster_user_id") or condition.get("to_broadcaster_user_id") \
            or condition["from_broadcaster_user_id"]
        state = await self.base.channel(broadcaster_id)
        if kind.reader_is_user and grant.kind == APP:
            reader = await self.base.user(condition["user_id"])
            await self.base.app_acts_for(call, condition["user_id"], ("user:read:chat",), broadcaster_id,
                                         role_of(reader["login"], state) >= Role.MODERATOR)
        if kind.moderator and grant.identity is not None and role_of(grant.identity.login, state) < Role.MODERATOR:
            raise HelixError(403, f"subscription missing proper authorization: {name} needs the broadcaster "
                                  "or one of its moderators")
        return state.name

    async def _deliver_to(self, stored: Stored) -> None:
        """Hand a new subscription to the session(s) that deliver it."""
        sub = stored.subscription
        if sub.transport["method"] == "websocket":
            await self._control(sub.transport["session_id"], "add", sub)
            return
        conduit = await self.store.conduit(sub.transport["conduit_id"])
        assert conduit is not None
        for shard, session_id in (await self.store.shards(conduit["id"])).items():
            await self._control(session_id, "add", shard_copy(sub, shard, conduit["shard_count"]))

    async def list_subscriptions(self, call: Call) -> web.Response:
        found = await self.store.by_client(call.grant.client_id, call.user_id)
        filters = {name: call.param(name, required=False) for name in ("status", "type", "user_id",
                                                                       "subscription_id")}
        found = [stored for stored in found if (not filters["status"] or stored.status == filters["status"])
                 and (not filters["type"] or stored.subscription.type == filters["type"])
                 and (not filters["user_id"] or filters["user_id"] in stored.subscription.condition.values())
                 and (not filters["subscription_id"] or stored.subscription.id == filters["subscription_id"])]
        page, pagination = paginate([view(stored) for stored in found], call)
        return call.json({"data": page, "total": len(found), "total_cost": 0, "max_total_cost": MAX_TOTAL_COST,
                          "pagination": pagination})

    async def unsubscribe(self, call: Call) -> web.Response:
        stored = await self.store.get(call.param("id"))
        if stored is None or stored.client_id != call.grant.client_id or (
                call.user_id is not None and stored.user_id and stored.user_id != call.user_id):
            raise HelixError(404, "The subscription was not found")
        await self.store.remove(stored.subscription.id)
        sub = stored.subscription
        if sub.transport["method"] == "websocket":
            await self._control(sub.transport["session_id"], "remove", sub)
        else:
            for shard, session_id in (await self.store.shards(sub.transport["conduit_id"])).items():
                await self._control(session_id, "remove", shard_copy(sub, shard, 1))
        return call.empty()

    # ---- sessions, for the edges that hold them (internal API)
    async def on_open_session(self, request: web.Request) -> web.Response:
        body = await read_body(request, SessionRequest)
        await self.store.open_session(body.session_id, body.owner)
        return reply(SessionSubscriptions([]))

    async def on_close_session(self, request: web.Request) -> web.Response:
        body = await read_body(request, SessionRequest)
        await self.store.close_session(body.session_id, body.owner)
        return reply(SessionSubscriptions([]))

    async def on_take_session(self, request: web.Request) -> web.Response:
        """A client reconnected (session_reconnect) to another edge: what the session holds."""
        body = await read_body(request, SessionRequest)
        taken = await self.store.take_session(body.session_id, body.owner)
        if taken is None:
            raise ApiError(404, "no such session")
        own, handover = taken
        held = [stored.subscription for stored in own]
        for conduit_id, shard in (await self.store.session_shards(body.session_id)).items():
            conduit = await self.store.conduit(conduit_id)
            if conduit is not None:
                held += [shard_copy(stored.subscription, shard, conduit["shard_count"])
                         for stored in await self.store.conduit_subscriptions(conduit_id)]
        return reply(SessionSubscriptions(held, handover))

    async def on_park_session(self, request: web.Request) -> web.Response:
        """A draining edge stopped delivering a session: where, for the edge that takes it over."""
        body = await read_body(request, SessionRequest)
        if body.handover is None:
            raise ApiError(400, "a park needs a handover")
        if not await self.store.park_session(body.session_id, body.owner, body.handover):
            raise ApiError(409, "the session is not held by this connection")
        return reply(SessionSubscriptions([]))

    async def revoke(self, client_id: str, user_id: str, status: str) -> None:
        """A user's authorization ended: their subscriptions are revoked, with a message saying so."""
        for stored in await self.store.by_client(client_id, user_id):
            await self.store.remove(stored.subscription.id)
            sub = stored.subscription
            if sub.transport["method"] == "websocket":
                await self._control(sub.transport["session_id"], "revoke", sub, status)

    # ---- conduits
    async def list_conduits(self, call: Call) -> web.Response:
        conduits = await self.store.conduits(call.grant.client_id)
        return call.json({"data": [{"id": c["id"], "shard_count": c["shard_count"]} for c in conduits]})

    async def _shard_count(self, call: Call, body: dict) -> int:
        raw = body.get("shard_count", call.param("shard_count", required=False))
        try:
            count = int(raw)
        except (TypeError, ValueError):
            raise HelixError(400, "Missing or invalid shard_count") from None
        if not 1 <= count <= MAX_SHARDS:
            raise HelixError(400, f"shard_count must be from 1 through {MAX_SHARDS}")
        return count

    async def create_conduit(self, call: Call) -> web.Response:
        count = await self._shard_count(call, await call.body())
        if len(await self.store.conduits(call.grant.client_id)) >= MAX_CONDUITS:
            raise HelixError(429, f"A client may have at most {MAX_CONDUITS} conduits")
        return call.json({"data": [await self.store.create_conduit(call.grant.client_id, count)]})

    async def _own_conduit(self, call: Call, conduit_id: str) -> dict:
        conduit = await self.store.conduit(conduit_id) if conduit_id else None
        if conduit is None or conduit["client_id"] != call.grant.client_id:
            raise HelixError(404, "The conduit was not found")
        return conduit

    async def update_conduit(self, call: Call) -> web.Response:
        body = await call.body()
        conduit = await self._own_conduit(call, str(body.get("id") or call.param("id", required=False)))
        count = await self._shard_count(call, body)
        await self.store.resize_conduit(conduit["id"], count)
        return call.json({"data": [{"id": conduit["id"], "shard_count": count}]})

    async def delete_conduit(self, call: Call) -> web.Response:
        conduit = await self._own_conduit(call, call.param("id"))
        await self.store.delete_conduit(call.grant.client_id, conduit["id"])
        return call.empty()

    async def list_shards(self, call: Call) -> web.Response:
        conduit = await self._own_conduit(call, call.param("conduit_id"))
        shards = await self.store.shards(conduit["id"])
        data = []
        for shard in range(conduit["shard_count"]):
            session_id = shards.get(shard)
            session = await self.store.session(session_id) if session_id else None
            status = session["status"] if session else "websocket_disconnected"
            transport = {"method": "websocket", "session_id": session_id or ""}
            if session:
                transport["connected_at"] = rfc3339(float(session["connected_at"]))
            data.append({"id": str(shard), "status": "enabled" if status == "connected" else status,
                         "transport": transport})
        wanted = call.param("status", required=False)
        page, pagination = paginate([d for d in data if not wanted or d["status"] == wanted], call)
        return call.json({"data": page, "pagination": pagination})

    async def update_shards(self, call: Call) -> web.Response:
        body = await call.body()
        conduit = await self._own_conduit(call, str(body.get("conduit_id") or call.param("conduit_id",
                                                                                         required=False)))
        shards, errors, data = body.get("shards"), [], []
        if not isinstance(shards, list) or not shards:
            raise HelixError(400, "shards must be a non-empty list")
        current = await self.store.shards(conduit["id"])
        subscriptions = await self.store.conduit_subscriptions(conduit["id"])
        for entry in shards:
            shard_id = str(entry.get("id", "")) if isinstance(entry, dict) else ""
            transport = entry.get("transport") if isinstance(entry, dict) else None
            if not shard_id.isdigit() or int(shard_id) >= conduit["shard_count"]:
                errors.append({"id": shard_id, "message": "The shard id is outside the conduit's range",
                               "code": "invalid_parameter"})
                continue
            if not isinstance(transport, dict) or transport.get("method") != "websocket":
                errors.append({"id": shard_id, "message": "The transport must be a websocket session (chatd has no "
                               "webhooks)", "code": "invalid_parameter"})
                continue
            session_id = str(transport.get("session_id", ""))
            session = await self.store.session(session_id)
            if session is None or session.get("status") != "connected":
                errors.append({"id": shard_id, "message": "The websocket session is not connected",
                               "code": "websocket_session_not_connected"})
                continue
            shard = int(shard_id)
            previous = current.get(shard)
            await self.store.set_shard(conduit["id"], shard, session_id)
            await self._control(session_id, "shard")
            for stored in subscriptions:
                if previous and previous != session_id:
                    await self._control(previous, "remove", shard_copy(stored.subscription, shard, 1))
                await self._control(session_id, "add", shard_copy(stored.subscription, shard,
                                                                  conduit["shard_count"]))
            data.append({"id": shard_id, "status": "enabled", "transport": {
                "method": "websocket", "session_id": session_id,
                "connected_at": rfc3339(float(session["connected_at"]))}})
        return call.json({"data": data, "errors": errors}, status=202)


def shard_copy(sub: Subscription, shard: int, shards: int) -> Subscription:
    """The subscription as one shard's session serves it."""
    return Subscription(id=sub.id, type=sub.type, version=sub.version, condition=sub.condition,
                        transport=sub.transport, created_at=sub.created_at, channel=sub.channel, shard=shard,
                        shards=shards, created_ms=sub.created_ms)


def view(stored: Stored) -> dict:
    """A subscription as Helix shows it."""
    sub = stored.subscription
    return {"id": sub.id, "status": stored.status, "type": sub.type, "version": sub.version,
            "condition": sub.condition, "created_at": sub.created_at, "transport": sub.transport, "cost": 0}
