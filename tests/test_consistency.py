"""Moderation state agrees across clue processes, and an ordinary PRIVMSG costs
one Redis round trip."""
from __future__ import annotations

import asyncio
from collections import Counter

import aiohttp
import pytest
from support import running_cluster

from common.ring import Ring
from loadtest.bench import commandstats

# Commands the per-message check script runs inside Redis (INFO counts them too).
SCRIPT_COMMANDS = {"evalsha", "get", "pttl", "time", "hmget", "zremrangebyscore", "zcard", "zadd", "pexpire", "hset",
                   "sadd", "zscore"}


def login_on(ring: Ring, url: str, prefix: str) -> str:
    """A login whose messages the edges send to the clue at `url`."""
    return next(f"{prefix}{n}" for n in range(1000) if ring.node_for(f"{prefix}{n}") == url)


async def api_command(cluster, clue: int, channel: str, login: str, command: str) -> dict:
    url = f"{cluster.clue_urls[clue]}/api/v1/channels/{channel.lstrip('#')}/commands"
    async with aiohttp.ClientSession() as http, http.post(
        url, json={"command": command}, headers={"Authorization": f"Bearer {cluster.token(login)}"}
    ) as response:
        return await response.json()


async def refused_within(client, channel: str, msg_id: str, limit: float) -> float:
    """Send probes until one is refused with `msg_id`; returns how long that took."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    for n in range(1000):
        await client.send(f"PRIVMSG {channel} :probe {n}")
        line = await client.expect(r" USERSTATE | NOTICE ", timeout=5)
        if f"msg-id={msg_id}" in line:
            return loop.time() - started
        assert loop.time() - started < limit, f"not refused with {msg_id} after {limit}s"
    raise AssertionError("unreachable")


@pytest.mark.asyncio
async def test_changes_through_one_clue_hold_in_the_other_within_a_second(tmp_path):
    async with running_cluster(tmp_path, edges=2, clues=2, env={"CHANNEL_CACHE_TTL": "1h"}) as cluster:
        ring = Ring(cluster.clue_urls)
        speaker = login_on(ring, cluster.clue_urls[1], "speaker")
        newmod = login_on(ring, cluster.clue_urls[1], "helper")
        channel = "#agree"
        client = await cluster.client(speaker, edge=1, channels=(channel,))
        helper = await cluster.client(newmod, edge=0, channels=(channel,))
        viewer = await cluster.client("watcher", edge=0, channels=(channel,))
        # clue-1 now has #agree's state cached.
        await client.send(f"PRIVMSG {channel} :before")
        await viewer.expect_message("PRIVMSG", "before")

        # A cached setting changed through clue-0.
        answer = await api_command(cluster, 0, channel, "agree", "/slow 30")
        assert answer["ok"], answer
        assert await refused_within(client, channel, "msg_slowmode", 1.0) < 1.0

        # A role granted through clue-0 shows in clue-1's badges.
        assert (await api_command(cluster, 0, channel, "agree", f"/mod {newmod}"))["msg_id"] == "mod_success"
        await helper.send(f"PRIVMSG {channel} :new mod here")
        assert (await viewer.expect_message("PRIVMSG", "new mod here")).tags["badges"] == "moderator/1"

        # A ban made through clue-0 refuses the next message clue-1 checks.
        assert (await api_command(cluster, 0, channel, "agree", f"/ban {speaker}"))["msg_id"] == "ban_success"
        assert await refused_within(client, channel, "msg_banned", 1.0) < 1.0


async def commandstats_all(addresses: list[str]) -> dict[str, Counter]:
    return {address: await commandstats(address) for address in addresses}


@pytest.mark.asyncio
async def test_an_ordinary_privmsg_costs_one_redis_round_trip(tmp_path):
    # The exchange's observers (history, highlights, sessions) write to Redis on clocks of their own
    # (their costs are in docs/benchmarks.md); they are off here so that only clue's checks are counted.
    env = {"HISTORY_LIMIT": "0", "HIGHLIGHTS": "off", "SESSIONS": "off"}
    async with running_cluster(tmp_path, edges=1, env=env) as cluster:
        sender = await cluster.client("thrifty", channels=("#cost",))
        viewer = await cluster.client("counter", channels=("#cost",))
        await sender.send("PRIVMSG #cost :warm the cache")
        await viewer.expect_message("PRIVMSG", "warm the cache")
        await sender.expect(r";id=.* USERSTATE #cost$")

        before = await commandstats_all(cluster.redis_addresses)
        await sender.send("PRIVMSG #cost :an ordinary message")
        await viewer.expect_message("PRIVMSG", "an ordinary message")
        after = await commandstats_all(cluster.redis_addresses)

        changed = {address: after[address] - before[address] for address in before}
        for counts in changed.values():
            # This test's own INFO connections (HELLO, CLIENT SETINFO) and redis-py's idle health checks.
            for own in ("info", "hello", "client", "ping"):
                counts.pop(own, None)
        touched = {address: counts for address, counts in changed.items() if counts}
        assert len(touched) == 1, touched  # one shard: the sender's
        [counts] = touched.values()
        assert counts["evalsha"] == 1  # one call from clue: one round trip
        assert set(counts) <= SCRIPT_COMMANDS, counts  # everything else ran inside that script
        assert "hgetall" not in counts and "smembers" not in counts  # channel state came from the cache
