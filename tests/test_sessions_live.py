"""Stream sessions on a real cluster, with seconds for minutes: minute_broadcast events
through the HTTP API (on an edge) and `chatd broadcast` open a session, silence
closes it with its summary, an exchange killed mid-stream keeps it, the backfill
finds nothing to change (and repairs what is broken by hand), and bad input gets
a clear answer while chat goes on."""
from __future__ import annotations

import asyncio
import datetime
import json
import os
import signal
import subprocess
import sys
import time

import aiohttp
import msgspec
from support import running_cluster

from common.sessions import day_start_of as day_start
from common.wire import SessionRecord

# A "minute" of one second, sessions closed after three quiet seconds, events waited for two.
ENV = {"SESSION_GAP": "3s", "SESSION_MINUTE": "1s", "SESSION_LATENESS": "2s"}
WAIT = 20.0


def api(cluster, edge: int = 0) -> str:
    return f"http://127.0.0.1:{cluster.edge_addresses(edge)[1]}/api/v1/channels"


async def post(http: aiohttp.ClientSession, url: str, token: str | None, body: object = None,
               raw: bytes | None = None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    async with http.post(url, data=data, headers=headers) as response:
        return response.status, await response.json()


async def sessions(http: aiohttp.ClientSession, cluster, channel: str, token: str, **query) -> dict:
    async with http.get(f"{api(cluster)}/{channel}/sessions", params=query,
                        headers={"Authorization": f"Bearer {token}"}) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def wait_sessions(http, cluster, channel: str, token: str, done, what: str) -> list[dict]:
    deadline = time.monotonic() + WAIT
    while True:
        found = (await sessions(http, cluster, channel, token))["sessions"]
        if done(found):
            return found
        assert time.monotonic() < deadline, f"no {what} within {WAIT}s: {found}"
        await asyncio.sleep(0.2)


async def broadcast_for(http, cluster, channel: str, token: str, seconds: float, tolerate_outage: bool = False
                        ) -> list[int]:
    """One event every 0.5 s (events are a second apart at most: well inside the 3 s gap)."""
    sent = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status, answer = await post(http, f"{api(cluster)}/{channel}/broadcast", token, {})
        if status == 200:
            sent.append(int(datetime.datetime.fromisoformat(answer["time"] + "+00:00").timestamp()))
        else:
            assert tolerate_outage and status == 503, (status, answer)
        await asyncio.sleep(0.5)
    return sent


async def test_broadcasts_open_a_session_silence_closes_it_with_its_summary_and_the_backfill_agrees(tmp_path):
    async with running_cluster(tmp_path, edges=1, env=ENV) as cluster:
        viewer = await cluster.client("viewer", channels=("#streamer",))
        chatters = [await cluster.client(f"fan{i}", channels=("#streamer",)) for i in range(3)]
        token = cluster.token("streamer")
        async with aiohttp.ClientSession() as http:
            sender = asyncio.create_task(broadcast_for(http, cluster, "streamer", token, 3.0))
            await asyncio.sleep(0.5)
            texts = ["Kappa hello", "hi there", "Kappa Kappa", "PogChamp", "last one"]
            for i, text in enumerate(texts):
                await chatters[i % 3].send(f"PRIVMSG #streamer :{text}")
                await viewer.wait_for_texts({text}, "#streamer")
            opened = await wait_sessions(http, cluster, "streamer", token, lambda s: s and s[0]["open"], "open session")
            sent = await sender
            closed = await wait_sessions(http, cluster, "streamer", token, lambda s: s and not s[0]["open"],
                                         "closed session")
        [session] = closed
        start = datetime.datetime.fromtimestamp(sent[0], datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
        assert opened[0]["start_time"] == session["start_time"] == start
        assert session["id"] == f"{session['channel_id']}:{start}"
        assert session["end_time"] == datetime.datetime.fromtimestamp(sent[-1] + 1, datetime.UTC).strftime(
            "%Y-%m-%d %H:%M:%S")
        summary = session["summary"]
        assert summary["messages"] == len(texts)
        assert summary["unique_chatters"] == 3 and summary["first_time_chatters"] == 3
        assert summary["top_emotes"][0] == ["25", "Kappa", 3]
        assert summary["peak_messages_per_minute"] >= 2
        # Chat went on as ever, and nobody saw a line for the broadcast events.
        assert viewer.texts("#streamer") == texts
        assert not [line for line in viewer.lines if "BROADCAST" in line]
        # The archive has every event, in a file a person can read.
        [day_dir] = (tmp_path / "chatd" / "archive").iterdir()
        rows = [line for path in sorted(day_dir.glob("*.csv")) for line in path.read_text().splitlines()]
        assert rows[0] == "time,channel_id,channel,source"
        assert len([row for row in rows if row.endswith(",#streamer,broadcast")]) == len(sent)

        # chatd sessions list shows it; chatd broadcast starts another one.
        env = os.environ | ENV
        listed = await run_cli(["sessions", "list", "#streamer", "--data-dir", str(cluster.data_dir)], env)
        assert listed.returncode == 0, listed.stderr
        assert f"{start} → " in listed.stdout and "5 messages, 3 chatters (3 first-time)" in listed.stdout
        said = await run_cli(["broadcast", "#streamer", "--data-dir", str(cluster.data_dir)], env)
        assert said.returncode == 0 and said.stdout.startswith("#streamer ("), said.stderr
        async with aiohttp.ClientSession() as http:
            live = await wait_sessions(http, cluster, "streamer", token, lambda s: len(s) == 2 and not s[0]["open"],
                                       "the second session")
        await backfill_agrees_and_repairs(cluster, token, live, env)


async def backfill_agrees_and_repairs(cluster, token: str, live: list[dict], env: dict[str, str]) -> None:
    """The backfill of the day finds what the live driver wrote; broken by hand, it is repaired."""
    day = live[-1]["start_time"][:10]
    backfill = ["sessions", "backfill", "--day", day, "--data-dir", str(cluster.data_dir), "--json"]
    first = json.loads((await run_cli(backfill, env)).stdout)
    assert (first["computed"], first["unchanged"], first["inserted"], first["corrected"], first["deleted"]) == (
        2, 2, 0, 0, 0)

    # One session's end is made wrong, the other is deleted, and one that never was is added.
    from common.metrics import Metrics
    from common.sessions import SessionStore
    from common.shards import ShardSet

    shards = ShardSet([(a.split(":")[0], int(a.split(":")[1])) for a in cluster.redis_addresses], 2, 2.0,
                      Metrics("127.0.0.1", 8125, "chatd", "test"))
    store = SessionStore(shards)
    channel_id = live[0]["channel_id"]
    records = (await store.between([channel_id], 0, 1 << 40))[channel_id]
    made_up = max(records[0].start - 600, day_start(day))  # on the same day
    await store.put([msgspec.structs.replace(records[0], end=records[0].end + 3600),
                     SessionRecord("999", "#nobody", made_up, made_up + 60)])
    await store.delete([(channel_id, records[1].start)])

    repaired = json.loads((await run_cli(backfill, env)).stdout)
    assert (repaired["inserted"], repaired["corrected"], repaired["deleted"], repaired["unchanged"]) == (1, 1, 1, 0)
    async with aiohttp.ClientSession() as http:
        now = (await sessions(http, cluster, "streamer", token))["sessions"]
    assert [(s["start_time"], s["end_time"], s["summary"]) for s in now] == [
        (s["start_time"], s["end_time"], s["summary"]) for s in live]
    assert (await store.between(["999"], 0, 1 << 40))["999"] == []
    assert "999" not in await store.day_channels(day)

    again = json.loads((await run_cli(backfill, env)).stdout)
    assert (again["inserted"], again["corrected"], again["deleted"], again["unchanged"]) == (0, 0, 0, 2)
    await shards.close()


async def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "chatd.cli", *args], capture_output=True,
                                   text=True, env=env, timeout=60)


