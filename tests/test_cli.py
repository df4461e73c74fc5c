"""The `chatd` command: `up`, `token issue`, and refusing bad configuration."""
from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from support import IrcClient

from common.irc import parse

CHATD = str(Path(sys.executable).parent / "chatd")


def token_from_cli(cwd: Path, login: str) -> str:
    result = subprocess.run([CHATD, "token", "issue", login], cwd=cwd, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1  # the token and nothing else
    return result.stdout.strip()


def children_of(pid: int) -> set[int]:
    """Every live descendant of `pid`, read from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


class ChatdUp:
    def __init__(self, cwd: Path, same_ports_as: ChatdUp | None = None) -> None:
        self.cwd = cwd
        if same_ports_as is not None:
            self.irc, self.ws, self.redis = same_ports_as.irc, same_ports_as.ws, same_ports_as.redis
        else:
            # Consecutive ports for edges i = 0, 1 and shards 0-2, as SPEC §2 lays them out, above the
            # ephemeral range (1024-65000): the second run takes the same ones, and no outgoing
            # connection can have been given one of them in between.
            while True:
                base = random.randrange(65001, 65529)
                if all(_port_free(p) for p in range(base, base + 7)):
                    break
            self.irc, self.ws, self.redis = [base, base + 1], [base + 2, base + 3], base + 4
        self.process: asyncio.subprocess.Process | None = None
        self.output: list[str] = []

    async def start(self) -> None:
        irc, ws = self.irc[0], self.ws[0]
        self.process = await asyncio.create_subprocess_exec(
            CHATD, "up", "--edges", "2", "--shards", "3", "--irc-port", str(irc), "--ws-port", str(ws),
            "--redis-port", str(self.redis), cwd=self.cwd,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        assert self.process.stdout is not None

        async def until_ready() -> None:
            while line := (await self.process.stdout.readline()).decode():
                self.output.append(line.rstrip())
                if line.startswith("ready"):
                    return
            raise AssertionError(f"chatd up exited: {self.output} {(await self.process.stderr.read()).decode()}")

        await asyncio.wait_for(until_ready(), 60)

    async def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), 30)


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.asyncio
async def test_chatd_up_runs_a_cluster_keeps_state_and_leaves_nothing_behind(tmp_path):
    up = ChatdUp(tmp_path)
    await up.start()
    try:
        printed = "\n".join(up.output)
        for port in (*up.irc, *up.ws, up.redis, up.redis + 1, up.redis + 2):
            assert f":{port}" in printed
        children = children_of(up.process.pid)
        assert len(children) >= 3 + 1 + 1 + 2  # shards, exchange, clue, edges
        assert f":{up.ws[0]}/console" in printed

        # `chatd console` prints the console's link with the admin token that opens it.
        link = subprocess.run([CHATD, "console"], cwd=tmp_path, capture_output=True, text=True, timeout=60).stdout
        base, _, token = link.strip().partition("/console#token=")
        assert base.endswith(f":{up.ws[0]}") and len(token) >= 16
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/console/api/state", headers={"Authorization": f"Bearer {token}"}) as answer:
                assert answer.status == 200
                assert {node["kind"] for node in (await answer.json())["nodes"]} == {"edge", "clue", "exchange"}

        alice = await IrcClient.tcp(up.irc[0], "alice")
        await alice.register("alice", token_from_cli(tmp_path, "alice"))
        await alice.join("#home")
        bob = await IrcClient.ws(up.ws[1], "bob")
        await bob.register("bob", token_from_cli(tmp_path, "bob"))
        await bob.join("#home")
        await alice.send("PRIVMSG #home :across edges")
        await bob.expect_message("PRIVMSG", "across edges")

        # The broadcaster sets up moderation state that must outlive the processes.
        carol = await IrcClient.tcp(up.irc[0], "carol")  # a user exists once logged in
        await carol.register("carol", token_from_cli(tmp_path, "carol"))
        home = await IrcClient.tcp(up.irc[0], "home")
        await home.register("home", token_from_cli(tmp_path, "home"))
        await home.join("#home")
        for command, answer in (("/mod bob", "mod_success"), ("/ban alice", "ban_success"),
                                ("/timeout carol 3600", "timeout_success")):
            await home.send(f"PRIVMSG #home :{command}")
            assert parse(await home.expect(r" NOTICE #home ")).tags["msg-id"] == answer
        await home.send("PRIVMSG #home :/slow 30")
        await home.expect(r"slow=30 :tmi\.twitch\.tv ROOMSTATE #home$")
        for client in (alice, bob, carol, home):
            await client.close()
    finally:
        code = await up.stop()
    assert code == 0
    assert not [pid for pid in children if alive(pid)], "chatd up left processes behind"

    # Same directory and ports, new run: the secret, ban, timeout, role and mode are all still there.
    up = ChatdUp(tmp_path, same_ports_as=up)
    await up.start()
    try:
        clients = {}
        for login in ("alice", "bob", "carol"):
            clients[login] = await IrcClient.tcp(up.irc[1], login)
            await clients[login].register(login, token_from_cli(tmp_path, login))
            await clients[login].join("#home")
        roomstate = parse(await clients["bob"].expect(r" ROOMSTATE #home$"))
        assert roomstate.tags["slow"] == "30"
        await clients["alice"].send("PRIVMSG #home :am I still banned?")
        assert parse(await clients["alice"].expect(r" NOTICE #home ")).tags["msg-id"] == "msg_banned"
        await clients["carol"].send("PRIVMSG #home :still timed out?")
        assert parse(await clients["carol"].expect(r" NOTICE #home ")).tags["msg-id"] == "msg_timedout"
        await clients["bob"].send("PRIVMSG #home :still a moderator")
        assert (await clients["carol"].expect_message("PRIVMSG", "still a moderator")).tags["badges"] == "moderator/1"
        for client in clients.values():
            await client.close()
    finally:
        assert await up.stop() == 0


@pytest.mark.parametrize(
    ("service", "env", "variable"),
    [
        ("clue", {"CHAT_SECRET": "s" * 32, "EXCHANGE_URLS": "http://127.0.0.1:1"}, "CACHE_SERVERS"),
        ("clue", {"CHAT_SECRET": "s" * 32, "EXCHANGE_URLS": "http://127.0.0.1:1",
                  "CACHE_SERVERS": "127.0.0.1:7000", "CACHE_TIMEOUT": "fast"}, "CACHE_TIMEOUT"),
        ("clue", {"EXCHANGE_URLS": "http://127.0.0.1:1", "CACHE_SERVERS": "127.0.0.1:7000"}, "CHAT_SECRET"),
        ("edge", {"CLUE_URLS": "127.0.0.1:7100", "EXCHANGE_URLS": "http://127.0.0.1:1"}, "CLUE_URLS"),
        ("exchange", {"CHAT_INTERNAL_TOKEN": ""}, "CHAT_INTERNAL_TOKEN"),
        ("exchange", {"HIGHLIGHT_WINDOW": "fast"}, "HIGHLIGHT_WINDOW"),
        ("exchange", {"HIGHLIGHT_WEBHOOKS": "http://127.0.0.1:9/hook"}, "HIGHLIGHT_WEBHOOK_SECRET"),
        ("exchange", {"HIGHLIGHT_WEBHOOKS": "http://127.0.0.1:9/hook", "HIGHLIGHT_WEBHOOK_SECRET": "hunter2"},
         "HIGHLIGHT_WEBHOOK_SECRET"),
        ("exchange", {"HIGHLIGHT_WEBHOOKS": "ftp://nowhere"}, "HIGHLIGHT_WEBHOOKS"),
    ],
)
def test_services_refuse_bad_configuration_with_one_line(service, env, variable):
    base = {"PATH": os.environ["PATH"], "CHAT_INTERNAL_TOKEN": "i" * 32}
    result = subprocess.run(
        [CHATD, service], env=base | env, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and variable in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_token_issue_refuses_a_bad_login(tmp_path):
    result = subprocess.run([CHATD, "token", "issue", "Not A Login"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.asyncio
async def test_chatd_up_runs_the_example_multi_cluster_file(tmp_path):
    example = Path(__file__).resolve().parents[1] / "deploy" / "cluster.example.toml"
    config = tmp_path / "cluster.toml"
    # The shipped file on ports of our own choosing (0: any free port).
    config.write_text(example.read_text().replace("= 7000", "= 0").replace("= 6667", "= 0").replace("= 8080", "= 0"))
    process = await asyncio.create_subprocess_exec(
        CHATD, "up", "--config", str(config), cwd=tmp_path, stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    output: list[str] = []
    try:
        async def until_ready() -> None:
            while line := (await process.stdout.readline()).decode():
                output.append(line.rstrip())
                if line.startswith("ready"):
                    return
            raise AssertionError(f"chatd up exited: {output}")

        await asyncio.wait_for(until_ready(), 90)
        names = [line.split()[0] for line in output]
        for name in ("exchange-0", "exchange-1", "exchange-event-0", "exchange-group-0",
                     "clue-0", "clue-1", "clue-event-0", "clue-group-0", "edge-0", "edge-1"):
            assert name in names
        assert len(children_of(process.pid)) == 3 + 4 + 4 + 2
        ports = {line.split()[0]: int(line.split()[1].rsplit(":", 1)[1]) for line in output if line.startswith("edge-")}

        route = await asyncio.create_subprocess_exec(CHATD, "route", "set", "#party", "event", cwd=tmp_path)
        assert await asyncio.wait_for(route.wait(), 30) == 0
        host = await IrcClient.tcp(ports["edge-0"], "host")
        await host.register("host", token_from_cli(tmp_path, "host"))
        await host.join("#party")
        guest = await IrcClient.tcp(ports["edge-1"], "guest")
        await guest.register("guest", token_from_cli(tmp_path, "guest"))
        await guest.join("#party")
        await host.send("PRIVMSG #party :over the event cluster")
        await guest.expect_message("PRIVMSG", "over the event cluster")
        await host.send("PRIVMSG #jtv :/w guest and a whisper through the group cluster")
        await guest.expect_message("WHISPER", "and a whisper through the group cluster")
        await host.close()
        await guest.close()
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
