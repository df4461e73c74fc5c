"""Unmodified third-party Twitch clients against a running cluster."""
from __future__ import annotations

import asyncio
import json
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
    async def start(cls, script: str, *args: str) -> NodeClient:
        node = shutil.which("node")
        assert node, "node is required for the client tests (see .ci/run)"
        process = await asyncio.create_subprocess_exec(
            node, str(JS_DIR / script), *args, cwd=JS_DIR,
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
