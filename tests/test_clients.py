"""Unmodified third-party Twitch clients against a running cluster."""
from __future__ import annotations

import json

import pytest
from support import ALL_CAPS, IrcClient, NodeClient, running_cluster

from common.irc import parse


@pytest.mark.asyncio
async def test_tmi_js_connects_joins_and_chats_across_edges(tmp_path):
    async with running_cluster(tmp_path, edges=2) as cluster:
        _, ws_port = cluster.edge_addresses(0)
        tmi = await NodeClient.start("tmi_client.js", str(ws_port), "tmibot", cluster.token("tmibot"), "#nodejs")
        try:
            await tmi.expect(lambda e: e["event"] == "joined" and e["channel"] == "#nodejs")
            human = await cluster.client("human", edge=1, channels=("#nodejs",))

            await human.send("PRIVMSG #nodejs :hello tmi.js")
            got = await tmi.expect(lambda e: e["event"] == "message" and not e["self"])
            assert got["message"] == "hello tmi.js"
            assert got["user"] == "human" and got["displayName"] == "human" and got["id"]

            await tmi.command("say hello raw client")
            line = await human.expect_message("PRIVMSG", "hello raw client")
            assert line.source.startswith("tmibot!")
            assert line.tags["display-name"] == "tmibot"
        finally:
            await tmi.stop()


@pytest.mark.asyncio
async def test_tmi_js_moderation_methods_resolve_and_take_effect(tmp_path):
    async with running_cluster(tmp_path, edges=2) as cluster:
        _, ws_port = cluster.edge_addresses(0)
        viewer = await cluster.client("onlooker", edge=1, channels=("#modroom",))
        troll = await cluster.client("troll", edge=1, channels=("#modroom",))
        # The broadcaster's bot runs on tmi.js.
        tmi = await NodeClient.start("tmi_client.js", str(ws_port), "modroom", cluster.token("modroom"), "#modroom")

        async def call(method: str, *args) -> object:
            await tmi.command(f"call {method} {json.dumps(['#modroom', *args])}")
            event = await tmi.expect(lambda e: e.get("method") == method and e["event"] in ("result", "rejected"))
            assert event["event"] == "result", event
            return event["value"]

        try:
            await tmi.expect(lambda e: e["event"] == "joined")
            assert await call("mod", "onlooker") == ["#modroom", "onlooker"]
            assert await call("mods") == ["onlooker"]
            assert await call("vip", "troll") == ["#modroom", "troll"]
            assert await call("vips") == ["troll"]
            assert await call("unvip", "troll") == ["#modroom", "troll"]

            await troll.send("PRIVMSG #modroom :regrettable words")
            said = await viewer.expect_message("PRIVMSG", "regrettable words")
            assert await call("deletemessage", said.tags["id"]) == ["#modroom"]
            await tmi.expect(lambda e: e["event"] == "messagedeleted" and e["message"] == "regrettable words")

            assert await call("timeout", "troll", 120, "cool off") == ["#modroom", "troll", 120, "cool off"]
            await tmi.expect(lambda e: e["event"] == "timeout" and e["user"] == "troll" and e["duration"] == 120)
            await viewer.expect(r"ban-duration=120;.* CLEARCHAT #modroom :troll$")
            assert await call("ban", "troll", "done") == ["#modroom", "troll", "done"]
            await tmi.expect(lambda e: e["event"] == "ban" and e["user"] == "troll")
            await troll.send("PRIVMSG #modroom :let me back")
            assert "msg-id=msg_banned" in await troll.expect(r" NOTICE #modroom ")
            assert await call("unban", "troll") == ["#modroom", "troll"]

            assert await call("slow", 10) == ["#modroom", 10]
            await tmi.expect(lambda e: e["event"] == "slowmode" and e["enabled"] and e["length"] == 10)
            assert await call("slowoff") == ["#modroom"]
            for on, off in (("emoteonly", "emoteonlyoff"), ("r9kbeta", "r9kbetaoff"),
                            ("subscribers", "subscribersoff")):
                assert await call(on) == ["#modroom"]
                assert await call(off) == ["#modroom"]
            assert await call("clear") == ["#modroom"]
            await viewer.expect(r" CLEARCHAT #modroom$")

            await tmi.command('call color ["HotPink"]')
            event = await tmi.expect(lambda e: e.get("method") == "color")
            assert event == {"event": "result", "method": "color", "value": ["HotPink"]}
            await tmi.command("say pink now")
            assert (await viewer.expect_message("PRIVMSG", "pink now")).tags["color"] == "#FF69B4"
        finally:
            await tmi.stop()


async def test_dank_twitch_irc_joins_and_receives_chat_from_the_other_edge(tmp_path):
    async with running_cluster(tmp_path, edges=2) as cluster:
        irc_port, _ = cluster.edge_addresses(0)
        dank = await NodeClient.start("dank_client.js", str(irc_port), "dankbot", cluster.token("dankbot"), "#dankroom")
        try:
            await dank.expect(lambda e: e["event"] == "join_resolved")
            human = await cluster.client("human", edge=1, channels=("#dankroom",))

            await human.send("PRIVMSG #dankroom :hello dank-twitch-irc")
            got = await dank.expect(lambda e: e["event"] == "message")
            assert got["message"] == "hello dank-twitch-irc" and got["channel"] == "#dankroom"
            assert got["user"] == "human" and got["displayName"] == "human" and got["id"]
        finally:
            await dank.stop()


