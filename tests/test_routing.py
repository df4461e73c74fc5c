"""Channels routed to clusters, and a live move of a busy channel."""
from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from support import running_cluster

CHATD = str(Path(sys.executable).parent / "chatd")


async def chatd_route(cluster, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        CHATD, "route", *args, "--data-dir", str(cluster.data_dir),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, stderr.decode()
    return stdout.decode().strip()


async def holders(cluster, cluster_name: str, channel: str) -> list[str]:
    """The edges an exchange of `cluster_name` delivers `channel` to."""
    found = []
    async with aiohttp.ClientSession() as http:
        for url in cluster.cluster_exchange_urls[cluster_name]:
            async with http.get(f"{url}/v1/channels/{channel.lstrip('#')}",
                                headers={"Authorization": f"Bearer {cluster.internal_token}"}) as response:
                found += (await response.json())["edges"]
    return found


@pytest.mark.asyncio
async def test_route_table_sends_a_channel_to_its_cluster(tmp_path):
    async with running_cluster(tmp_path, edges=2, extra_clusters={"event": (1, 1)}) as cluster:
        assert await chatd_route(cluster, "get", "#hot") == "main"
        assert (await chatd_route(cluster, "set", "#hot", "event")).startswith("#hot event v")
        assert await chatd_route(cluster, "get", "hot") == "event"
        assert "#hot event" in await chatd_route(cluster, "list")

        viewer = await cluster.client("viewer", edge=0, channels=("#hot", "#calm"))
        talker = await cluster.client("talker", edge=1, channels=("#hot", "#calm"))
        assert len(await holders(cluster, "event", "#hot")) == 2
        assert await holders(cluster, "main", "#hot") == []
        assert len(await holders(cluster, "main", "#calm")) == 2
        for channel in ("#hot", "#calm"):
            await talker.send(f"PRIVMSG {channel} :hello {channel}")
            await viewer.wait_for_texts({f"hello {channel}"}, channel)


@pytest.mark.asyncio
async def test_live_move_under_steady_traffic_loses_and_repeats_nothing(tmp_path):
    env = {"RATE_LIMIT": "10000"}
    async with running_cluster(tmp_path, edges=2, env=env, extra_clusters={"event": (1, 1)}) as cluster:
        channel = "#tpp"
        viewers = [await cluster.client(f"viewer{edge}", edge=edge, channels=(channel,)) for edge in (0, 1)]
        senders = [await cluster.client(f"sender{edge}", edge=edge, channels=(channel,)) for edge in (0, 1)]
        accepted: list[str] = []
        stop = asyncio.Event()

        async def talk(index: int) -> None:
            sender = senders[index]
            for n in range(10_000):
                if stop.is_set():
                    return
                text = f"s{index} {n}"
                await sender.send(f"PRIVMSG {channel} :{text}")
                answer = await sender.expect(r";id=.* USERSTATE #tpp$| NOTICE #tpp ", timeout=10)
                if " USERSTATE " in answer:
                    accepted.append(text)
                await asyncio.sleep(0.01)

        traffic = [asyncio.ensure_future(talk(i)) for i in range(2)]
        await viewers[0].wait_for_texts(20, channel)
        moved_at = time.monotonic()
        await chatd_route(cluster, "set", channel, "event")
        # The move is done when both edges get the channel from the event cluster.
        while len(await holders(cluster, "event", channel)) < 2 or await holders(cluster, "main", channel):
            assert time.monotonic() - moved_at < 10, "the move did not finish"
            await asyncio.sleep(0.02)
        move_seconds = time.monotonic() - moved_at
        count_at_move = len(accepted)
        while len(accepted) < count_at_move + 60:
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*traffic)

        wanted = set(accepted)
        for viewer in viewers:
            received = await viewer.wait_for_texts(wanted, channel, timeout=15)
            assert len(received) == len(set(received)), "a message arrived twice"
            assert set(received) == wanted  # nothing lost, nothing that was refused
            for index in range(2):  # each sender's messages keep their order
                mine = [int(t.split()[1]) for t in received if t.startswith(f"s{index} ")]
                assert mine == sorted(mine)
        # Each sender heard the other one's messages too (its own are not echoed).
        for index, sender in enumerate(senders):
            others = {t for t in wanted if not t.startswith(f"s{index} ")}
            assert set(await sender.wait_for_texts(others, channel)) >= others
        print(f"live move took {move_seconds * 1000:.0f} ms; {len(wanted)} messages, none lost or repeated")


@pytest.mark.asyncio
async def test_whispers_reach_every_connection_of_the_target_on_any_edge(tmp_path):
    async with running_cluster(tmp_path, edges=2, extra_clusters={"group": (1, 1)}) as cluster:
        alice = await cluster.client("alice", edge=0, channels=("#lobby",))
        bob_desktop = await cluster.client("bob", edge=1)
        bob_phone = await cluster.client("bob", edge=0)
        carol = await cluster.client("carol", edge=1, channels=("#lobby",))
        # Whispers travel through the group cluster's exchange.
        assert len(await holders(cluster, "group", "@bob")) == 2

        await alice.send("PRIVMSG #jtv :/w bob meet me at noon")
        for connection in (bob_desktop, bob_phone):
            whisper = await connection.expect_message("WHISPER", "meet me at noon")
            assert whisper.source == "alice!alice@alice.tmi.twitch.tv" and whisper.params[0] == "bob"
            assert whisper.tags["display-name"] == "alice" and whisper.tags["thread-id"]
        await alice.send("PRIVMSG #lobby :/w carol psst")
        await carol.expect_message("WHISPER", "psst")
        assert not carol.received("PRIVMSG") and not alice.received("WHISPER")

        await alice.send("PRIVMSG #lobby :/w nobody_here hello?")
        assert "msg-id=whisper_invalid_login" in await alice.expect(r" NOTICE #lobby ")
        await alice.send("PRIVMSG #lobby :/w alice me")
        assert "msg-id=whisper_invalid_self" in await alice.expect(r" NOTICE #lobby ")
