"""EventSub's durable state in Redis: WebSocket sessions, subscriptions, conduits.

A subscription is stored once (`{esub:<id>}`) and indexed by its session or
conduit, by its client (Helix lists by client) and by (client, user) (a revoked
token revokes them). Each channel counts its subscriptions per type
(`{c:<#chan>}:eventsub`), which clue's channel cache reads, so clue builds an
EventSub event only when someone listens; a change is announced on the channel
shard's invalidation channel like any channel setting.
"""
from __future__ import annotations

import time
import uuid
from collections.abc import Iterable

import msgspec

from clue.channels import INVALIDATE
from common.shards import Script, ShardSet, channel_key, pipeline_call
from common.wire import Handover, Subscription

# Twitch's limits for a WebSocket session, and a client's conduits.
MAX_PER_SESSION = 300
MAX_CONDUITS = 5
MAX_SHARDS = 20_000


class Stored(msgspec.Struct, omit_defaults=True):
    """A subscription with who made it."""

    subscription: Subscription
    client_id: str
    user_id: str = ""  # the user whose token made it (WebSocket transport)
    status: str = "enabled"


def session_key(session_id: str) -> str:
    return f"{{es:{session_id}}}"


def subscription_key(subscription_id: str) -> str:
    return f"{{esub:{subscription_id}}}"


def client_key(client_id: str) -> str:
    return f"{{ec:{client_id}}}:subs"


def grant_key(client_id: str, user_id: str) -> str:
    return f"{{eu:{client_id}:{user_id}}}:subs"


def conduit_key(conduit_id: str) -> str:
    return f"{{cd:{conduit_id}}}"


def conduits_key(client_id: str) -> str:
    return f"{{ec:{client_id}}}:conduits"


# A session changes hands in one step on its shard, so a connection's close and the reconnect that
# takes the session over elsewhere cannot interleave (the close would otherwise remove what the
# take just handed to the new connection). KEYS: the session, its subscriptions. ARGV: the owner.
# Both return the session's subscription ids (a take, and the handover a draining edge left), or nil.
TAKE_SCRIPT = Script("""
if redis.call('HGET', KEYS[1], 'status') ~= 'connected' then return nil end
local handover = redis.call('HGET', KEYS[1], 'handover') or ''
redis.call('HSET', KEYS[1], 'owner', ARGV[1])
redis.call('HDEL', KEYS[1], 'handover')
return {redis.call('SMEMBERS', KEYS[2]), handover}
""")
# KEYS: the session. ARGV: the owner, the handover. Kept for the next take if `owner` holds it: 1, else 0.
PARK_SCRIPT = Script("""
if redis.call('HGET', KEYS[1], 'status') ~= 'connected' or redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'handover', ARGV[2])
return 1
""")
CLOSE_SCRIPT = Script("""
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return nil end
redis.call('HSET', KEYS[1], 'status', 'websocket_disconnected')
redis.call('EXPIRE', KEYS[1], 3600)
local ids = redis.call('SMEMBERS', KEYS[2])
redis.call('DEL', KEYS[2])
return ids
""")

# A subscription joins its session only while the session is connected. KEYS: the session, its
# subscriptions. ARGV: the subscription id. Returns 1, or 0 for a session that is gone.
JOIN_SCRIPT = Script("""
if redis.call('HGET', KEYS[1], 'status') ~= 'connected' then return 0 end
redis.call('SADD', KEYS[2], ARGV[1])
return 1
""")

_stored = msgspec.json.Decoder(Stored)
_handover = msgspec.json.Decoder(Handover)
_encode = msgspec.json.encode


