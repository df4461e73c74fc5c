"""Delivery you can trust, with real processes: nothing accepted is lost for
clients that stay connected, nothing refused is delivered, each message is
shown once and in one order — across a killed exchange, a forgotten edge, a
burst bigger than a delivery request, a hung Redis shard and a dead clue."""
from __future__ import annotations

import asyncio
import re
import signal
import time
import uuid

import aiohttp
import pytest
from support import IrcClient, running_cluster

from common import wire
from common.irc import parse
from common.ring import Ring
from common.tokens import stable_id


async def submit(client: IrcClient, channel: str, text: str, timeout: float = 20.0) -> str:
    """Send one message and wait for its outcome: "accepted" or the refusal's msg-id."""
    await client.send(f"PRIVMSG {channel} :{text}")
    line = await client.expect(rf" USERSTATE {re.escape(channel)}$| NOTICE {re.escape(channel)} ", timeout)
    return "accepted" if " USERSTATE " in line else parse(line).tags.get("msg-id", "?")


class Chatter:
    """Sends numbered messages one at a time and remembers each one's outcome."""

    def __init__(self, client: IrcClient, channel: str, prefix: str) -> None:
        self.client, self.channel, self.prefix = client, channel, prefix
        self.outcomes: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def start(self, pause: float = 0.01) -> None:
        async def run() -> None:
            n = 0
            while not self._stop.is_set():
                text = f"{self.prefix} {n}"
                self.outcomes[text] = await submit(self.client, self.channel, text)
                n += 1
                await asyncio.sleep(pause)

        self._task = asyncio.get_running_loop().create_task(run())

    async def stop(self) -> None:
        self._stop.set()
        assert self._task is not None
        await asyncio.wait_for(self._task, 30)

    @property
    def accepted(self) -> list[str]:
        return [text for text, outcome in self.outcomes.items() if outcome == "accepted"]

    @property
    def refused(self) -> list[str]:
        return [text for text, outcome in self.outcomes.items() if outcome != "accepted"]


async def barrier(sender: IrcClient, viewers: list[IrcClient], channel: str) -> None:
    """A marker that travels the same pipeline: once every viewer has it, everything
    accepted before it has had its chance to arrive."""
    marker = f"marker {uuid.uuid4().hex[:8]}"
    assert await submit(sender, channel, marker) == "accepted"
    for viewer in viewers:
        await viewer.wait_for_texts({marker}, channel, timeout=20)


def assert_exactly_once_in_order(viewer: IrcClient, channel: str, chatters: list[Chatter]) -> None:
    texts = viewer.texts(channel)
    for chatter in chatters:
        mine = [text for text in texts if text.startswith(chatter.prefix + " ")]
        assert mine == chatter.accepted, (viewer.name, chatter.prefix,
                                          sorted(set(chatter.accepted) - set(mine))[:5],
                                          sorted(set(mine) - set(chatter.accepted))[:5])
        assert not set(mine) & set(chatter.refused)


