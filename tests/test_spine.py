"""Two edges, one clue, one exchange, three Redis shards: the whole pipeline."""
from __future__ import annotations

import asyncio
import uuid

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from support import IrcClient, StatsdListener, running_cluster

from common.irc import parse
from common.tokens import stable_id

pytestmark = pytest.mark.asyncio(loop_scope="module")

TWITCH_PRIVMSG_TAGS = {
    "badge-info", "badges", "color", "display-name", "emotes", "first-msg", "flags", "id", "mod",
    "returning-chatter", "room-id", "subscriber", "tmi-sent-ts", "turbo", "user-id", "user-type",
}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def statsd():
    transport, listener = await asyncio.get_running_loop().create_datagram_endpoint(
        StatsdListener, local_addr=("127.0.0.1", 0)
    )
    listener.port = transport.get_extra_info("sockname")[1]
    yield listener
    transport.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cluster(tmp_path_factory, statsd):
    # A generous rate limit: the ordering test sends 100 messages per user.
    env = {"RATE_LIMIT": "1000", "STATSD_PORT": str(statsd.port)}
    async with running_cluster(tmp_path_factory.mktemp("spine"), edges=2, shards=3, env=env) as cluster:
        yield cluster


async def test_clients_on_two_edges_chat_with_full_twitch_tags(cluster):
    alice = await cluster.client("alice", edge=0, transport="tcp", channels=("#spine",))
    bob = await cluster.client("bob", edge=1, transport="ws", channels=("#spine",))
    alice_phone = await cluster.client("alice", edge=1, transport="tcp", channels=("#spine",))

    await alice.send("@client-nonce=n1;mod=1;badges=staff/1 PRIVMSG #spine :hello from edge A")
    got = await bob.expect_message("PRIVMSG", "hello from edge A")
    assert got.source == "alice!alice@alice.tmi.twitch.tv"
    assert TWITCH_PRIVMSG_TAGS <= set(got.tags)
    assert got.tags["display-name"] == "alice"
    assert got.tags["user-id"] == stable_id("alice")
    assert got.tags["room-id"] == stable_id("spine")
    assert got.tags["client-nonce"] == "n1"
    # Server-only tags cannot be set by the client.
    assert got.tags["mod"] == "0" and got.tags["badges"] == ""
    uuid.UUID(got.tags["id"])
    assert got.tags["tmi-sent-ts"].isdigit()
    # Alice's other connection sees it; the sending connection gets USERSTATE instead.
    await alice_phone.expect_message("PRIVMSG", "hello from edge A")
    userstate = parse(await alice.expect(r";id=.* USERSTATE #spine$"))
    assert userstate.tags["id"] == got.tags["id"]

    await bob.send("PRIVMSG #spine :hi alice, from edge B")
    await alice.expect_message("PRIVMSG", "hi alice, from edge B")
    assert not [m for m in alice.received("PRIVMSG") if m.params[-1] == "hello from edge A"]


async def test_every_receiver_sees_interleaved_senders_in_one_order(cluster):
    channel = "#order"
    senders = [
        await cluster.client(f"sender{i}", edge=i % 2, transport=("tcp", "ws")[i % 2], channels=(channel,))
        for i in range(3)
    ]
    receivers = [
        await cluster.client("viewer0", edge=0, channels=(channel,)),
        await cluster.client("viewer1", edge=1, transport="ws", channels=(channel,)),
        await cluster.client("viewer2", edge=1, channels=(channel,)),
    ]

    async def send_all(index: int, sender: IrcClient) -> None:
        for n in range(100):
            await sender.send(f"PRIVMSG {channel} :s{index}-{n}")
            if n % 10 == 9:
                await asyncio.sleep(0)  # let the other senders interleave

    await asyncio.gather(*(send_all(i, s) for i, s in enumerate(senders)))

    orders = await asyncio.gather(*(r.wait_for_texts(300, channel, timeout=20) for r in receivers))
    assert len(orders[0]) == 300
    assert orders[0] == orders[1] == orders[2]
    # Each sender's own messages keep the order they were sent in.
    for index in range(3):
        mine = [t for t in orders[0] if t.startswith(f"s{index}-")]
        assert mine == [f"s{index}-{n}" for n in range(100)]
    # Senders see everyone else's messages in that same order.
    for index, sender in enumerate(senders):
        others = [t for t in orders[0] if not t.startswith(f"s{index}-")]
        assert await sender.wait_for_texts(200, channel) == others


