"""Faults with real processes: a client that stops reading, a Redis shard that dies."""
from __future__ import annotations

import asyncio
import signal
import socket
import time

import aiohttp
import pytest
from support import running_cluster

from common.ring import Ring


async def edge_connections(cluster, edge: int = 0) -> int:
    async with aiohttp.ClientSession() as http, http.get(
        cluster.components[f"edge-{edge}"].addresses["http"] + "/health"
    ) as response:
        return (await response.json())["connections"]


@pytest.mark.asyncio
async def test_a_client_that_stops_reading_is_cut_off_and_others_keep_their_rate(tmp_path, reliability):
    env = {"EDGE_SEND_BUFFER": "65536", "RATE_LIMIT": "100000", "RATE_LIMIT_PRIVILEGED": "100000"}
    async with running_cluster(tmp_path, edges=1, env=env) as cluster:
        channel = "#firehose"
        sender = await cluster.client("hoser", channels=(channel,))
        reader = await cluster.client("keeper", channels=(channel,))

        async def blast(count: int, tag: str) -> float:
            """Send `count` long messages; the reading client's receive rate."""
            before = len(reader.lines)
            started = time.monotonic()
            for first in range(0, count, 200):
                await sender.send(*(f"PRIVMSG {channel} :{tag} {n} {'x' * 400}" for n in range(first, first + 200)))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while len(reader.lines) - before < count:  # counting lines: parsing 10,000 would dominate
                assert loop.time() < deadline, f"{len(reader.lines) - before} of {count} arrived"
                await asyncio.sleep(0.05)
            return count / (time.monotonic() - started)

        baseline = await blast(12000, "before")
        # A client that joins, then never reads again, with a small receive buffer.
        irc_port, _ = cluster.edge_addresses(0)
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(("127.0.0.1", irc_port))
        stuck.sendall(b"NICK justinfan999\r\nJOIN #firehose\r\n")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while await edge_connections(cluster) < 3:
            assert loop.time() < deadline
            await asyncio.sleep(0.05)

        with_stuck = await blast(12000, "during")  # more than the kernel buffers (4 MB) can hide
        deadline = loop.time() + 10
        while await edge_connections(cluster) > 2:  # the stuck client was cut off
            assert loop.time() < deadline, "the client that stopped reading is still connected"
            await asyncio.sleep(0.05)
        stuck.close()
        print(f"delivery rate to a reading client: {baseline:.0f}/s alone, {with_stuck:.0f}/s beside a stuck one")
        reliability("A client stops reading", "it is cut off once its send buffer (EDGE_SEND_BUFFER, 64 KiB in "
                    "the test) is full; everyone else keeps chatting",
                    f"other clients' rate: {baseline:.0f}/s without it, {with_stuck:.0f}/s beside it",
                    "0 for clients that read")
        assert reader.lines[-1].endswith(f"during 11999 {'x' * 400}")


@pytest.mark.asyncio
async def test_a_dead_shard_refuses_only_its_users_fast_and_recovers(tmp_path, reliability):
    env = {"CACHE_TIMEOUT": "100ms"}
    async with running_cluster(tmp_path, edges=1, shards=3, env=env) as cluster:
        channel = "#sturdy"
        ring = Ring(cluster.redis_addresses)
        dead = cluster.redis_addresses[1]
        viewer = await cluster.client("sturdy_viewer", channels=(channel,))
        victims = [f"victim{n}" for n in range(200) if ring.node_for(f"{{u:{_uid(f'victim{n}')}}}:rate") == dead][:1]
        lucky = [f"lucky{n}" for n in range(200) if ring.node_for(f"{{u:{_uid(f'lucky{n}')}}}:rate") != dead][:1]
        victim = await cluster.client(victims[0], channels=(channel,))
        other = await cluster.client(lucky[0], channels=(channel,))
        await victim.send(f"PRIVMSG {channel} :warm up")
        await viewer.wait_for_texts({"warm up"}, channel)

        cluster.kill("redis-1", signal.SIGKILL)
        await cluster.components["redis-1"].process.wait()
        started = time.monotonic()
        await victim.send(f"PRIVMSG {channel} :while the shard is down")
        refusal = await victim.expect(r" NOTICE #sturdy ")
        waited = time.monotonic() - started
        assert "msg-id=msg_service_unavailable" in refusal
        assert waited < 1.0, f"the refusal took {waited:.2f}s"
        await other.send(f"PRIVMSG {channel} :others are unaffected")
        await viewer.wait_for_texts({"others are unaffected"}, channel)

        await cluster.restart("redis-1")
        restarted = time.monotonic()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        for n in range(1000):  # recovers by itself once the shard is back
            await victim.send(f"PRIVMSG {channel} :back {n}")
            line = await victim.expect(r";id=.* USERSTATE #sturdy$| NOTICE #sturdy ")
            if " USERSTATE " in line:
                break
            assert loop.time() < deadline, "never recovered"
            await asyncio.sleep(0.2)
        print(f"refusal while the shard was down came after {waited * 1000:.0f} ms")
        reliability("A Redis shard dies (SIGKILL), then restarts",
                    f"users whose keys live there get msg_service_unavailable {waited * 1000:.0f} ms after sending "
                    "(CACHE_TIMEOUT 100 ms, fail closed); users on other shards chat on",
                    f"accepted again {time.monotonic() - restarted:.1f} s after the shard was back (AOF kept its data)",
                    "0: refused messages are told, none accepted is dropped")


