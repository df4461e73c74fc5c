"""Channel history: written by the exchange, read as robotty's recent-messages
and as IRCv3 CHATHISTORY."""
from __future__ import annotations

import asyncio

import aiohttp
import pytest
from support import NodeClient, running_cluster

from clue.history import Options, chathistory, deleted_ids, export, human_duration
from common.irc import parse
from common.wire import HistoryEntry
from edge.ircv3 import iso_time


def entry(n: int, command: str = "PRIVMSG", user: str = "1", target: str = "", line: str = "") -> HistoryEntry:
    line = line or f"@id=m{n};user-id={user} :u!u@u.tmi.twitch.tv PRIVMSG #c :hello {n}"
    return HistoryEntry(ts=1000 + n, command=command, line=line, id=f"m{n}", user_id=user, target=target,
                        sent_ms=1000 + n)


HISTORY = [
    entry(1, user="1"), entry(2, user="2"), entry(3, user="1"),
    entry(4, "CLEARMSG", target="m2", line="@login=b;target-msg-id=m2 :tmi.twitch.tv CLEARMSG #c :hello 2"),
    entry(5, user="2"),
    entry(6, "CLEARCHAT", target="1", line="@ban-duration=620;target-user-id=1 :tmi.twitch.tv CLEARCHAT #c :a"),
    entry(7, user="1"),
]


def test_moderation_marks_what_it_removed_and_nothing_after_it():
    assert deleted_ids(HISTORY) == {0, 1, 2}  # m2 by CLEARMSG; user 1's first two by the timeout


@pytest.mark.parametrize(("options", "expected"), [
    (Options(), ["hello 1", "hello 2", "hello 3", "hello 2", "hello 5", "a", "hello 7"]),
    (Options(hide_moderation=True), ["hello 1", "hello 2", "hello 3", "hello 5", "hello 7"]),
    (Options(hide_moderated=True), ["hello 2", "hello 5", "a", "hello 7"]),
    (Options(limit=2), ["a", "hello 7"]),
    (Options(after=1004, before=1007), ["hello 5", "a"]),
    (Options(clearchat_to_notice=True, hide_moderated=True, hide_moderation=True), ["hello 5", "hello 7"]),
])
def test_recent_messages_options(options, expected):
    assert [parse(line).params[-1] for line in export(HISTORY, options)] == expected


def test_recent_messages_tags_and_clearchat_as_notice():
    lines = export(HISTORY, Options(clearchat_to_notice=True))
    first = parse(lines[0])
    assert first.tags["historical"] == "1" and first.tags["rm-received-ts"] == "1001"
    assert first.tags["rm-deleted"] == "1" and first.tags["id"] == "m1"
    assert "rm-deleted" not in parse(lines[4]).tags
    assert lines[5].endswith(":tmi.twitch.tv NOTICE #c :a has been timed out for 10m 20s.")
    assert parse(lines[5]).tags["msg-id"] == "rm-timeout"
    assert human_duration(3600 * 26 + 5) == "1d 2h 5s"


@pytest.mark.parametrize(("subcommand", "references", "limit", "expected"), [
    ("LATEST", ["*"], 2, ["m5", "m7"]),
    ("LATEST", ["msgid=m3"], 10, ["m5", "m7"]),
    ("BEFORE", ["msgid=m5"], 2, ["m2", "m3"]),
    ("AFTER", ["msgid=m2"], 2, ["m3", "m5"]),
    ("AROUND", ["msgid=m3"], 3, ["m2", "m3", "m5"]),
    ("BETWEEN", ["msgid=m1", "msgid=m7"], 10, ["m2", "m3", "m5"]),
    ("BETWEEN", ["msgid=m7", "msgid=m1"], 2, ["m3", "m5"]),
    ("AFTER", ["timestamp=1970-01-01T00:00:01.002Z"], 2, ["m3", "m5"]),
])
def test_chathistory_selects_around_a_reference(subcommand, references, limit, expected):
    assert [e.id for e in chathistory(HISTORY, subcommand, references, limit)] == expected


