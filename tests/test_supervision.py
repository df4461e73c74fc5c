"""Supervision: a component that dies comes back on its ports, and the cluster serves on (SPEC §2)."""
from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import socket
import sys
from pathlib import Path

import pytest
from support import IrcClient, running_cluster

from chatd.cluster import load_or_create_secret
from common.irc import parse
from common.processes import RESTART_MAX_DELAY, RestartBackoff, exit_status
from common.tokens import issue_token

CHATD = str(Path(sys.executable).parent / "chatd")
RESTART_DEADLINE = 20.0  # a restart takes 0.5 s of backoff and a process start
FAST = {"RATE_LIMIT": "500"}  # probes go out until one is delivered; they must not hit the rate limit


# ---- the pure parts
@pytest.mark.parametrize(
    ("exits", "delays", "crash_loop"),
    [
        # (seconds since start, seconds it had been up) per exit → the delay before each restart
        ([(0, 1), (2, 1), (5, 1)], [0.5, 1, 2], False),
        ([(0, 1), (2, 1), (5, 1), (10, 1), (20, 1), (31, 1), (42, 1)], [0.5, 1, 2, 4, 10, 10, 10], True),
        ([(0, 1), (2, 1), (40, 30)], [0.5, 1, 0.5], False),  # up long enough: the delay starts over
        ([(0, 1), (1, 1), (2, 1), (3, 1), (100, 1)], [0.5, 1, 2, 4, 8], False),  # old exits age out of the window
        ([(n, 30) for n in range(0, 200, 40)], [0.5] * 5, False),  # a crash now and then is no loop
        ([(n * 11, 11) for n in range(5)], [0.5, 0.5, 0.5, 0.5, 10], True),  # five in a minute is, up or not
    ],
)
def test_restart_delay_doubles_to_a_cap_resets_after_a_long_run_and_flags_a_crash_loop(exits, delays, crash_loop):
    backoff = RestartBackoff()
    assert [backoff.next_delay(now, uptime) for now, uptime in exits] == delays
    assert backoff.crash_looping is crash_loop
    assert max(delays) <= RESTART_MAX_DELAY


@pytest.mark.parametrize(
    ("returncode", "told"),
    [(0, "status 0"), (2, "status 2"), (-9, "killed by SIGKILL"), (-15, "killed by SIGTERM"), (-200, "killed by signal 200")],
)
def test_an_exit_is_told_by_its_status_or_signal(returncode, told):
    assert exit_status(returncode) == told


# ---- whole clusters
async def chat_until_delivered(sender: IrcClient, receiver: IrcClient, channel: str, timeout: float = 20.0) -> None:
    """Send numbered probes until one arrives: while a component is down the cluster may refuse them."""
    deadline = asyncio.get_running_loop().time() + timeout
    for n in itertools.count():
        await sender.send(f"PRIVMSG {channel} :probe {n}")
        try:
            await receiver.expect_message("PRIVMSG", f"probe {n}", timeout=0.5)
            return
        except AssertionError:
            if asyncio.get_running_loop().time() > deadline:
                raise


def exit_lines(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "chatd.cluster" and r.getMessage().startswith(name)]


@pytest.mark.asyncio
async def test_a_killed_edge_is_restarted_on_its_ports_and_its_clients_chat_across_edges_again(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="chatd.cluster")
    async with running_cluster(tmp_path, supervise=True, edges=2, shards=1, env=FAST) as cluster:
        alice = await cluster.client("alice", edge=0, channels=("#kept",))
        bob = await cluster.client("bob", edge=1, channels=("#kept",))
        await chat_until_delivered(alice, bob, "#kept")
        dead = cluster.components["edge-1"]

        cluster.kill("edge-1", signal.SIGKILL)
        back = await asyncio.wait_for(cluster.wait_restarted("edge-1"), RESTART_DEADLINE)

        assert back.process.pid != dead.process.pid
        assert back.addresses == dead.addresses  # IRC, WebSocket and internal HTTP ports alike
        await asyncio.wait_for(bob.closed.wait(), 5)  # its connection died with the process
        bob = await cluster.client("bob", edge=1, channels=("#kept",))
        await chat_until_delivered(alice, bob, "#kept")
        await bob.send("PRIVMSG #kept :back on edge-1")
        await alice.expect_message("PRIVMSG", "back on edge-1")
        assert cluster.restarts == {"edge-1": 1}
        assert exit_lines(caplog, "edge-1") == [
            "edge-1 exited (killed by SIGKILL); restarting in 0.5 s",
            f"edge-1 is back (pid {back.process.pid}) on {' '.join(back.addresses.values())}",
        ]