async def test_chat_state_lands_on_all_three_shards(cluster):
    viewer = await cluster.client("shardwatcher", edge=1, channels=("#shards",))
    users = [await cluster.client(f"chatter{i}", edge=i % 2, channels=("#shards",)) for i in range(24)]
    for i, user in enumerate(users):
        await user.send(f"PRIVMSG #shards :message {i}")
    await viewer.wait_for_texts({f"message {i}" for i in range(24)})
    # Each user's keys follow its hash tag to one of the three shards.
    assert len(cluster.redis_addresses) == 3
    for address in cluster.redis_addresses:
        host, port = address.split(":")
        client = aioredis.Redis(host=host, port=int(port))
        try:
            keys = [key async for key in client.scan_iter(match="{u:*")]
        finally:
            await client.aclose()
        assert keys, f"shard {address} holds no user state"


async def test_bad_input_gets_twitch_replies_and_harms_no_one(cluster):
    channel = "#rough"
    carol = await cluster.client("carol", edge=0, channels=(channel,))
    dave = await cluster.client("dave", edge=1, channels=(channel,))

    # A bad token: Twitch's NOTICE, then the connection closes.
    irc_port, _ = cluster.edge_addresses(0)
    intruder = await IrcClient.tcp(irc_port, "intruder")
    await intruder.send("PASS oauth:not-a-real-token", "NICK carol")
    await intruder.expect(r"^:tmi\.twitch\.tv NOTICE \* :Login authentication failed$")
    await asyncio.wait_for(intruder.closed.wait(), 5)
    await intruder.close()

    # PRIVMSG to a channel not joined is relayed, as on Twitch; its members get it.
    await carol.send("PRIVMSG #elsewhere :anyone?")
    await carol.expect(r" USERSTATE #elsewhere$")

    # An anonymous login may read but not talk.
    lurker = await cluster.client("justinfan12345", edge=0, channels=(channel,))
    await lurker.send(f"PRIVMSG {channel} :let me in")
    notice = parse(await lurker.expect(r" NOTICE "))
    assert notice.tags["msg-id"] == "msg_login_required"

    # An over-long line is refused without being buffered.
    await carol.send_raw(b"PRIVMSG " + channel.encode() + b" :" + b"x" * 12000 + b"\r\n")
    await carol.expect(r" 417 carol :Input line was too long$")

    # Malformed lines: tags with no command, a prefix with no command, a bad command.
    await carol.send("@a=b", ":someone", "PRIVMSG")
    await carol.expect(r"NOTICE \* :Malformed line ignored")
    await carol.expect(r"NOTICE \* :Malformed line ignored")
    await carol.expect(r" 411 carol :No recipient given")
    await carol.send("FROBNICATE now")
    await carol.expect(r" 421 carol FROBNICATE :Unknown command$")

    # Everyone is still connected and chat still flows both ways.
    await carol.ping_roundtrip()
    await lurker.ping_roundtrip()
    await carol.send(f"PRIVMSG {channel} :still here")
    await dave.expect_message("PRIVMSG", "still here")
    await lurker.expect_message("PRIVMSG", "still here")
    await dave.send(f"PRIVMSG {channel} :me too")
    await carol.expect_message("PRIVMSG", "me too")
    assert not [m for m in dave.received("PRIVMSG") if m.params[-1] in ("let me in", "anyone?")]


async def test_websocket_echoes_the_irc_subprotocol(cluster):
    _, ws_port = cluster.edge_addresses(1)
    client = await IrcClient.ws(ws_port, "ws-probe", subprotocols=["irc"])
    assert client.subprotocol == "irc"
    await client.send("CAP REQ :twitch.tv/tags", "NICK justinfan777")
    await client.expect(r" 376 justinfan777 ")
    await client.close()


async def test_statsd_metrics_from_every_service_for_one_message(cluster, statsd):
    sender = await cluster.client("metered", edge=0, channels=("#metrics",))
    viewer = await cluster.client("watcher", edge=1, channels=("#metrics",))
    statsd.metrics.clear()
    await sender.send("PRIVMSG #metrics :count me")
    await viewer.expect_message("PRIVMSG", "count me")
    await statsd.wait_for(
        {
            "chatd.edge.messages.received",
            "chatd.edge.messages.accepted",
            "chatd.edge.messages.delivered",
            "chatd.clue.messages.accepted",
            "chatd.clue.ingest",
            "chatd.exchange.messages.published",
            "chatd.exchange.deliver.messages",
        },
        patterns=(r"chatd\.clue\.redis\.127_0_0_1_\d+\.check",),  # a timer per Redis shard
    )
