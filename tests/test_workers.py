"""Edge workers: N edge processes behind the same ports (SO_REUSEPORT), each an edge of its own,
restarted when they die and drained one by one or all together."""
from __future__ import annotations

import asyncio
import inspect
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from helix_support import Api, client_add, user_token
from support import IrcClient, running_cluster
from test_cli import alive, children_of, token_from_cli

from chatd.cluster import free_port
from edge.workers import reserve

CHATD = str(Path(sys.executable).parent / "chatd")
RESTART_DEADLINE = 20.0  # a restart takes 0.5 s of backoff and a process start
KEPT_WS, KEPT_IRC = 65270, 65280  # fixed ports, so edge-0's reconnect_url can name edge-1
MAX_CLIENTS = 24  # connections opened until every worker holds one (all on one of two: 1 in 2^23)


async def host_health(cluster, edge: int = 0) -> dict:
    """The edge's own /health: the host's sums and every worker's /health."""
    async with aiohttp.ClientSession() as http, \
            http.get(cluster.components[f"edge-{edge}"].addresses["http"] + "/health") as response:
        return await response.json()


async def clients_on_every_worker(connect, health) -> list[IrcClient]:
    """Connect (and join) clients until every worker holds at least one."""
    clients: list[IrcClient] = []
    while len(clients) < MAX_CLIENTS:
        clients.append(await connect(len(clients)))
        if len(clients) > 1 and all(worker["connections"] for worker in (await health())["workers"]):
            return clients
    raise AssertionError(f"{MAX_CLIENTS} connections and a worker holds none: {await health()}")


async def host_sessions(cluster, expected: int) -> bool:
    return sum(worker["eventsub_sessions"] for worker in (await host_health(cluster))["workers"]) == expected


async def wait_until(condition, what: str, timeout: float = RESTART_DEADLINE):
    """Poll `condition` (a function or a coroutine function) until it gives something true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (found := await answer(condition())):
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.1)
    return found


async def answer(value):
    return await value if inspect.isawaitable(value) else value


class Inbox:
    """Every EventSub message of one socket, read by a task of its own: a receive() that is
    cancelled or times out makes aiohttp drop the connection (close code 1006), so the test
    never waits on the socket itself for something that may not come."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.messages: list[dict] = []
        self._new = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                self.messages.append(json.loads(message.data))
                self._new.set()

    def has(self, kind: str) -> bool:
        return any(message["metadata"]["message_type"] == kind for message in self.messages)

    async def next(self, kind: str, timeout: float = 10.0) -> dict:
        """The next message of this type (those before it are passed over)."""
        async def found() -> dict:
            while True:
                for index, message in enumerate(self.messages):
                    if message["metadata"]["message_type"] == kind:
                        del self.messages[:index + 1]
                        return message
                self.messages.clear()
                self._new.clear()
                await self._new.wait()
        return await asyncio.wait_for(found(), timeout)

    async def close(self) -> None:
        await self.ws.close()
        await self._task


# ---- the ports
def test_a_port_someone_listens_on_is_refused_even_to_another_edges_workers():
    with socket.socket() as plain:
        plain.bind(("127.0.0.1", 0))
        plain.listen()
        with pytest.raises(OSError):
            reserve("127.0.0.1", plain.getsockname()[1])
    port, held = reserve("127.0.0.1", 0)  # one edge's workers ...
    with socket.socket() as worker:
        worker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        worker.bind(("127.0.0.1", port))
        worker.listen()
        with pytest.raises(OSError):  # ... are not quietly shared with another's
            reserve("127.0.0.1", port)
    for sock in held:
        sock.close()


@pytest.mark.parametrize(("env", "variable"), [({"EDGE_WORKERS": "0"}, "EDGE_WORKERS"),
                                               ({"EDGE_WORKERS": "2", "EDGE_ADVERTISED_URL": "http://10.0.0.1:7100"},
                                                "EDGE_ADVERTISED_URL")])