@pytest.mark.asyncio
async def test_a_killed_exchange_and_clue_are_restarted_on_their_ports_and_chat_resumes(tmp_path):
    async with running_cluster(tmp_path, supervise=True, edges=1, shards=1, env=FAST) as cluster:
        alice = await cluster.client("alice", channels=("#pipeline",))
        bob = await cluster.client("bob", channels=("#pipeline",))
        await chat_until_delivered(alice, bob, "#pipeline")
        dead = {name: cluster.components[name] for name in ("exchange-0", "clue-0")}

        for name in dead:
            cluster.kill(name, signal.SIGKILL)
        for name, component in dead.items():
            back = await asyncio.wait_for(cluster.wait_restarted(name), RESTART_DEADLINE)
            assert back.process.pid != component.process.pid
            assert back.addresses == component.addresses

        await chat_until_delivered(alice, bob, "#pipeline")
        await bob.send("PRIVMSG #pipeline :and back")
        await alice.expect_message("PRIVMSG", "and back")
        assert cluster.restarts == {"exchange-0": 1, "clue-0": 1}


@pytest.mark.asyncio
async def test_a_killed_redis_shard_is_restarted_on_its_port_with_its_data(tmp_path):
    async with running_cluster(tmp_path, supervise=True, edges=1, shards=1, env=FAST) as cluster:
        troll = await cluster.client("troll", channels=("#keep",))
        owner = await cluster.client("keep", channels=("#keep",))
        await owner.send("PRIVMSG #keep :/ban troll")
        assert parse(await owner.expect(r" NOTICE #keep ")).tags["msg-id"] == "ban_success"
        dead = cluster.components["redis-0"]

        cluster.kill("redis-0", signal.SIGKILL)
        back = await asyncio.wait_for(cluster.wait_restarted("redis-0"), RESTART_DEADLINE)
        assert back.addresses == dead.addresses

        deadline = asyncio.get_running_loop().time() + RESTART_DEADLINE
        while True:  # the clue's connections to the shard come back on their own
            await troll.send("PRIVMSG #keep :am I free?")
            answer = parse(await troll.expect(r" NOTICE #keep ")).tags["msg-id"]
            if answer != "msg_service_unavailable" or asyncio.get_running_loop().time() > deadline:
                break
        assert answer == "msg_banned"  # the ban outlived the process (AOF)
        assert cluster.restarts == {"redis-0": 1}


@pytest.mark.asyncio
async def test_stopping_while_a_restart_is_under_way_or_pending_leaves_no_process(tmp_path):
    async with running_cluster(tmp_path, supervise=True, edges=1, shards=1) as cluster:
        seen = {component.process.pid for component in cluster.components.values()}
        dead_edge, dead_clue = cluster.components["edge-0"], cluster.components["clue-0"]

        cluster.kill("edge-0", signal.SIGKILL)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RESTART_DEADLINE
        while cluster.components["edge-0"] is dead_edge:  # the new edge process is spawned...
            assert loop.time() < deadline, "edge-0 was never started again"
            await asyncio.sleep(0.005)
        starting = cluster.components["edge-0"]
        assert not starting.addresses  # ...and is not listening yet
        cluster.kill("clue-0", signal.SIGKILL)  # this one's restart is still to come
        await dead_clue.process.wait()
        seen.add(starting.process.pid)

        await cluster.stop()

        assert cluster.components["clue-0"] is dead_clue  # never started again
        assert all(component.process.returncode is not None for component in cluster.components.values())
        assert not [pid for pid in seen if alive(pid)]
        assert not children(os.getpid())
        assert cluster.restarts == {}
        assert not [task.get_name() for task in asyncio.all_tasks() if task.get_name().startswith("chatd ")]


