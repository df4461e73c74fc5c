"""Clue's checks with Twitch's default limits: rate limit, duplicates, bans."""
from __future__ import annotations

import pytest
import pytest_asyncio
from support import running_cluster

from common.irc import parse

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cluster(tmp_path_factory):
    async with running_cluster(tmp_path_factory.mktemp("limits"), edges=2, shards=3) as cluster:
        yield cluster


async def notice_id(client) -> str:
    return parse(await client.expect(r" NOTICE #")).tags["msg-id"]


async def test_rate_limited_message_is_refused_and_reaches_nobody(cluster):
    channel = "#busy"
    spammer = await cluster.client("spammer", edge=0, channels=(channel,))
    viewer = await cluster.client("viewer", edge=1, channels=(channel,))
    neighbour = await cluster.client("neighbour", edge=0, channels=(channel,))

    await spammer.send(*(f"PRIVMSG {channel} :line {n}" for n in range(21)))
    assert await notice_id(spammer) == "msg_ratelimit"
    await neighbour.send(f"PRIVMSG {channel} :marker")
    texts = await viewer.wait_for_texts({"marker"} | {f"line {n}" for n in range(20)}, channel)
    # Channel order is total: anything delivered would have arrived before the marker.
    assert "line 20" not in texts
    assert "line 20" not in neighbour.texts(channel)
    assert len(spammer.received("NOTICE")) == 1


async def test_duplicate_within_30s_is_refused_and_reaches_nobody(cluster):
    channel = "#echo"
    parrot = await cluster.client("parrot", edge=0, channels=(channel,))
    viewer = await cluster.client("listener", edge=1, channels=(channel,))

    await parrot.send(f"PRIVMSG {channel} :same words")
    await viewer.expect_message("PRIVMSG", "same words")
    await parrot.send(f"PRIVMSG {channel} :same words")
    assert await notice_id(parrot) == "msg_duplicate"
    await parrot.send(f"PRIVMSG {channel} :new words")
    texts = await viewer.wait_for_texts({"new words"}, channel)
    assert texts == ["same words", "new words"]


async def test_banned_user_is_refused_until_unbanned(cluster):
    channel = "#strict"
    owner = await cluster.client("strict", edge=0, channels=(channel,))
    troll = await cluster.client("troll", edge=0, channels=(channel,))
    viewer = await cluster.client("witness", edge=1, channels=(channel,))
    await owner.send(f"PRIVMSG {channel} :/ban troll")
    await troll.expect(r" CLEARCHAT #strict :troll$")
    await troll.send(f"PRIVMSG {channel} :you can't stop me")
    assert await notice_id(troll) == "msg_banned"
    await owner.send(f"PRIVMSG {channel} :/unban troll")
    await owner.expect(r"msg-id=unban_success")
    await troll.send(f"PRIVMSG {channel} :I'm sorry")
    texts = await viewer.wait_for_texts({"I'm sorry"}, channel)
    assert texts == ["I'm sorry"]


async def test_message_over_500_characters_is_refused(cluster):
    channel = "#wordy"
    writer = await cluster.client("novelist", edge=0, channels=(channel,))
    viewer = await cluster.client("reader", edge=1, channels=(channel,))
    await writer.send(f"PRIVMSG {channel} :{'é' * 501}")
    assert await notice_id(writer) == "msg_too_long"
    await writer.send(f"PRIVMSG {channel} :{'é' * 500}")
    assert await viewer.wait_for_texts(1, channel) == ["é" * 500]
