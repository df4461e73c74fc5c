"""The operator console: what each process keeps of its metrics, how the console reads
it, the moderation log, and the console page in a real browser (a traffic spike on its
chart, a channel moved with its button while a sender keeps chatting)."""
from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from browser_support import chromium, open_page
from support import IrcClient, running_cluster

from clue.modlog import entry_for, is_moderation
from common.metrics import Metrics, summarize
from common.wire import Identity, MetricsSample, TimerSummary
from edge.readings import pool_label, reading, shard_metric_name

# ---------------------------------------------------------------- pure parts


def test_metrics_keep_one_sample_per_flush_with_timer_summaries_and_the_busiest_channels():
    metrics = Metrics("127.0.0.1", 9, "chatd", "exchange")
    metrics.incr("messages.published", 3)
    for value in range(1, 101):
        metrics.timing("publish", float(value))
    for index in range(30):
        metrics.count_top("channel.in", f"#c{index}", index)
    metrics.flush()
    metrics.flush()  # an idle second is a sample too: the chart shows a zero, not a hole
    first, second = metrics.samples
    assert first.counters == {"messages.published": 3}
    assert first.timers["publish"] == TimerSummary(count=100, p50=51.0, p99=100.0, max=100.0)
    assert list(first.top["channel.in"]) == [f"#c{index}" for index in range(29, 9, -1)]  # the 20 busiest
    assert second.counters == {} and second.top == {}
    assert metrics.since(first.t - 1) == [first, second] and metrics.since(second.t) == []


def test_a_summary_of_a_huge_timer_reads_an_even_stride_of_it():
    summary = summarize([float(value) for value in range(200_000)])
    assert summary.count <= 20_000 and 196_000 <= summary.p99 <= 200_000 and 98_000 <= summary.p50 <= 102_000


SAMPLE = MetricsSample(
    t=1_000, seconds=1.0,
    counters={"messages.received": 10, "messages.accepted": 8, "messages.rejected.msg_ratelimit": 2,
              "messages.delivered": 50},
    gauges={"connections.tcp": 3.0, "connections.ws": 2.0, "redis.127_0_0_1_7000.pool_in_use": 1.0,
            "http.exchange_http_//127_0_0_1_4000.pool_in_use": 2.0},
    timers={"http.exchange_http_//127_0_0_1_4000.publish": TimerSummary(5, 1.0, 3.0, 4.0),
            "http.exchange_http_//127_0_0_1_4001.publish": TimerSummary(2, 1.0, 9.0, 9.5),
            "http.clue_http_//127_0_0_1_5000.messages": TimerSummary(4, 2.0, 6.0, 7.0),
            "redis.127_0_0_1_7000.check": TimerSummary(7, 0.3, 0.9, 1.0),
            "redis.127_0_0_1_7000.cache": TimerSummary(1, 0.1, 2.0, 2.0),
            "delivery.lag": TimerSummary(3, 4.0, 12.0, 12.0)},
    top={"channel.in": {"#tpp": 9}, "channel.out": {"#tpp": 40}},
)


@pytest.mark.parametrize(("kind", "expected"), [
    ("clue", {"counts": {"received": 10, "accepted": 8}, "hops": {"clue→exchange": [7, 9.0]},
              "refusals": {"msg_ratelimit": 2}, "redis": {"127.0.0.1:7000": [8, 2.0]}}),
    ("edge", {"counts": {"sent": 10, "delivered": 50}, "hops": {"edge→clue": [4, 6.0]}, "e2e": [3, 12.0],
              "conns": {"tcp": 3, "ws": 2, "eventsub": 0}}),
    ("exchange", {"counts": {}, "top_in": {"#tpp": 9}, "top_out": {"#tpp": 40}}),
])
def test_a_reading_takes_what_each_kind_of_service_measures(kind, expected):
    found = reading(kind, SAMPLE, {"127_0_0_1_7000": "127.0.0.1:7000"})
    for key, value in expected.items():
        assert found[key] == value, key
    assert found["t"] == 1_000 and found["pools"] == {"redis 127.0.0.1:7000": 1.0, "exchange 127.0.0.1:4000": 2.0}
    if kind != "clue":
        assert "refusals" not in found  # an edge's count of refusals is clue's, told again


