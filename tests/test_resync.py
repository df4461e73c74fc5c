"""Subscriptions survive a restart of the exchange or of an edge."""
from __future__ import annotations

import asyncio
import itertools
import signal

import pytest
from support import IrcClient, running_cluster


async def chat_until_delivered(sender: IrcClient, receiver: IrcClient, channel: str, timeout: float = 15.0) -> float:
    """Send numbered messages until one arrives; returns how long that took."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    for n in itertools.count():
        text = f"probe {n}"
        await sender.send(f"PRIVMSG {channel} :{text}")
        try:
            await receiver.expect_message("PRIVMSG", text, timeout=0.5)
            return loop.time() - started
        except AssertionError:
            if loop.time() - started > timeout:
                raise


@pytest.mark.asyncio
async def test_edges_resubscribe_after_the_exchange_restarts(tmp_path):
    # A high limit: probes go out every half second until delivery resumes.
    async with running_cluster(tmp_path, edges=2, env={"RATE_LIMIT": "500"}) as cluster:
        alice = await cluster.client("alice", edge=0, channels=("#resync",))
        bob = await cluster.client("bob", edge=1, channels=("#resync",))
        await chat_until_delivered(alice, bob, "#resync")

        cluster.kill("exchange-0", signal.SIGKILL)
        await cluster.components["exchange-0"].process.wait()
        await cluster.restart("exchange-0")

        recovery = await chat_until_delivered(alice, bob, "#resync")
        assert recovery < 15
        await bob.send("PRIVMSG #resync :and back")
        await alice.expect_message("PRIVMSG", "and back")


@pytest.mark.asyncio
async def test_a_restarted_edge_subscribes_again(tmp_path):
    async with running_cluster(tmp_path, edges=2, env={"RATE_LIMIT": "500"}) as cluster:
        alice = await cluster.client("alice", edge=0, channels=("#again",))
        await cluster.client("bob", edge=1, channels=("#again",))

        await cluster.stop_component("edge-1")
        await cluster.restart("edge-1")
        bob = await cluster.client("bob", edge=1, channels=("#again",))
        await chat_until_delivered(alice, bob, "#again")
        await bob.send("PRIVMSG #again :hello again")
        await alice.expect_message("PRIVMSG", "hello again")


async def exchange_edges(cluster, channel: str) -> list[str]:
    import aiohttp

    url = f"{cluster.exchange_urls[0]}/v1/channels/{channel.lstrip('#')}"
    headers = {"Authorization": f"Bearer {cluster.internal_token}"}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        assert response.status == 200
        return (await response.json())["edges"]


async def wait_for_edges(cluster, channel: str, count: int, timeout: float = 10.0) -> list[str]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(edges := await exchange_edges(cluster, channel)) != count:
        assert loop.time() < deadline, f"{channel} still held by {edges}"
        await asyncio.sleep(0.05)
    return edges


@pytest.mark.asyncio
async def test_edge_subscribes_on_first_join_and_unsubscribes_on_last_part_or_disconnect(tmp_path):
    async with running_cluster(tmp_path, edges=2) as cluster:
        # The JOIN echo only comes once the exchange holds the subscription.
        first = await cluster.client("first", edge=0, channels=("#lifecycle",))
        assert len(await exchange_edges(cluster, "#lifecycle")) == 1
        second = await cluster.client("second", edge=0, channels=("#lifecycle",))
        other = await cluster.client("other", edge=1, channels=("#lifecycle",))
        assert len(await exchange_edges(cluster, "#lifecycle")) == 2

        await first.send("PART #lifecycle")
        await first.expect(r" PART #lifecycle$")
        await second.close()  # the last local user on edge 0 disconnects
        await wait_for_edges(cluster, "#lifecycle", 1)
        await other.send("PART #lifecycle")
        await wait_for_edges(cluster, "#lifecycle", 0)


@pytest.mark.asyncio
async def test_edge_pings_silent_clients_and_closes_those_that_stay_silent(tmp_path, reliability):
    env = {"EDGE_PING_INTERVAL": "1s", "EDGE_REGISTRATION_TIMEOUT": "2s"}
    async with running_cluster(tmp_path, edges=1, env=env) as cluster:
        lively = await cluster.client("lively", channels=("#alive",))
        sleepy = await cluster.client("sleepy", channels=("#alive",))
        irc_port, _ = cluster.edge_addresses(0)
        shy = await IrcClient.tcp(irc_port, "shy")  # connects, never registers

        await lively.expect(r"^PING :tmi\.twitch\.tv$", timeout=5)
        await lively.send("PONG :tmi.twitch.tv")
        await sleepy.expect(r"^PING :tmi\.twitch\.tv$", timeout=5)
        await sleepy.expect(r"NOTICE \* :Ping timeout$", timeout=5)
        await asyncio.wait_for(sleepy.closed.wait(), 5)
        await shy.expect(r"NOTICE \* :Registration timed out$", timeout=5)
        await asyncio.wait_for(shy.closed.wait(), 5)
        await shy.close()
        # A client that answers stays connected.
        await lively.expect(r"^PING :tmi\.twitch\.tv$", timeout=5)
        await lively.send("PONG :tmi.twitch.tv")
        await lively.ping_roundtrip()
        reliability("A client never registers, or stops answering PING",
                    "`NOTICE * :Registration timed out` / `Ping timeout`, then the connection closes",
                    "EDGE_REGISTRATION_TIMEOUT (10 s) / twice EDGE_PING_INTERVAL (60 s); 2 s and 1 s in the test",
                    "0")


@pytest.mark.asyncio
async def test_a_stopping_edge_tells_clients_to_reconnect(tmp_path):
    async with running_cluster(tmp_path, edges=1) as cluster:
        client = await cluster.client("leaver", channels=("#bye",))
        ws_client = await cluster.client("wsleaver", transport="ws", channels=("#bye",))
        await cluster.stop_component("edge-0")
        await client.expect(r"^:tmi\.twitch\.tv RECONNECT$")
        await ws_client.expect(r"^:tmi\.twitch\.tv RECONNECT$")
        await asyncio.wait_for(client.closed.wait(), 5)