async def test_dank_twitch_irc_say_resolves_and_reaches_the_other_edge_with_its_tags(tmp_path):
    async with running_cluster(tmp_path, edges=2) as cluster:
        irc_port, _ = cluster.edge_addresses(0)
        token = cluster.token("dankbot", user_id="4242", display_name="DankBot")
        dank = await NodeClient.start("dank_client.js", str(irc_port), "dankbot", token, "#dankroom")
        try:
            await dank.expect(lambda e: e["event"] == "join_resolved")
            human = await cluster.client("human", edge=1, channels=("#dankroom",))

            # say() goes out on a second connection that never joins #dankroom and
            # resolves on its USERSTATE #dankroom.
            await dank.command("say hello from dank")
            said = await dank.expect(lambda e: e["event"] in ("said", "say_failed"))
            assert said["event"] == "said", said
            line = await human.expect_message("PRIVMSG", "hello from dank")
            assert line.source.startswith("dankbot!") and line.params[0] == "#dankroom"
            assert line.tags["display-name"] == "DankBot" and line.tags["user-id"] == "4242"
            # The joined connection hears its own sender connection's message like anyone else.
            echoed = await dank.expect(lambda e: e["event"] == "message" and e["message"] == "hello from dank")
            assert echoed["userId"] == "4242" and echoed["displayName"] == "DankBot"
        finally:
            await dank.stop()


async def test_dank_twitch_irc_say_refused_by_chatd_rejects_naming_the_refusal(tmp_path):
    async with running_cluster(tmp_path, edges=2) as cluster:
        irc_port, _ = cluster.edge_addresses(0)
        dank = await NodeClient.start("dank_client.js", str(irc_port), "dankbot", cluster.token("dankbot"), "#dankroom")

        says = 0

        async def say(text: str) -> dict:
            nonlocal says
            says += 1
            seq = says
            await dank.command(f"say {text}")
            return await dank.expect(lambda e: e["event"] in ("said", "say_failed") and e["seq"] == seq)

        try:
            await dank.expect(lambda e: e["event"] == "join_resolved")
            broadcaster = await cluster.client("dankroom", edge=1, channels=("#dankroom",))

            assert (await say("same words"))["event"] == "said"
            await broadcaster.expect_message("PRIVMSG", "same words")
            duplicate = await say("same words")
            assert duplicate["event"] == "say_failed" and duplicate["type"] == "SayError", duplicate
            assert "Failed to say [#dankroom]: same words" in duplicate["error"]
            assert "msg-id=msg_duplicate" in duplicate["error"], duplicate

            await broadcaster.send("PRIVMSG #dankroom :/ban dankbot")
            await broadcaster.expect(r" CLEARCHAT #dankroom :dankbot$")
            banned = await say("let me speak")
            assert banned["event"] == "say_failed" and banned["type"] == "SayError", banned
            assert "msg-id=msg_banned" in banned["error"], banned
            # Neither refused line reached the room: a marker from the broadcaster is next.
            await broadcaster.send("PRIVMSG #dankroom :marker")
            await dank.expect(lambda e: e["event"] == "message" and e["message"] == "marker")
            assert [e["message"] for e in dank.events if e["event"] == "message"] == ["same words", "marker"]
        finally:
            await dank.stop()


async def test_privmsg_without_join_or_in_the_join_write_is_relayed_and_answered_with_userstate(tmp_path):
    async with running_cluster(tmp_path, edges=2) as cluster:
        irc_port, _ = cluster.edge_addresses(0)
        member = await cluster.client("member", edge=1, channels=("#x", "#other"))

        # Registration, JOIN and PRIVMSG in one write, as bots send them.
        eager = await IrcClient.tcp(irc_port, name="eager@edge0")
        try:
            await eager.send_raw(
                f"CAP REQ :{ALL_CAPS}\r\nPASS oauth:{cluster.token('eager')}\r\nNICK eager\r\n"
                "JOIN #x\r\nPRIVMSG #x :hello\r\n".encode()
            )
            said = await member.expect_message("PRIVMSG", "hello")
            assert said.source.startswith("eager!") and said.params[0] == "#x"
            # The message is answered with a USERSTATE carrying its id (the JOIN gets its own); which
            # comes first is not fixed: the JOIN and the message travel separately.
            await eager.wait_for(lambda lines: any(" 366 eager #x " in line for line in lines))
            await eager.wait_for(lambda lines: any(
                parse(line).command == "USERSTATE" and parse(line).params == ["#x"]
                and parse(line).tags.get("id") == said.tags["id"] for line in lines))

            # A channel this connection never joined: relayed to its members all the same.
            await eager.send("PRIVMSG #other :from outside")
            outside = await member.expect_message("PRIVMSG", "from outside")
            assert outside.source.startswith("eager!") and outside.params[0] == "#other"
            await eager.expect(lambda line: parse(line).command == "USERSTATE" and parse(line).params == ["#other"]
                               and parse(line).tags.get("id") == outside.tags["id"])
            # Everything sent so far has been answered; none of it with 442.
            await eager.ping_roundtrip()
            assert not [line for line in eager.lines if " 442 " in line], eager.lines
            assert "#other" not in {m.params[0] for m in eager.received("JOIN")}
        finally:
            await eager.close()