async def test_recent_messages_through_an_edge_with_moderation_flags(tmp_path):
    async with running_cluster(tmp_path, edges=2) as cluster:
        owner = await cluster.client("histroom", edge=0, channels=("#histroom",))
        talker = await cluster.client("histtalker", edge=1, channels=("#histroom",))
        for n in range(5):
            await talker.send(f"PRIVMSG #histroom :line {n}")
        said = [await owner.expect_message("PRIVMSG", f"line {n}") for n in range(5)]
        await owner.send(f"PRIVMSG #histroom :/delete {said[1].tags['id']}")
        await owner.expect(r" CLEARMSG #histroom ")
        await owner.send("PRIVMSG #histroom :/timeout histtalker 60")
        await owner.expect(r" CLEARCHAT #histroom :histtalker$")
        await owner.send("PRIVMSG #histroom :the last word")
        await talker.expect_message("PRIVMSG", "the last word")
        _, ws_port = cluster.edge_addresses(1)
        url = f"http://127.0.0.1:{ws_port}/api/v2/recent-messages/histroom"
        async with aiohttp.ClientSession() as http:
            body = await wait_for_lines(http, url, 8)
            assert body["error"] is None and body["error_code"] is None
            messages = [parse(line) for line in body["messages"]]
            texts = [m.params[-1] for m in messages if m.command == "PRIVMSG"]
            assert texts == [f"line {n}" for n in range(5)] + ["the last word"]
            assert all(m.tags["historical"] == "1" and int(m.tags["rm-received-ts"]) > 0 for m in messages)
            assert [m.tags.get("rm-deleted") for m in messages if m.command == "PRIVMSG"] == ["1"] * 5 + [None]
            assert [m.command for m in messages].count("CLEARCHAT") == 1
            async with http.get(url + "?hide_moderated_messages=true&hideModerationMessages=true&limit=1") as r:
                assert r.headers["Access-Control-Allow-Origin"] == "*"
                assert [parse(line).params[-1] for line in (await r.json())["messages"]] == ["the last word"]
            async with http.get(f"http://127.0.0.1:{ws_port}/api/v2/recent-messages/not-a-login!") as r:
                assert r.status == 400 and (await r.json())["error_code"] == "invalid_channel_login"
            async with http.get(url + "?limit=many") as r:
                assert r.status == 400 and (await r.json())["error_code"] == "invalid_query"