async def wait_until(condition, what: str, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"waited {timeout} s for {what}"
        await asyncio.sleep(0.02)


async def get_json(url: str, token: str | None = None) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as response:
        return await response.json()


@pytest.mark.asyncio
async def test_an_exchange_killed_mid_traffic_loses_nothing_for_clients_that_stayed(tmp_path, reliability):
    env = {"RATE_LIMIT": "100000", "RATE_WINDOW": "1s"}
    async with running_cluster(tmp_path, edges=2, env=env) as cluster:
        channel = "#phoenix"
        viewers = [await cluster.client("tcp_viewer", edge=0, channels=(channel,)),
                   await cluster.client("ws_viewer", edge=1, transport="ws", channels=(channel,))]
        chatters = [Chatter(await cluster.client(f"talker{i}", edge=i), channel, f"talker{i}") for i in range(2)]
        for chatter in chatters:
            chatter.start()
        await wait_until(lambda: len(chatters[0].accepted) >= 20, "traffic to flow")

        cluster.kill("exchange-0", signal.SIGKILL)
        await cluster.components["exchange-0"].process.wait()
        killed = time.monotonic()
        await cluster.restart("exchange-0")
        # Chat resumes on its own once the edges have re-subscribed.
        before = len(chatters[0].accepted)
        await wait_until(lambda: len(chatters[0].accepted) >= before + 50, "chat to resume")
        resumed = time.monotonic() - killed
        for chatter in chatters:
            await chatter.stop()
        await barrier(chatters[0].client, viewers, channel)
        for viewer in viewers:
            assert_exactly_once_in_order(viewer, channel, chatters)
        accepted = sum(len(c.accepted) for c in chatters)
        refused = sum(len(c.refused) for c in chatters)
        health = [await get_json(cluster.components[f"edge-{i}"].addresses["http"] + "/health") for i in range(2)]
        assert all(h["sequence_gaps"] == 0 for h in health), health
        reliability("The exchange dies (SIGKILL) under steady chat and restarts",
                    f"{refused} messages sent while it was down were refused with msg_service_unavailable; "
                    "edges re-subscribe on its new boot id and are replayed what it ordered before they did, and "
                    "what its last boot ordered but never delivered comes from the clues that published it",
                    f"chat accepted again {resumed:.1f} s after the kill (restart included)",
                    f"0 of {accepted} accepted")


@pytest.mark.asyncio
async def test_a_forgotten_edge_comes_back_and_is_replayed_what_it_missed(tmp_path, reliability):
    # Short delivery timeouts so the exchange gives up on a frozen edge quickly.
    env = {"RATE_LIMIT": "100000", "RATE_WINDOW": "1s", "HTTP_TIMEOUT": "500ms"}
    async with running_cluster(tmp_path, edges=2, env=env) as cluster:
        channels = [f"#lost{i}" for i in range(4)]
        sender = await cluster.client("lostsender", edge=0)
        viewer = await cluster.client("lostviewer", edge=1, channels=tuple(channels))
        exchange = cluster.exchange_urls[0]
        token = cluster.internal_token

        async def holders(channel: str) -> list[str]:
            return (await get_json(f"{exchange}/v1/channels/{channel.lstrip('#')}", token))["edges"]

        assert all([len(await holders(channel)) == 1 for channel in channels])
        cluster.kill("edge-1", signal.SIGSTOP)
        try:
            sent: list[str] = []
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            # Chat until the exchange has given up on the frozen edge in every channel.
            while any([await holders(channel) for channel in channels]):
                assert loop.time() < deadline, "the exchange never forgot the frozen edge"
                for channel in channels:
                    text = f"while forgotten {len(sent)}"
                    assert await submit(sender, channel, text) == "accepted"
                    sent.append(text)
        finally:
            cluster.kill("edge-1", signal.SIGCONT)
        for channel in channels:
            await barrier(sender, [viewer], channel)
            received = [t for t in viewer.texts(channel) if t.startswith("while forgotten")]
            assert received == [t for i, t in enumerate(sent) if i % 4 == channels.index(channel)]
        assert all([len(await holders(channel)) == 1 for channel in channels])
        reliability("An edge stops answering (SIGSTOP) until the exchange forgets it, then comes back",
                    "its clients stay connected; on its next heartbeat it re-subscribes every channel with how far "
                    "each got, and the exchange replays the rest from its history",
                    f"{len(sent)} messages in 4 channels sent while it was forgotten, all shown after it resumed",
                    "0")


def exchange_rss_kib(cluster) -> int:
    pid = cluster.components["exchange-0"].process.pid
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


@pytest.mark.asyncio
async def test_exchange_state_stays_bounded_while_channels_come_and_go(tmp_path):
    env = {"EXCHANGE_CHANNEL_IDLE": "1s", "RATE_LIMIT": "1000"}
    async with running_cluster(tmp_path, edges=1, env=env) as cluster:
        kept = "#kept"
        moderator = await cluster.client("kept", channels=(kept,))  # the broadcaster
        viewer = await cluster.client("keptviewer", channels=(kept,))
        old = await cluster.client("keptsender", channels=(kept,))
        await old.send(f"PRIVMSG {kept} :said before the churn")
        said = await viewer.expect_message("PRIVMSG", "said before the churn")

        exchange = cluster.exchange_urls[0]
        headers = {"Authorization": f"Bearer {cluster.internal_token}"}
        rss: dict[int, int] = {}
        async with aiohttp.ClientSession(headers=headers) as http:
            for start in range(0, 100_000, 2_000):
                batch = wire.PublishBatch([
                    wire.Event(channel=f"#churn{n}", command="NOTICE", line=f":tmi.twitch.tv NOTICE #churn{n} :hi")
                    for n in range(start, start + 2_000)
                ])
                async with http.post(f"{exchange}/v1/publish", data=wire.encode(batch)) as response:
                    assert response.status == 200
                if start + 2_000 in (20_000, 50_000, 100_000):
                    rss[start + 2_000] = exchange_rss_kib(cluster)
                await asyncio.sleep(0.05)  # the idle sweep (every 0.5 s here) runs between batches
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while (await get_json(f"{exchange}/health"))["channels"] > 10:
            assert loop.time() < deadline, "idle channels were never forgotten"
            await asyncio.sleep(0.1)
        growth = rss[100_000] - rss[50_000]
        print(f"exchange RSS after 20k / 50k / 100k channels: {rss} KiB")
        assert growth < 8 * 1024, rss  # flat once the sweeps keep up: twice the channels, not twice the memory
        # The channel that had subscribers kept its order and history: /delete still finds the old message.
        await moderator.send(f"PRIVMSG {kept} :/delete {said.tags['id']}")
        assert (await viewer.expect_message("CLEARMSG", "said before the churn")).tags["login"] == "keptsender"
        await old.send(f"PRIVMSG {kept} :and after")
        await viewer.expect_message("PRIVMSG", "and after")


def user_shard(cluster, login: str) -> str:
    return Ring(cluster.redis_addresses).node_for(f"{{u:{stable_id(login)}}}:rate")


@pytest.mark.asyncio
async def test_a_message_refused_for_a_timeout_does_not_count_against_its_sender(tmp_path, reliability):
    env = {"CACHE_TIMEOUT": "100ms", "RATE_LIMIT": "2", "RATE_WINDOW": "30s"}
    async with running_cluster(tmp_path, edges=1, shards=3, env=env) as cluster:
        channel = "#patience"
        viewer = await cluster.client("patient_viewer", channels=(channel,))
        login = next(f"patient{n}" for n in range(500) if user_shard(cluster, f"patient{n}") ==
                     cluster.redis_addresses[2])
        sender = await cluster.client(login)
        assert await submit(sender, channel, "warm the channel cache") == "accepted"

        cluster.kill("redis-2", signal.SIGSTOP)  # hung, not dead: its connections stay open
        try:
            started = time.monotonic()
            assert await submit(sender, channel, "same words") == "msg_service_unavailable"
            refused_after = time.monotonic() - started
        finally:
            cluster.kill("redis-2", signal.SIGCONT)
        # The script reached Redis after its deadline: nothing was charged.
        assert await submit(sender, channel, "same words") == "accepted"  # not msg_duplicate
        assert await submit(sender, channel, "more words") == "msg_ratelimit"  # 2 of 2 used: the refusal took none
        texts = await viewer.wait_for_texts({"same words"}, channel)
        assert texts.count("same words") == 1
        reliability("A Redis shard hangs (SIGSTOP) while a message is checked",
                    f"its user is told msg_service_unavailable after {refused_after * 1000:.0f} ms (CACHE_TIMEOUT "
                    "100 ms); the check's deadline is inside the script, so the late call charges nothing",
                    "the same message sent again is accepted (no duplicate, no rate slot used)", "0")


@pytest.mark.asyncio
async def test_a_burst_bigger_than_a_delivery_request_reaches_a_frozen_edge_whole(tmp_path):
    env = {"RATE_LIMIT": "100000", "RATE_WINDOW": "1s", "EDGE_SEND_BUFFER": str(64 * 1024 * 1024)}
    async with running_cluster(tmp_path, edges=2, env=env) as cluster:
        channel = "#emoji"
        sender = await cluster.client("emojisender", edge=0)
        viewer = await cluster.client("emojiviewer", edge=1, channels=(channel,))
        cluster.kill("edge-1", signal.SIGSTOP)
        try:
            count, face = 5000, "😀" * 450  # ~3.6 KB per event on the wire: 18 MB, over the edge's 16 MiB limit
            for start in range(0, count, 250):
                await sender.send(*(f"PRIVMSG {channel} :{n} {face}" for n in range(start, start + 250)))
            answered = 0
            while answered < count:
                await sender.expect(r" USERSTATE #emoji$")
                answered += 1
        finally:
            cluster.kill("edge-1", signal.SIGCONT)
        texts = await viewer.wait_for_texts(count, channel, timeout=60)
        assert [int(text.split()[0]) for text in texts] == list(range(count))


@pytest.mark.asyncio
async def test_a_killed_clue_never_leaves_a_sender_wrong(tmp_path, reliability):
    env = {"RATE_LIMIT": "100000", "RATE_WINDOW": "1s"}
    async with running_cluster(tmp_path, edges=2, clues=2, env=env) as cluster:
        channel = "#failover"
        viewer = await cluster.client("failviewer", edge=1, channels=(channel,))
        ring = Ring(cluster.clue_urls)
        login = next(f"failer{n}" for n in range(500) if ring.node_for(f"failer{n}") == cluster.clue_urls[0])
        chatter = Chatter(await cluster.client(login, edge=0), channel, login)
        chatter.start(pause=0.0)
        await wait_until(lambda: len(chatter.outcomes) >= 100, "100 messages")
        cluster.kill("clue-0", signal.SIGKILL)
        in_flight = len(chatter.outcomes)
        await wait_until(lambda: len(chatter.outcomes) >= in_flight + 100, "chat to go on through the other clue")
        await chatter.stop()
        await barrier(chatter.client, [viewer], channel)
        assert_exactly_once_in_order(viewer, channel, [chatter])
        reliability("A clue dies (SIGKILL) under one sender's steady chat",
                    "the message in flight is sent again with the same id to the other clue (or settled with the "
                    f"exchange); {len(chatter.refused)} refused", "the next message goes through the other clue",
                    f"0 of {len(chatter.accepted)} accepted; no refused message delivered")
