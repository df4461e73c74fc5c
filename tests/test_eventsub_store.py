"""EventSub sessions change hands in one step on their shard: the old connection's close, the
reconnect that takes the session over and a new subscription never leave it half one and half
the other (real Redis, the store's own calls raced against each other)."""
from __future__ import annotations

import asyncio
import itertools

from support import redis_shards

from clue.eventsub_store import EventSubStore, Stored
from common.shards import ShardSet, channel_key, pipeline_call
from common.wire import Handover, Position, Subscription

ROUNDS = 60
CHANNEL = "#racing"


def subscription(session_id: str, number: int) -> Stored:
    return Stored(Subscription(
        id=f"{session_id}-sub{number}", type="channel.chat.message", version="1",
        condition={"broadcaster_user_id": "1", "user_id": "2"},
        transport={"method": "websocket", "session_id": session_id}, created_at="", channel=CHANNEL),
        client_id="racer", user_id="2")


async def counted(shards: ShardSet) -> int:
    """The channel's count of chat-message listeners, which clue's channel cache reads."""
    key = channel_key(CHANNEL, "eventsub")
    [count] = await pipeline_call(shards.for_key(key), "test", [("HGET", key, "channel.chat.message")])
    return int(count or 0)


async def test_a_close_racing_a_take_leaves_the_session_whole_with_one_of_them(tmp_path):
    async with redis_shards(tmp_path) as shards:
        store = EventSubStore(shards)
        outcomes: set[str] = set()
        live = 0
        for number, take_first in zip(range(ROUNDS), itertools.cycle((True, False))):
            session_id = f"race{number}"
            await store.open_session(session_id, "old")
            first = subscription(session_id, 0)
            assert await store.add(first)
            take, close = store.take_session(session_id, "new"), store.close_session(session_id, "old")
            if take_first:
                taken, closed = await asyncio.gather(take, close)
            else:
                closed, taken = await asyncio.gather(close, take)
            session = await store.session(session_id)
            assert session is not None
            if taken is None:  # the close came first: the reconnect finds no session (4007), nothing is left
                outcomes.add("closed")
                assert session["status"] == "websocket_disconnected"
                assert [stored.subscription.id for stored in closed] == [first.subscription.id]
                assert await store.get(first.subscription.id) is None
                assert not await store.add(subscription(session_id, 1))  # too late to subscribe
            else:  # the take came first: the new connection holds the session and all of it
                outcomes.add("taken")
                assert (session["status"], session["owner"]) == ("connected", "new") and closed == []
                assert [stored.subscription.id for stored in taken[0]] == [first.subscription.id]
                assert [s.subscription.id for s in await store.session_subscriptions(session_id)] == \
                    [first.subscription.id]
                live += 1
            assert await counted(shards) == live  # the channel's count of listeners agrees
        assert outcomes == {"closed", "taken"}


async def test_a_subscription_made_while_its_session_closes_is_kept_whole_or_not_at_all(tmp_path):
    async with redis_shards(tmp_path) as shards:
        store = EventSubStore(shards)
        for number in range(ROUNDS):
            session_id = f"sub{number}"
            await store.open_session(session_id, "owner")
            stored = subscription(session_id, 0)
            added, closed = await asyncio.gather(store.add(stored), store.close_session(session_id, "owner"))
            kept = await store.get(stored.subscription.id)
            # Added and then removed by the close, or refused: never left behind a closed session.
            assert kept is None, (added, closed)
            assert await store.session_subscriptions(session_id) == []
            assert await counted(shards) == 0


async def test_a_handover_is_kept_for_the_next_take_only_from_the_connection_that_holds_the_session(tmp_path):
    async with redis_shards(tmp_path) as shards:
        store = EventSubStore(shards)
        await store.open_session("parked", "old")
        handover = Handover(1_700_000_000_000, {CHANNEL: Position("boot", 1, 42)})
        assert not await store.park_session("parked", "someone else", handover)
        assert await store.park_session("parked", "old", handover)
        assert await store.take_session("parked", "new") == ([], handover)
        assert await store.take_session("parked", "newer") == ([], None)  # a handover serves one take
        assert not await store.park_session("parked", "old", handover)  # the old connection holds it no more