async def test_an_exchange_killed_mid_stream_keeps_the_open_session(tmp_path):
    async with running_cluster(tmp_path, edges=1, env=ENV) as cluster:
        token = cluster.token("longstream")
        async with aiohttp.ClientSession() as http:
            before = await broadcast_for(http, cluster, "longstream", token, 2.0)
            await wait_sessions(http, cluster, "longstream", token, lambda s: s and s[0]["open"], "open session")
            cluster.kill("exchange-0", signal.SIGKILL)
            await cluster.components["exchange-0"].process.wait()
            await cluster.restart("exchange-0")
            after = await broadcast_for(http, cluster, "longstream", token, 2.0, tolerate_outage=True)
            [session] = await wait_sessions(http, cluster, "longstream", token, lambda s: s and not s[0]["open"],
                                            "closed session")
        assert after, "no event was taken after the restart"
        start = datetime.datetime.fromtimestamp(before[0], datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
        assert session["start_time"] == start  # one session across the restart, not two
        assert session["end_time"] == datetime.datetime.fromtimestamp(after[-1] + 1, datetime.UTC).strftime(
            "%Y-%m-%d %H:%M:%S")


async def test_bad_input_gets_a_clear_answer_and_chat_goes_on(tmp_path):
    async with running_cluster(tmp_path, edges=1, env=ENV) as cluster:
        viewer = await cluster.client("viewer", channels=("#victim",))
        talker = await cluster.client("talker", channels=("#victim",))
        token = cluster.token("victim")
        url = f"{api(cluster)}/victim/broadcast"
        future = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")
        async with aiohttp.ClientSession() as http:
            cases = [
                (url, None, {}, None, 401, "no bearer token"),
                (url, "not-a-token", {}, None, 401, ""),
                (url, cluster.token("talker"), {}, None, 403, "only the broadcaster"),
                (f"{api(cluster)}/no%20such/broadcast", token, {}, None, 400, "no such channel name"),
                (url, token, None, b"{not json", 400, "malformed body"),
                (url, token, {"time": "yesterday-ish"}, None, 400, "time must look like"),
                (url, token, {"time": future}, None, 400, "is in the future"),
                (url, token, {"time": "2001-01-01 00:00:00"}, None, 400, "older than 31 days"),
                (url, token, {"time": 10 ** 30}, None, 400, "out of range"),
                (url, token, {"when": "now"}, None, 400, "malformed body"),
            ]
            for target, who, body, raw, status, message in cases:
                got, answer = await post(http, target, who, body, raw)
                assert got == status, (body, raw, answer)
                assert answer["status"] == status and message in answer["message"], answer
            async with http.get(f"{api(cluster)}/neverwas/sessions", headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status == 404 and "no such channel" in (await r.json())["message"]
            async with http.get(f"{api(cluster)}/victim/sessions", params={"limit": "0"},
                                headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status == 400 and "limit" in (await r.json())["message"]
            async with http.get(f"{api(cluster)}/victim/sessions", headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status == 404  # nothing refused left a trace: the channel is still unknown
        await talker.send("PRIVMSG #victim :still here")
        await viewer.wait_for_texts({"still here"}, "#victim")

        # Two backfills of one day at once: the second refuses, or waits with --wait.
        from common.metrics import Metrics
        from common.sessions import SessionStore, lock_key
        from common.shards import ShardSet

        day = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
        shards = ShardSet([(a.split(":")[0], int(a.split(":")[1])) for a in cluster.redis_addresses], 2, 2.0,
                          Metrics("127.0.0.1", 8125, "chatd", "test"))
        store = SessionStore(shards)
        assert await store.lock(lock_key(day, "0/1"), "someone-else", 30)
        env = os.environ | ENV
        backfill = ["sessions", "backfill", "--day", day, "--data-dir", str(cluster.data_dir)]
        refused = await run_cli(backfill, env)
        assert refused.returncode == 1 and "is being backfilled by another run" in refused.stderr
        waiting = asyncio.create_task(run_cli([*backfill, "--wait"], env))
        await asyncio.sleep(2.0)
        assert not waiting.done()
        await store.unlock(lock_key(day, "0/1"), "someone-else")
        done = await asyncio.wait_for(waiting, WAIT)
        assert done.returncode == 0 and "0 sessions" in done.stdout, done.stderr
        bad_day = await run_cli(["sessions", "backfill", "--day", "05/03/2026", "--data-dir", str(cluster.data_dir)], env)
        assert bad_day.returncode == 2 and "--day must be a date" in bad_day.stderr
        await shards.close()
