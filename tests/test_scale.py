"""Several clue and exchange processes: every pairing carries messages, and edges
fail over to a healthy clue."""
from __future__ import annotations

import signal
import time

import pytest
from support import running_cluster

from common.ring import Ring


@pytest.mark.asyncio
async def test_messages_flow_across_every_edge_clue_exchange_pairing(tmp_path):
    async with running_cluster(tmp_path, edges=2, clues=2, exchanges=2) as cluster:
        clues, exchanges = Ring(cluster.clue_urls), Ring(cluster.exchange_urls)
        # A sender handled by each clue, a channel owned by each exchange.
        senders = [next(f"s{c}x{n}" for n in range(500) if clues.node_for(f"s{c}x{n}") == url)
                   for c, url in enumerate(cluster.clue_urls)]
        channels = [next(f"#room{e}x{n}" for n in range(500) if exchanges.node_for(f"#room{e}x{n}") == url)
                    for e, url in enumerate(cluster.exchange_urls)]
        viewers = [await cluster.client(f"viewer{edge}", edge=edge, channels=tuple(channels)) for edge in (0, 1)]
        for edge in (0, 1):
            for login in senders:
                client = await cluster.client(login, edge=edge, channels=tuple(channels))
                for channel in channels:
                    text = f"{login} via edge {edge} in {channel}"
                    await client.send(f"PRIVMSG {channel} :{text}")
                    for viewer in viewers:
                        await viewer.wait_for_texts({text}, channel)
                await client.close()


@pytest.mark.asyncio
async def test_edges_fail_over_when_a_clue_dies(tmp_path, reliability):
    async with running_cluster(tmp_path, edges=1, clues=2) as cluster:
        ring = Ring(cluster.clue_urls)
        doomed_url = cluster.clue_urls[0]
        speaker = next(f"speaker{n}" for n in range(500) if ring.node_for(f"speaker{n}") == doomed_url)
        client = await cluster.client(speaker, channels=("#failover",))
        viewer = await cluster.client("watching", channels=("#failover",))
        await client.send("PRIVMSG #failover :before")
        await viewer.wait_for_texts({"before"}, "#failover")

        cluster.kill("clue-0", signal.SIGKILL)
        await cluster.components["clue-0"].process.wait()
        await client.send("PRIVMSG #failover :after the clue died")
        started = time.monotonic()
        await viewer.wait_for_texts({"after the clue died"}, "#failover")
        reliability("A clue dies (SIGKILL)", "nothing: its users' messages go to the next clue",
                    f"the next message, delivered {(time.monotonic() - started) * 1000:.0f} ms later",
                    "0")
        # New logins and joins work too.
        late = await cluster.client("latecomer", channels=("#failover",))
        await late.send("PRIVMSG #failover :hello from a new login")
        await viewer.wait_for_texts({"hello from a new login"}, "#failover")