def _uid(login: str) -> str:
    from common.tokens import stable_id

    return stable_id(login)


async def edge_health(cluster, edge: int) -> dict:
    async with aiohttp.ClientSession() as http, http.get(
        cluster.components[f"edge-{edge}"].addresses["http"] + "/health"
    ) as response:
        return await response.json()


async def freeze_edge_while_chatting(cluster, frozen: int, count: int) -> tuple[list[str], dict]:
    """Freeze edge `frozen` (SIGSTOP) while `count` messages go by; returns what its
    viewer saw of them (in order) once it runs again, and its /health."""
    channel = "#holes"
    sender = await cluster.client("holey", edge=1 - frozen, channels=(channel,))
    viewer = await cluster.client("frozen", edge=frozen, channels=(channel,))
    await sender.send(f"PRIVMSG {channel} :first")
    await viewer.wait_for_texts({"first"}, channel)
    cluster.kill(f"edge-{frozen}", signal.SIGSTOP)  # the edge hangs; its clients stay connected
    try:
        await sender.send(*(f"PRIVMSG {channel} :while frozen {n}" for n in range(count)))
        while sum(" USERSTATE #holes" in line for line in sender.lines) < count + 1:
            await sender.expect(r" USERSTATE #holes$")
    finally:
        cluster.kill(f"edge-{frozen}", signal.SIGCONT)
    await sender.send(f"PRIVMSG {channel} :after")
    texts = await viewer.wait_for_texts({"after"}, channel, timeout=20)
    return [t for t in texts if t.startswith("while frozen")], await edge_health(cluster, frozen)


@pytest.mark.asyncio
async def test_messages_an_edge_missed_are_healed_from_the_exchange_history(tmp_path, reliability):
    # The exchange holds at most 100 messages for an edge that does not take them
    # and drops the oldest; its history (2,000 per channel) still has them all.
    env = {"EXCHANGE_MAX_QUEUE": "100", "RATE_LIMIT": "1000", "HTTP_TIMEOUT": "5s"}
    async with running_cluster(tmp_path, edges=2, env=env) as cluster:
        seen, health = await freeze_edge_while_chatting(cluster, frozen=1, count=300)
        assert seen == [f"while frozen {n}" for n in range(300)]  # every one, once, in order
        assert health["sequence_gaps"] == 0 and health["sequence_healed"] >= 200, health
        reliability("An edge freezes (SIGSTOP) while 300 messages go by; the exchange queues at most 100 for it",
                    "its clients stay connected; when it runs again it sees the hole in the sequence and fills it "
                    "from the exchange's history before going on", "delivery resumes at SIGCONT, in order",
                    f"0 ({health['sequence_healed']} healed, `edge.sequence.healed`)")


@pytest.mark.asyncio
async def test_messages_beyond_the_history_are_counted_as_gaps(tmp_path, reliability):
    env = {"EXCHANGE_MAX_QUEUE": "100", "EXCHANGE_HISTORY": "50", "RATE_LIMIT": "1000", "HTTP_TIMEOUT": "5s"}
    async with running_cluster(tmp_path, edges=2, env=env) as cluster:
        seen, health = await freeze_edge_while_chatting(cluster, frozen=1, count=300)
        numbers = [int(text.rsplit(" ", 1)[1]) for text in seen]
        assert numbers == sorted(numbers)  # what arrives is still in order
        missing = 300 - len(numbers)
        assert missing >= 100 and health["sequence_gaps"] == missing, (missing, health)
        reliability("The same with EXCHANGE_HISTORY=50, smaller than the hole",
                    "what the history no longer holds is missing; the rest arrives in order",
                    "delivery resumes at SIGCONT", f"{missing}, all of them counted (`edge.sequence.gaps`, /health)")