def test_bad_worker_settings_stop_the_edge_with_one_line(env, variable):
    base = {"PATH": os.environ["PATH"], "CHAT_INTERNAL_TOKEN": "i" * 32, "CLUE_URLS": "http://127.0.0.1:1",
            "EXCHANGE_URLS": "http://127.0.0.1:1"}
    result = subprocess.run([CHATD, "edge"], env=base | env, capture_output=True, text=True, timeout=30,
                            stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and variable in lines[0] and "Traceback" not in result.stderr, result.stderr


# ---- whole clusters
async def test_connections_spread_over_the_workers_and_chat_crosses_workers_and_edges(tmp_path):
    async with running_cluster(tmp_path, edges=2, workers=2, shards=1) as cluster:
        clients = await clients_on_every_worker(
            lambda n: cluster.client(f"viewer{n}", edge=0, transport="ws" if n % 2 else "tcp", channels=("#both",)),
            lambda: host_health(cluster, 0))
        health = await host_health(cluster, 0)
        assert health["ok"] and health["connections"] == len(clients)
        assert sorted(worker["edge"] for worker in health["workers"]) == ["edge-0-w0", "edge-0-w1"]
        assert len({worker["http"] for worker in health["workers"]}) == 2  # the exchange reaches each one
        far = await cluster.client("faraway", edge=1, channels=("#both",))

        await clients[0].send("PRIVMSG #both :to every worker and edge")
        for client in [*clients[1:], far]:
            await client.expect_message("PRIVMSG", "to every worker and edge")
        await far.send("PRIVMSG #both :back from edge 1")
        for client in clients:
            await client.expect_message("PRIVMSG", "back from edge 1")
        edge1 = await host_health(cluster, 1)
        assert edge1["connections"] == 1 and len(edge1["workers"]) == 2


async def test_a_killed_worker_is_restarted_while_clients_on_the_other_chat_on(tmp_path):
    async with running_cluster(tmp_path, edges=1, workers=2, shards=1) as cluster:
        clients = await clients_on_every_worker(
            lambda n: cluster.client(f"user{n}", channels=("#stay",)), lambda: host_health(cluster))
        before = {worker["worker"]: worker for worker in (await host_health(cluster))["workers"]}
        victim = before[0]
        os.kill(victim["pid"], signal.SIGKILL)

        # Exactly the victim's clients lose their connection; the others chat on.
        await wait_until(lambda: sum(client.closed.is_set() for client in clients) == victim["connections"],
                         "the killed worker's clients see their connection close")
        survivors = [client for client in clients if not client.closed.is_set()]
        assert len(survivors) == before[1]["connections"] > 0
        await survivors[0].send("PRIVMSG #stay :still here")
        for client in survivors[1:]:
            await client.expect_message("PRIVMSG", "still here")
        for client in survivors:
            await client.ping_roundtrip()

        async def restarted() -> dict | None:
            worker = (await host_health(cluster))["workers"][0]
            return worker if worker["ok"] and worker["pid"] != victim["pid"] else None

        back = await wait_until(restarted, "worker 0 back with a new process")
        assert back["restarts"] == 1 and back["edge"] == "edge-0-w0"
        log = (cluster.log_dir / "edge-0.log").read_text()
        assert '"worker_exited"' in log and "killed by SIGKILL" in log

        # The new worker is an edge again: a client that lands on it chats with the survivors.
        async def on_the_new_worker() -> IrcClient | None:
            client = await cluster.client(f"late{len(clients)}", channels=("#stay",))
            clients.append(client)
            return client if (await host_health(cluster))["workers"][0]["connections"] else None

        late = await wait_until(on_the_new_worker, "a connection on the restarted worker")
        await survivors[0].send("PRIVMSG #stay :welcome back")
        await late.expect_message("PRIVMSG", "welcome back")


async def test_chatd_up_with_workers_from_a_cluster_file_stops_with_reconnect_from_every_worker(tmp_path):
    irc, ws, redis = free_port(), free_port(), free_port()
    config = tmp_path / "cluster.toml"
    config.write_text(f"[redis]\nshards = 1\nport = {redis}\n\n"
                      f"[edges]\ncount = 1\nworkers = 2\nirc_port = {irc}\nws_port = {ws}\n\n"
                      '[env]\nCHANNEL_FLOOR = "0"\n')
    process = await asyncio.create_subprocess_exec(CHATD, "up", "--config", str(config), cwd=tmp_path,
                                                   stdout=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    output: list[str] = []
    clients: list[IrcClient] = []
    try:
        while not output or output[-1] != "ready":
            line = await asyncio.wait_for(process.stdout.readline(), 60)
            assert line, f"chatd up exited: {output}"
            output.append(line.decode().rstrip())
        edge_line = next(line for line in output if line.startswith("edge-0"))
        assert f":{irc}" in edge_line and f":{ws}" in edge_line and "(2 workers)" in edge_line
        health_url = edge_line.split()[3] + "/health"
        children = children_of(process.pid)
        assert len(children) == 1 + 1 + 1 + 1 + 2  # shard, exchange, clue, the edge and its two workers

        async def health() -> dict:
            async with aiohttp.ClientSession() as http, http.get(health_url) as response:
                return await response.json()

        async def connect(n: int) -> IrcClient:
            client = await (IrcClient.ws(ws, f"ws{n}") if n % 2 else IrcClient.tcp(irc, f"tcp{n}"))
            await client.register(f"viewer{n}", token_from_cli(tmp_path, f"viewer{n}"))
            await client.join("#drain")
            clients.append(client)
            return client

        await clients_on_every_worker(connect, health)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
        for client in clients:  # every worker told every one of its clients before closing
            await client.expect(r"^:tmi\.twitch\.tv RECONNECT$")
            await asyncio.wait_for(client.closed.wait(), 10)
        assert not [pid for pid in children if alive(pid)], "chatd up left processes behind"
    finally:
        for client in clients:
            await client.close()
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_eventsub_sessions_move_off_a_draining_worker_to_another(tmp_path):
    async with running_cluster(tmp_path, edges=1, workers=2, shards=1) as cluster, aiohttp.ClientSession() as http:
        client_id, secret = client_add(cluster, "movebot")
        _, ws_port = cluster.edge_addresses(0)
        api = Api(http, f"http://127.0.0.1:{ws_port}", client_id)
        room = await cluster.client("moveroom", channels=("#moveroom",))
        room_id = room.received("ROOMSTATE")[0].tags["room-id"]
        bot = await cluster.client("movebot")
        bot_id = bot.received("GLOBALUSERSTATE")[0].tags["user-id"]
        token = (await user_token(api, secret, bot_id, "user:read:chat"))["access_token"]

        sockets: dict[str, aiohttp.ClientWebSocketResponse] = {}  # session id → its socket

        async def open_session() -> None:
            ws = await http.ws_connect(api.base.replace("http", "ws") + "/ws")
            session_id = json.loads((await ws.receive(timeout=10)).data)["payload"]["session"]["id"]
            status, body, _ = await api.call("POST", "/eventsub/subscriptions", token, json={
                "type": "channel.chat.message", "version": "1",
                "condition": {"broadcaster_user_id": room_id, "user_id": bot_id},
                "transport": {"method": "websocket", "session_id": session_id}})
            assert status == 202, body
            sockets[session_id] = ws

        while len(sockets) < MAX_CLIENTS:
            await open_session()
            workers = (await host_health(cluster))["workers"]
            if len(sockets) > 1 and all(worker["eventsub_sessions"] for worker in workers):
                break
        draining = workers[0]
        assert draining["eventsub_sessions"] > 0 and sum(w["eventsub_sessions"] for w in workers) == len(sockets)

        inboxes = {session_id: Inbox(ws) for session_id, ws in sockets.items()}
        os.kill(draining["pid"], signal.SIGTERM)  # one worker drains; the other keeps listening
        await wait_until(lambda: sum(inbox.has("session_reconnect") for inbox in inboxes.values())
                         == draining["eventsub_sessions"], "session_reconnect on each of the draining worker's sessions")

        async def move(session_id: str) -> None:
            """What a client does on session_reconnect: connect where it says, leave the old socket once welcomed."""
            old = inboxes[session_id]
            url = (await old.next("session_reconnect"))["payload"]["session"]["reconnect_url"]
            assert url.startswith(f"ws://127.0.0.1:{ws_port}/ws?reconnect=")  # the shared port
            # Through the same HTTP session as the Helix calls: its pool may still hold a connection the
            # draining worker accepted, and a session that lands there is told to reconnect once more.
            new = Inbox(await http.ws_connect(url))
            welcome = await new.next("session_welcome")
            assert welcome["payload"]["session"]["id"] == session_id
            inboxes[session_id] = new
            await old.close()

        async def drained_and_back() -> dict | None:
            for session_id, inbox in list(inboxes.items()):
                if inbox.has("session_reconnect"):
                    await move(session_id)
            health = await host_health(cluster)
            worker = health["workers"][0]
            return health if worker["ok"] and worker["pid"] != draining["pid"] else None

        health = await wait_until(drained_and_back, "the drained worker back with a new process")
        assert health["workers"][0]["restarts"] == 1
        # Every session lives on, counted by the host, and hears its channel.
        await wait_until(lambda: host_sessions(cluster, len(sockets)), f"{len(sockets)} EventSub sessions on the host")
        speaker = await cluster.client("moveroom")  # `room` may have been on the drained worker: RECONNECT
        await speaker.send("PRIVMSG #moveroom :after the move")
        for session_id, inbox in inboxes.items():
            note = await inbox.next("notification")
            assert note["payload"]["event"]["message"]["text"] == "after the move", (session_id, inbox.ws.close_code)
        for inbox in inboxes.values():
            await inbox.close()


async def test_a_session_that_comes_back_to_a_draining_edge_on_a_kept_alive_connection_is_sent_on(tmp_path):
    """An HTTP client keeps connections alive, so a reconnect to a shared port (or through a proxy that
    reuses its connections) can reach the draining edge after its port closed: the session is welcomed
    there and told at once to reconnect again, instead of being cut when the drain ends."""
    edge_env = {0: {"EDGE_PUBLIC_URL": f"ws://127.0.0.1:{KEPT_WS + 1}"}}
    async with running_cluster(tmp_path, edges=2, shards=1, ws_port=KEPT_WS, irc_port=KEPT_IRC,
                               edge_env=edge_env) as cluster, aiohttp.ClientSession() as http:
        client_id, secret = client_add(cluster, "keptbot")
        api = Api(http, f"http://127.0.0.1:{KEPT_WS}", client_id)  # edge-0
        room = await cluster.client("keptroom", edge=1)
        room_id = room.received("GLOBALUSERSTATE")[0].tags["user-id"]  # a channel's id is its broadcaster's
        bot_id = (await cluster.client("keptbot", edge=1)).received("GLOBALUSERSTATE")[0].tags["user-id"]
        token = (await user_token(api, secret, bot_id, "user:read:chat"))["access_token"]
        first = Inbox(await http.ws_connect(f"ws://127.0.0.1:{KEPT_WS}/ws"))
        session_id = (await first.next("session_welcome"))["payload"]["session"]["id"]
        status, body, _ = await api.call("POST", "/eventsub/subscriptions", token, json={  # leaves a kept-alive connection
            "type": "channel.chat.message", "version": "1",
            "condition": {"broadcaster_user_id": room_id, "user_id": bot_id},
            "transport": {"method": "websocket", "session_id": session_id}})
        assert status == 202, body

        stopping = asyncio.get_running_loop().create_task(cluster.stop_component("edge-0"))
        url = (await first.next("session_reconnect"))["payload"]["session"]["reconnect_url"]
        assert url.startswith(f"ws://127.0.0.1:{KEPT_WS + 1}/ws?reconnect=")
        # Back to edge-0, whose port no longer listens: only the kept-alive connection gets there.
        back = Inbox(await http.ws_connect(url.replace(f":{KEPT_WS + 1}/", f":{KEPT_WS}/")))
        assert (await back.next("session_welcome"))["payload"]["session"]["id"] == session_id
        onward = (await back.next("session_reconnect"))["payload"]["session"]["reconnect_url"]
        assert onward.startswith(f"ws://127.0.0.1:{KEPT_WS + 1}/ws?reconnect={session_id}.")
        final = Inbox(await http.ws_connect(onward))
        assert (await final.next("session_welcome"))["payload"]["session"]["id"] == session_id
        await first.close()
        await back.close()
        await asyncio.wait_for(stopping, RESTART_DEADLINE)

        await room.send("PRIVMSG #keptroom :onward")
        note = await final.next("notification")
        assert note["payload"]["event"]["message"]["text"] == "onward"
        await final.close()
