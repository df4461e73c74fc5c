"""Adding a fourth Redis shard moves about a quarter of the keys and loses no
moderation state."""
from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from support import running_cluster

from chatd.cluster import free_port
from common.irc import parse

CHATD = str(Path(sys.executable).parent / "chatd")


async def dbsize(address: str) -> int:
    host, port = address.split(":")
    client = aioredis.Redis(host=host, port=int(port))
    try:
        return await client.dbsize()
    finally:
        await client.aclose()


@pytest.mark.asyncio
async def test_adding_a_shard_keeps_bans_roles_and_modes(tmp_path):
    async with running_cluster(tmp_path, edges=1, shards=3) as cluster:
        channel = "#grow"
        owner = await cluster.client("grow", channels=(channel,))
        helper = await cluster.client("helper", channels=(channel,))
        troll = await cluster.client("troll", channels=(channel,))
        for command, answer in (("/mod helper", "mod_success"), ("/ban troll", "ban_success"), ("/slow 5", "slow_on")):
            await owner.send(f"PRIVMSG {channel} :{command}")
            await owner.expect(f"msg-id={answer}")
        # Enough users for their keys to spread over every shard.
        for n in range(40):
            chatter = await cluster.client(f"grower{n}", channels=(channel,))
            await chatter.send(f"PRIVMSG {channel} :hello {n}")
            await chatter.expect(r";id=.* USERSTATE #grow$")  # accepted: its keys are written
            await chatter.close()

        old = list(cluster.redis_addresses)
        await cluster.stop_component("clue-0")
        await cluster.start_redis(3, free_port())
        process = await asyncio.create_subprocess_exec(
            CHATD, "reshard", "--from", ",".join(old), "--to", ",".join(cluster.redis_addresses),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, stderr.decode()
        result = json.loads(stdout)
        assert result["keys"] > 100
        assert 0.12 < result["moved_share"] < 0.40, result  # about 1/4
        assert await dbsize(cluster.redis_addresses[3]) == result["moved"]
        # Not a terminal: plain progress lines on stderr, one per shard and a closing one.
        said = stderr.decode().splitlines()
        assert [line for line in said if line.startswith(f"reshard: {old[0]}: moved ")], said
        assert said[-1].startswith(f"reshard: {result['keys']:,}/") and said[-1].endswith(" done"), said

        await cluster.restart("clue-0")  # now on four shards
        await troll.send(f"PRIVMSG {channel} :am I free?")
        assert parse(await troll.expect(r"msg-id=msg_\w+ .* NOTICE #grow ")).tags["msg-id"] == "msg_banned"
        newcomer = await cluster.client("newcomer", channels=(channel,))
        assert parse(await newcomer.expect(r" ROOMSTATE #grow$")).tags["slow"] == "5"
        await helper.send(f"PRIVMSG {channel} :still a mod")
        assert (await newcomer.expect_message("PRIVMSG", "still a mod")).tags["badges"] == "moderator/1"