class EventSubStore:
    def __init__(self, shards: ShardSet) -> None:
        self._redis = shards

    async def _run(self, key: str, op: str, *commands: tuple) -> list:
        return await pipeline_call(self._redis.for_key(key), op, list(commands))

    # ---- sessions
    async def open_session(self, session_id: str, owner: str) -> None:
        key = session_key(session_id)
        await self._run(key, "eventsub_session", ("HSET", key, "status", "connected", "owner", owner,
                                                  "connected_at", str(time.time())))

    async def session(self, session_id: str) -> dict[str, str] | None:
        key = session_key(session_id)
        [found] = await self._run(key, "eventsub_session", ("HGETALL", key))
        return {k.decode(): v.decode() for k, v in found.items()} if found else None

    async def take_session(self, session_id: str, owner: str) -> tuple[list[Stored], Handover | None] | None:
        """The client reconnected to another connection (`owner`): it holds the session from now on.
        Returns its subscriptions and where a draining edge left it, or None if the session is not
        connected (closed, or never was)."""
        key = session_key(session_id)
        taken = await TAKE_SCRIPT.run(self._redis, "eventsub_session", [key, key + ":subs"], [owner])
        if taken is None:
            return None
        ids, raw = taken
        return await self._stored(ids), _handover.decode(raw) if raw else None

    async def park_session(self, session_id: str, owner: str, handover: Handover) -> bool:
        """A draining edge stopped delivering the session (`handover`) and is about to tell the
        client to reconnect: kept for the take. False if `owner` no longer holds the session."""
        key = session_key(session_id)
        return bool(await PARK_SCRIPT.run(self._redis, "eventsub_session", [key], [owner, _encode(handover)]))

    async def close_session(self, session_id: str, owner: str) -> list[Stored]:
        """The session's connection is gone: its WebSocket subscriptions go with it.
        Returns them (their channels' counts were lowered). Nothing, if `owner` no
        longer holds it (the client reconnected elsewhere)."""
        key = session_key(session_id)
        ids = await CLOSE_SCRIPT.run(self._redis, "eventsub_session", [key, key + ":subs"], [owner])
        return [found for sub_id in ids or () if (found := await self.remove(sub_id.decode())) is not None]

    async def session_subscriptions(self, session_id: str) -> list[Stored]:
        key = session_key(session_id)
        [ids] = await self._run(key, "eventsub_session", ("SMEMBERS", key + ":subs"))
        return await self._stored(ids or ())

    async def _stored(self, ids: Iterable[bytes]) -> list[Stored]:
        """The subscriptions these ids name that still exist."""
        return [found for sub_id in ids if (found := await self.get(sub_id.decode())) is not None]

    # ---- subscriptions
    async def get(self, subscription_id: str) -> Stored | None:
        key = subscription_key(subscription_id)
        [raw] = await self._run(key, "eventsub_read", ("GET", key))
        return _stored.decode(raw) if raw else None

    async def by_client(self, client_id: str, user_id: str | None = None) -> list[Stored]:
        key = grant_key(client_id, user_id) if user_id else client_key(client_id)
        [ids] = await self._run(key, "eventsub_read", ("SMEMBERS", key))
        found = [await self.get(sub_id.decode()) for sub_id in ids or ()]
        return sorted((stored for stored in found if stored is not None),
                      key=lambda stored: stored.subscription.created_at)

    async def add(self, stored: Stored) -> bool:
        """Store a subscription; False (and nothing kept) if its WebSocket session is gone. It joins
        its session last: a close that comes before finds nothing, one that comes after removes it whole."""
        sub = stored.subscription
        key = subscription_key(sub.id)
        await self._run(key, "eventsub_write", ("SET", key, _encode(stored)))
        await self._run(client_key(stored.client_id), "eventsub_write", ("SADD", client_key(stored.client_id), sub.id))
        if stored.user_id:
            grant = grant_key(stored.client_id, stored.user_id)
            await self._run(grant, "eventsub_write", ("SADD", grant, sub.id))
        await self._count(sub, +1)
        holder = self._holder(sub)
        if sub.transport.get("method") == "conduit":
            await self._run(holder, "eventsub_write", ("SADD", holder + ":subs", sub.id))
        elif not await JOIN_SCRIPT.run(self._redis, "eventsub_write", [holder, holder + ":subs"], [sub.id]):
            await self.remove(sub.id)
            return False
        return True

    async def remove(self, subscription_id: str) -> Stored | None:
        stored = await self.get(subscription_id)
        if stored is None:
            return None
        sub = stored.subscription
        await self._run(subscription_key(sub.id), "eventsub_write", ("DEL", subscription_key(sub.id)))
        await self._run(client_key(stored.client_id), "eventsub_write",
                        ("SREM", client_key(stored.client_id), sub.id))
        if stored.user_id:
            grant = grant_key(stored.client_id, stored.user_id)
            await self._run(grant, "eventsub_write", ("SREM", grant, sub.id))
        holder = self._holder(sub)
        await self._run(holder, "eventsub_write", ("SREM", holder + ":subs", sub.id))
        await self._count(sub, -1)
        return stored

    @staticmethod
    def _holder(sub: Subscription) -> str:
        if sub.transport.get("method") == "conduit":
            return conduit_key(sub.transport["conduit_id"])
        return session_key(sub.transport["session_id"])

    async def _count(self, sub: Subscription, delta: int) -> None:
        """Keep the channel's count per type, and tell every clue's cache."""
        key = channel_key(sub.channel, "eventsub")
        await self._run(key, "eventsub_count", ("HINCRBY", key, sub.type, delta),
                        ("PUBLISH", INVALIDATE, sub.channel))

    # ---- conduits
    async def conduits(self, client_id: str) -> list[dict]:
        [ids] = await self._run(conduits_key(client_id), "conduit_read", ("SMEMBERS", conduits_key(client_id)))
        found = []
        for conduit_id in sorted(item.decode() for item in ids or ()):
            conduit = await self.conduit(conduit_id)
            if conduit is not None:
                found.append(conduit)
        return found

    async def conduit(self, conduit_id: str) -> dict | None:
        key = conduit_key(conduit_id)
        [found] = await self._run(key, "conduit_read", ("HGETALL", key))
        if not found:
            return None
        fields = {k.decode(): v.decode() for k, v in found.items()}
        return {"id": conduit_id, "shard_count": int(fields["shard_count"]), "client_id": fields["client_id"]}

    async def create_conduit(self, client_id: str, shard_count: int) -> dict:
        conduit_id = str(uuid.uuid4())
        key = conduit_key(conduit_id)
        await self._run(key, "conduit_write", ("HSET", key, "client_id", client_id, "shard_count", shard_count))
        await self._run(conduits_key(client_id), "conduit_write", ("SADD", conduits_key(client_id), conduit_id))
        return {"id": conduit_id, "shard_count": shard_count}

    async def resize_conduit(self, conduit_id: str, shard_count: int) -> None:
        key = conduit_key(conduit_id)
        await self._run(key, "conduit_write", ("HSET", key, "shard_count", shard_count))
        stale = [str(shard) for shard in range(shard_count, MAX_SHARDS)]
        if stale:
            await self._run(key, "conduit_write", ("HDEL", key + ":shards", *stale))

    async def delete_conduit(self, client_id: str, conduit_id: str) -> None:
        key = conduit_key(conduit_id)
        [ids] = await self._run(key, "conduit_read", ("SMEMBERS", key + ":subs"))
        for sub_id in ids or ():
            await self.remove(sub_id.decode())
        await self._run(key, "conduit_write", ("DEL", key, key + ":shards", key + ":subs"))
        await self._run(conduits_key(client_id), "conduit_write", ("SREM", conduits_key(client_id), conduit_id))

    async def shards(self, conduit_id: str) -> dict[int, str]:
        """shard id → the session serving it."""
        key = conduit_key(conduit_id)
        [found] = await self._run(key, "conduit_read", ("HGETALL", key + ":shards"))
        return {int(k.decode()): v.decode() for k, v in (found or {}).items()}

    async def set_shard(self, conduit_id: str, shard: int, session_id: str) -> None:
        key = conduit_key(conduit_id)
        await self._run(key, "conduit_write", ("HSET", key + ":shards", shard, session_id))
        # And the other way: a session taken over after a reconnect goes on serving its shards.
        session = session_key(session_id)
        await self._run(session, "eventsub_session", ("HSET", session, f"shard:{conduit_id}", shard))

    async def session_shards(self, session_id: str) -> dict[str, int]:
        """conduit id → the shard this session serves."""
        found = await self.session(session_id) or {}
        return {key.removeprefix("shard:"): int(value) for key, value in found.items() if key.startswith("shard:")}

    async def conduit_subscriptions(self, conduit_id: str) -> list[Stored]:
        key = conduit_key(conduit_id)
        [ids] = await self._run(key, "conduit_read", ("SMEMBERS", key + ":subs"))
        return await self._stored(ids or ())