async def wait_for_lines(http: aiohttp.ClientSession, url: str, count: int, timeout: float = 10.0) -> dict:
    """History is written once per tick: wait until it holds `count` lines."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        async with http.get(url) as response:
            body = await response.json()
        if len(body["messages"]) >= count or loop.time() > deadline:
            return body
        await asyncio.sleep(0.05)


async def test_an_ircv3_client_gets_backlog_through_chathistory_in_a_batch_with_server_time(tmp_path):
    async with running_cluster(tmp_path, edges=2) as cluster:
        talker = await cluster.client("v3talker", edge=1, channels=("#v3room", "#v3other"))
        watcher = await cluster.client("v3watch", edge=1, channels=("#v3room",))
        for n in range(6):
            await talker.send(f"PRIVMSG #v3room :line {n}")
        seen = [await watcher.expect_message("PRIVMSG", f"line {n}") for n in range(6)]
        await talker.send("PRIVMSG #v3other :elsewhere")
        _, ws_port = cluster.edge_addresses(0)
        async with aiohttp.ClientSession() as http:  # history is written once per tick
            await wait_for_lines(http, f"http://127.0.0.1:{ws_port}/api/v2/recent-messages/v3room", 6)
            await wait_for_lines(http, f"http://127.0.0.1:{ws_port}/api/v2/recent-messages/v3other", 1)

        irc_port, _ = cluster.edge_addresses(0)
        reader = await NodeClient.start("ircv3_client.js", str(irc_port), "v3reader", cluster.token("v3reader"),
                                        "#v3room", "#v3other")
        try:
            registered = await reader.expect(lambda e: e["event"] == "registered")
            assert {"server-time", "message-tags", "batch", "draft/chathistory", "echo-message"} <= \
                set(registered["caps"])
            for channel in ("#v3room", "#v3other"):
                await reader.expect(lambda e, c=channel: e["event"] == "joined" and e["channel"] == c)

            async def history(request: str, batch_type: str = "chathistory") -> tuple[dict, list[dict]]:
                await reader.command(f"raw CHATHISTORY {request}")
                done = len([e for e in reader.events if e["event"] == "batch"])
                await reader.expect(lambda e: e["event"] == "batch" and
                                    len([x for x in reader.events if x["event"] == "batch"]) > done)
                batch = [e for e in reader.events if e["event"] == "batch"][-1]
                assert batch["type"] == batch_type
                return batch, [e for e in reader.events if e["event"] == "message" and e["batch"]
                               and e["batch"]["id"] == batch["id"]]

            batch, latest = await history("LATEST #v3room * 3")
            assert batch["params"] == ["#v3room"] and [m["text"] for m in latest] == ["line 3", "line 4", "line 5"]
            # server-time is the message's tmi-sent-ts, msgid its Twitch id, as the library parsed them.
            assert [(m["time"], m["msgid"]) for m in latest] == \
                [(int(s.tags["tmi-sent-ts"]), s.tags["id"]) for s in seen[3:]]
            ids = [s.tags["id"] for s in seen]
            _, before = await history(f"BEFORE #v3room msgid={ids[3]} 2")
            _, after = await history(f"AFTER #v3room msgid={ids[3]} 10")
            _, between = await history(f"BETWEEN #v3room msgid={ids[0]} msgid={ids[4]} 10")
            _, around = await history(f"AROUND #v3room msgid={ids[2]} 3")
            assert [m["text"] for m in before] == ["line 1", "line 2"]
            assert [m["text"] for m in after] == ["line 4", "line 5"]
            assert [m["text"] for m in between] == ["line 1", "line 2", "line 3"]
            assert [m["text"] for m in around] == ["line 1", "line 2", "line 3"]
            first = iso_time(int(seen[0].tags["tmi-sent-ts"]) - 60_000)
            targets, _ = await history(f"TARGETS timestamp={first} timestamp=2999-01-01T00:00:00.000Z 10",
                                       "draft/chathistory-targets")
            listed = [parse(e["line"]) for e in reader.events if e["event"] == "raw" and " CHATHISTORY TARGETS " in e["line"]]
            assert [m.params[1] for m in listed] == ["#v3room", "#v3other"] and targets["size"] == 2

            await reader.command("raw PRIVMSG #v3room :hello from ircv3")  # echo-message: its own line comes back
            echo = await reader.expect(lambda e: e["event"] == "message" and e["text"] == "hello from ircv3")
            relayed = await watcher.expect_message("PRIVMSG", "hello from ircv3")
            assert echo["msgid"] == relayed.tags["id"] and echo["time"] == int(relayed.tags["tmi-sent-ts"])
            # A Twitch client on the same edge never sees any of it.
            assert "msgid=" not in " ".join(watcher.lines) and "time=" not in " ".join(watcher.lines)
        finally:
            await reader.stop()


async def test_a_client_dropped_for_5_s_recovers_exactly_what_it_missed(tmp_path):
    # Three talkers keep the channel busy (about 75 messages a second) while a reader is away
    # for 5 s. Back, it takes everything after the last message it saw up to the first it
    # receives live: once from recent-messages (after=, with a second's margin; the history is
    # in the channel's order, so "after my last id" is exact), once through CHATHISTORY AFTER
    # its last msgid, page by page. Both must equal what a reader that stayed saw in between.
    env = {"RATE_LIMIT": "100000", "RATE_LIMIT_PRIVILEGED": "100000"}
    async with running_cluster(tmp_path, edges=2, env=env) as cluster:
        watcher = await cluster.client("recwatch", edge=0, channels=("#recroom",))
        talkers = [await cluster.client(f"rectalk{k}", edge=1, channels=("#recroom",)) for k in range(3)]
        stop = asyncio.Event()

        async def talk(k: int) -> int:
            said = 0
            while not stop.is_set():
                await talkers[k].send(f"PRIVMSG #recroom :t{k}-{said}")
                said += 1
                await asyncio.sleep(0.04)
            return said

        caps = "twitch.tv/tags twitch.tv/commands message-tags batch draft/chathistory"
        reader = await cluster.client("recreader", edge=0, caps=caps, channels=("#recroom",))
        talking = [asyncio.create_task(talk(k)) for k in range(3)]
        try:
            await reader.wait_for(lambda lines: sum(" PRIVMSG " in line for line in lines) >= 20)
            last_seen = [parse(line) for line in reader.lines if " PRIVMSG " in line][-1]
            await reader.close()
            await asyncio.sleep(5)  # away: this is the scenario, not a wait for something
            reader = await cluster.client("recreader", edge=0, caps=caps, channels=("#recroom",))
            first_live = await reader.expect_message("PRIVMSG")
            await reader.wait_for(lambda lines: sum(" PRIVMSG " in line for line in lines) >= 20)
        finally:
            stop.set()
            said = sum(await asyncio.gather(*talking))
        await watcher.wait_for(lambda lines: sum(" PRIVMSG " in line for line in lines) >= said, timeout=30)
        stayed = [parse(line).tags["id"] for line in watcher.lines if " PRIVMSG " in line]
        missed = stayed[stayed.index(last_seen.tags["id"]) + 1:stayed.index(first_live.tags["id"])]
        assert len(missed) > 200  # about 5 s of traffic

        _, ws_port = cluster.edge_addresses(1)
        after = int(last_seen.tags["tmi-sent-ts"]) - 1000
        url = f"http://127.0.0.1:{ws_port}/api/v2/recent-messages/recroom?after={after}"
        async with aiohttp.ClientSession() as http:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while True:  # history is written once per tick: wait until it holds the first live message
                async with http.get(url) as response:
                    ids = [parse(line).tags["id"] for line in (await response.json())["messages"]
                           if " PRIVMSG " in line]
                if first_live.tags["id"] in ids or loop.time() > deadline:
                    break
                await asyncio.sleep(0.05)
        recovered = ids[ids.index(last_seen.tags["id"]) + 1:ids.index(first_live.tags["id"])]
        assert recovered == missed

        paged: list[str] = []
        reference = last_seen.tags["id"]
        while first_live.tags["id"] not in paged:
            await reader.send(f"CHATHISTORY AFTER #recroom msgid={reference} 100")
            end = await reader.expect(r"^:\S+ BATCH -")
            batch_id = end.split()[-1][1:]
            page = [parse(line).tags["msgid"] for line in reader.lines
                    if f"batch={batch_id};" in line and " PRIVMSG " in line]
            assert page, "CHATHISTORY AFTER returned nothing before the first live message"
            paged += page
            reference = page[-1]
        assert paged[:paged.index(first_live.tags["id"])] == missed
