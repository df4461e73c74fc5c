"""Unmodified third-party Twitch clients against a running cluster."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest
from support import running_cluster

JS_DIR = Path(__file__).parent / "js"


class NodeClient:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.events: list[dict] = []

    @classmethod
    async def start(cls, script: str, *args: str, env: dict[str, str] | None = None) -> NodeClient:
        node = shutil.which("node")
        assert node, "node is required for the client tests (see .ci/run)"
        process = await asyncio.create_subprocess_exec(
            node, str(JS_DIR / script), *args, cwd=JS_DIR, env=os.environ | (env or {}),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def expect(self, predicate, timeout: float = 15.0) -> dict:
        for event in self.events:
            if predicate(event):
                return event

        async def read() -> dict:
            assert self.process.stdout is not None
            while line := await self.process.stdout.readline():
                event = json.loads(line)
                self.events.append(event)
                if predicate(event):
                    return event
            raise AssertionError(f"client exited; events: {self.events}")

        return await asyncio.wait_for(read(), timeout)

    async def command(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()


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
