"""Clue's in-process channel cache drops entries when a writer announces a change."""
from __future__ import annotations

import pytest
from support import running_cluster

from clue.channels import ChannelCache
from common.irc import parse
from common.metrics import Metrics
from common.shards import ShardSet


@pytest.mark.asyncio
async def test_a_settings_change_reaches_a_clue_that_cached_the_channel(tmp_path):
    # A long TTL: only the invalidation can make clue notice the change in time.
    async with running_cluster(tmp_path, env={"CHANNEL_CACHE_TTL": "1h"}) as cluster:
        early = await cluster.client("early", channels=("#cached",))
        roomstate = parse(await early.expect(r" ROOMSTATE #cached$"))
        assert roomstate.tags["slow"] == "0"

        metrics = Metrics("127.0.0.1", 9, "test", "test")
        shards = ShardSet([(h, int(p)) for h, p in (a.split(":") for a in cluster.redis_addresses)], 2, 1.0, metrics)
        writer = ChannelCache(shards, metrics, ttl=60)
        try:
            await writer.update_settings("#cached", {"slow": 30, "emote_only": 1})
        finally:
            await shards.close()

        late = await cluster.client("late", channels=("#cached",))
        roomstate = parse(await late.expect(r" ROOMSTATE #cached$"))
        assert roomstate.tags["slow"] == "30" and roomstate.tags["emote-only"] == "1"