def test_names_of_shards_and_pools_read_back_as_addresses():
    assert shard_metric_name("10.0.0.5:6379") == "10_0_0_5_6379"
    assert pool_label("http.edge_http_//10_0_0_7_9000.pool_in_use") == "edge 10.0.0.7:9000"
    assert pool_label("something.odd.pool_in_use") == "something.odd"


@pytest.mark.parametrize(("line", "logged", "action", "target", "detail"), [
    ("/ban Troll spamming links", True, "ban", "troll", "spamming links"),
    ("/timeout @troll 10m", True, "timeout", "troll", "10m"),
    ("/delete 1f2e-ab", True, "delete", "1f2e-ab", ""),
    ("/slow 30", True, "slow", "", "30"),
    ("/r9kbeta", True, "uniquechat", "", ""),
    ("/mod helper", True, "mod", "helper", ""),
    ("/mods", False, "mods", "", ""),
    ("/color blue", False, "color", "", "blue"),
    ("/w friend hi", False, "w", "", "friend hi"),
])
def test_the_moderation_log_records_commands_that_need_a_moderator(line, logged, action, target, detail):
    assert is_moderation(line) is logged
    entry = entry_for(Identity("mod1", "7", "Mod1"), "#chan", line, 123)
    assert (entry.action, entry.target, entry.detail, entry.moderator, entry.ts) == (action, target, detail, "mod1",
                                                                                    123)


# ---------------------------------------------------------------- the console, live


async def wait_for_peaks(page, chart: str, series: str, timeout: float = 15.0) -> dict[str, float]:
    """A chart's highest values per series (its `data-peaks`), once `series` has shown above zero.
    (Polled from here: the page's CSP forbids the string evaluation wait_for_function uses.)"""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        peaks = json.loads(await page.get_attribute(chart, "data-peaks") or "{}")
        if peaks.get(series, 0) > 0:
            return peaks
        assert loop.time() < deadline, f"{chart} never showed {series} above zero: {peaks}"
        await asyncio.sleep(0.2)


async def test_the_console_charts_a_spike_and_its_button_moves_the_channel_while_a_sender_keeps_chatting(tmp_path):
    env = {"RATE_LIMIT": "100000", "RATE_LIMIT_PRIVILEGED": "100000"}
    async with running_cluster(tmp_path, edges=2, extra_clusters={"event": (1, 1)}, env=env) as cluster:
        _, ws_port = cluster.edge_addresses(0)
        sender = await cluster.client("tpp", channels=("#tpp",))
        viewer = await cluster.client("viewer", edge=1, channels=("#tpp",))
        async with chromium() as browser:
            watched = await open_page(browser, f"http://127.0.0.1:{ws_port}/console#token={cluster.internal_token}",
                                      width=1400, height=1200)
            page = watched.page
            for name in ("edge-0", "edge-1", "clue-0", "clue-event-0", "exchange-0", "exchange-event-0"):
                await page.wait_for_selector(f"#map .node[data-node='{name}'][data-ok=true]")
            assert await page.locator("#map .node[data-ok=true]").count() == 6 + 3  # and three shards
            assert page.url.endswith("/console")  # the token left the address bar

            sent: list[str] = []
            for index in range(200):
                sent.append(f"spike {index}")
                await sender.send(f"PRIVMSG #tpp :spike {index}")
            await viewer.wait_for_texts(set(sent), timeout=20)
            row = page.locator("#top-channels tr[data-channel='#tpp']")
            await row.wait_for(timeout=15_000)
            peaks = await wait_for_peaks(page, "#chart-traffic", "in")
            assert peaks["accepted"] > 0 and peaks["out"] > 0
            assert float(await row.get_attribute("data-in")) > 0

            # The one click of a TPP day, while the sender keeps talking.
            chatting = True

            async def keep_chatting() -> None:
                index = 0
                while chatting:
                    sent.append(f"during {index}")
                    await sender.send(f"PRIVMSG #tpp :during {index}")
                    index += 1
                    await asyncio.sleep(0.02)

            task = asyncio.create_task(keep_chatting())
            try:
                await asyncio.sleep(0.5)
                await page.click("#top-channels button[data-move='#tpp'][data-to=event]")
                await page.wait_for_selector("#routes tr[data-channel='#tpp'][data-cluster=event]")
                await asyncio.sleep(1.0)
            finally:
                chatting = False
                await task
            await sender.ping_roundtrip()
            refused = sender.received("NOTICE")
            assert refused == []  # every line the sender sent was accepted
            texts = await viewer.wait_for_texts(set(sent), timeout=20)
            assert texts == sent  # each once, in the order sent
            assert "#tpp is on event" in await page.inner_text("#notice")
            await page.wait_for_selector("#top-channels tr[data-channel='#tpp'] button[data-to=main]")
            assert watched.errors == []