# ---- `chatd up`
def children(pid: int) -> set[int]:
    """Live processes whose parent is `pid`, from /proc."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def command_line(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_text().split("\0")


async def read_until(stream: asyncio.StreamReader, seen: list[str], prefix: str, timeout: float) -> str:
    """Lines from `stream` into `seen` until one starts with `prefix`; that line."""
    async def scan() -> str:
        while line := (await stream.readline()).decode():
            seen.append(line.rstrip("\n"))
            if line.startswith(prefix):
                return seen[-1]
        raise AssertionError(f"stream ended waiting for {prefix!r}: {seen}")

    try:
        return await asyncio.wait_for(scan(), timeout)
    except TimeoutError:
        raise AssertionError(f"no line starting {prefix!r} within {timeout} s: {seen}") from None


@pytest.mark.asyncio
async def test_chatd_up_restarts_a_killed_child_says_so_keeps_serving_and_stops_clean_on_sigint(tmp_path):
    data_dir = tmp_path / "data"
    process = await asyncio.create_subprocess_exec(
        CHATD, "up", "--edges", "1", "--shards", "1", "--irc-port", "0", "--ws-port", "0", "--redis-port", "0",
        "--data-dir", str(data_dir), cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    stdout: list[str] = []
    stderr: list[str] = []
    clients: list[IrcClient] = []
    try:
        await read_until(process.stdout, stdout, "ready", 60)
        edge_line = next(line for line in stdout if line.startswith("edge-0"))
        irc_port = int(edge_line.split()[1].rsplit(":", 1)[1])
        started = children(process.pid)
        assert len(started) == 4  # shard, exchange, clue, edge
        edge_pid = next(pid for pid in started if command_line(pid)[1:3] == ["-m", "edge"])

        os.kill(edge_pid, signal.SIGKILL)
        back = await read_until(process.stderr, stderr, "chatd up: edge-0 is back", RESTART_DEADLINE)
        assert stderr == ["chatd up: edge-0 exited (killed by SIGKILL); restarting in 0.5 s", back]
        assert f":{irc_port}" in back
        now = children(process.pid)
        assert len(now) == 4 and edge_pid not in now

        secret = load_or_create_secret(data_dir)  # what `chatd token issue --data-dir` signs with
        for login in ("alice", "bob"):
            client = await IrcClient.tcp(irc_port, login)
            clients.append(client)
            await client.register(login, issue_token(secret, login))
            await client.join("#upkept")
        await chat_until_delivered(*clients, "#upkept")
    finally:
        for client in clients:
            await client.close()
        process.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(process.wait(), 30)
    assert code == 0
    assert not [pid for pid in started | now if alive(pid)], "chatd up left processes behind"


@pytest.mark.asyncio
async def test_an_edge_that_cannot_start_again_is_retried_later_and_each_try_is_one_line(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="chatd.cluster")
    async with running_cluster(tmp_path, supervise=True, edges=1, shards=1) as cluster:
        dead = cluster.components["edge-0"]
        irc_port, _ = cluster.edge_addresses(0)

        cluster.kill("edge-0", signal.SIGKILL)
        await dead.process.wait()
        with socket.socket() as squatter:  # takes the edge's IRC port while it is down
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", irc_port))
            squatter.listen()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + RESTART_DEADLINE
            while not any("did not start" in line for line in exit_lines(caplog, "edge-0")):
                assert loop.time() < deadline, f"no failed start logged: {exit_lines(caplog, 'edge-0')}"
                await asyncio.sleep(0.05)
        back = await asyncio.wait_for(cluster.wait_restarted("edge-0"), RESTART_DEADLINE)

        assert back.addresses == dead.addresses
        lines = exit_lines(caplog, "edge-0")
        assert lines[0] == "edge-0 exited (killed by SIGKILL); restarting in 0.5 s"
        assert lines[1].startswith("edge-0 did not start (edge-0 exited with 1: ")
        assert lines[1].endswith("; restarting in 1 s") and "address already in use" in lines[1]
        assert lines[2:] == [f"edge-0 is back (pid {back.process.pid}) on {' '.join(back.addresses.values())}"]
        assert cluster.restarts == {"edge-0": 1}
        await cluster.client("alice", channels=("#again",))