async def test_the_console_shows_the_moderation_log_and_a_stream_session_and_wants_its_token(tmp_path):
    async with running_cluster(tmp_path, edges=1, env={"SESSION_LATENESS": "0"}) as cluster:
        _, ws_port = cluster.edge_addresses(0)
        owner = await cluster.client("chan", channels=("#chan",))
        troll = await cluster.client("troll", channels=("#chan",))
        await owner.send("PRIVMSG #chan :/timeout troll 60 too loud", "PRIVMSG #chan :/slow 10")
        await troll.expect_message("CLEARCHAT")
        base = f"http://127.0.0.1:{ws_port}"
        async with aiohttp.ClientSession() as http:
            for headers in ({}, {"Authorization": "Bearer wrong-token-of-some-length"}):
                async with http.get(f"{base}/console/api/state", headers=headers) as response:
                    assert response.status == 401
                    assert (await response.json())["message"].startswith("the console needs its admin token")
            admin = {"Authorization": f"Bearer {cluster.internal_token}"}
            async with http.post(f"{base}/console/api/routes", headers=admin,
                                 json={"channel": "#chan", "cluster": "nowhere"}) as response:
                assert response.status == 400
                assert "no cluster 'nowhere'" in (await response.json())["message"]
        async with chromium() as browser:
            watched = await open_page(browser, f"{base}/console")
            page = watched.page
            await page.fill("#login-token", cluster.internal_token)
            await page.click("#login-form button")
            await page.wait_for_selector("#modlog tr[data-action=slow]")
            timeout = page.locator("#modlog tr[data-action=timeout]")
            assert (await timeout.all_inner_texts())[0].split("\t")[1:] == ["#chan", "chan", "timeout", "troll",
                                                                             "60 too loud"]
            await page.fill("#timeline-channel", "#chan")
            await page.click("#timeline-form button")
            summary = page.locator("#timeline-summary")
            await summary.wait_for()
            assert await summary.inner_text() == "#chan · highlights: 0 · stream sessions: 0"

            # The broadcaster's software says the stream is live: the timeline shows the open session.
            async with aiohttp.ClientSession() as http, http.post(
                    f"{base}/api/v1/channels/chan/broadcast", headers={"Authorization": f"Bearer {cluster.token('chan')}"}
            ) as response:
                assert response.status == 200, await response.text()
            deadline = asyncio.get_running_loop().time() + 20
            while await summary.inner_text() != "#chan · highlights: 0 · stream sessions: 1":
                assert asyncio.get_running_loop().time() < deadline, await summary.inner_text()
                await page.click("#timeline-form button")
                await page.wait_for_timeout(250)
            assert "live UTC" in await page.locator("#timeline rect.session title").text_content()
            assert watched.errors == []
            await IrcClient.close(troll)
