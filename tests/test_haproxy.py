"""HAProxy in front of two edges: clients over TCP and WebSocket chat through it.

The proxy runs a config generated from TEMPLATE (the shape of deploy/haproxy.cfg, on
ephemeral loopback ports); the shipped file itself only gets HAProxy's config check.
As in deploy/haproxy.cfg, the server lines send the PROXY protocol (v2 unless a test
asks for v1) and the edges run with EDGE_PROXY_PROTOCOL=on, so they see each client's
own address; the health checks go to the edges' plain HTTP /health without it.
"""
from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
import websockets
from support import IrcClient, running_cluster

from chatd.cluster import die_with_parent, free_port

HAPROXY = "/usr/sbin/haproxy"
DEPLOY_CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "haproxy.cfg"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
LINE_TIMEOUT = 10.0
# Edges behind HAProxy read the PROXY header HAProxy sends (trusting 127.0.0.1 by default).
PROXY_ENV = {"EDGE_PROXY_PROTOCOL": "on"}
# The whole of 127/8 is loopback on Linux: clients bound to these look like two other hosts.
CLIENT_A, CLIENT_B = "127.0.0.2", "127.0.0.3"
TOO_MANY = "NOTICE * :Too many connections from your address"

TEMPLATE = """\
global
    maxconn 1000

defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
    retries 2
    option redispatch 1

frontend irc
    bind 127.0.0.1:{irc_port}
    default_backend edges_irc

backend edges_irc
    balance leastconn
    option httpchk
    http-check send meth GET uri /health
    http-check expect status 200
    default-server inter 500ms fall 3 rise 1
{irc_servers}

frontend irc_ws
    mode http
    bind 127.0.0.1:{ws_port}
    option forwardfor
    timeout http-request 10s
    default_backend edges_ws

backend edges_ws
    mode http
    balance leastconn
    option httpchk
    http-check send meth GET uri /health
    http-check expect status 200
    default-server inter 500ms fall 3 rise 1
{ws_servers}

frontend stats
    mode http
    bind 127.0.0.1:{stats_port}
    timeout client 10s
    stats enable
    stats uri /
"""


def haproxy_config(cluster, edges: int, irc_port: int, ws_port: int, stats_port: int,
                   send_proxy: str = "send-proxy-v2") -> str:
    irc_servers, ws_servers = [], []
    for index in range(edges):
        edge_irc, edge_ws = cluster.edge_addresses(index)
        health_port = edge_http_url(cluster, index).rsplit(":", 1)[1]
        # `check port`: the check goes to /health without the PROXY header (no check-send-proxy).
        irc_servers.append(f"    server edge{index} 127.0.0.1:{edge_irc} {send_proxy} check port {health_port}")
        ws_servers.append(f"    server edge{index} 127.0.0.1:{edge_ws} {send_proxy} check port {health_port}")
    return TEMPLATE.format(
        irc_port=irc_port, ws_port=ws_port, stats_port=stats_port,
        irc_servers="\n".join(irc_servers), ws_servers="\n".join(ws_servers),
    )


def edge_http_url(cluster, index: int) -> str:
    return cluster.components[f"edge-{index}"].addresses["http"]


@contextlib.asynccontextmanager
async def running_haproxy(config_path: Path, log_path: Path):
    """`haproxy -db` in the foreground; terminated (killed if it lingers) on the way out."""
    assert Path(HAPROXY).exists(), f"{HAPROXY} is missing: apt-get install haproxy (.ci/run does)"
    with await asyncio.to_thread(log_path.open, "wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            HAPROXY, "-f", str(config_path), "-db",
            stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
            except TimeoutError:
                process.kill()
                await process.wait()


async def wait_for_port(port: int, process: asyncio.subprocess.Process, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.returncode is not None:
            raise AssertionError(f"haproxy exited with {process.returncode}: {log_path.read_text()}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"haproxy is not accepting on :{port}: {log_path.read_text()}") from None
            await asyncio.sleep(0.05)
        else:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return


async def wait_for_healthy_servers(http: aiohttp.ClientSession, stats_port: int, expected: int) -> None:
    """Every server UP after a passing /health check (servers start UP before any check)."""
    deadline = time.monotonic() + START_TIMEOUT
    rows: list[dict[str, str]] = []
    while time.monotonic() < deadline:
        async with http.get(f"http://127.0.0.1:{stats_port}/;csv") as response:
            text = await response.text()
        rows = [row for row in csv.DictReader(text.lstrip("# ").splitlines())
                if row["svname"] not in ("FRONTEND", "BACKEND")]
        if len(rows) == expected and all(row["status"] == "UP" and row["check_status"] == "L7OK" for row in rows):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"servers not healthy: {[(r['pxname'], r['svname'], r['status'], r['check_status']) for r in rows]}")


async def direct_client(cluster, login: str, edge: int, channels: tuple[str, ...] = ()) -> IrcClient:
    """A client on an edge's own IRC port, from 127.0.0.1 (a trusted proxy address), that
    opens with a hand-written PROXY v1 header naming itself, as HAProxy's send-proxy would."""
    irc_port, _ = cluster.edge_addresses(edge)
    client = await IrcClient.tcp(irc_port, name=f"{login}@edge{edge}")
    await client.send_raw(f"PROXY TCP4 127.0.0.1 127.0.0.1 40000 {irc_port}\r\n".encode())
    await client.register(login, cluster.token(login))
    for channel in channels:
        await client.join(channel)
    return client


async def irc_from(source: str, port: int, login: str,
                   token: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw IRC connection from `source` (support.IrcClient always uses 127.0.0.1) that
    has sent its registration."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(f"PASS oauth:{token}\r\nNICK {login}\r\n".encode())
    await writer.drain()
    return reader, writer


async def read_until(reader: asyncio.StreamReader, needle: str, what: str) -> list[str]:
    """Lines up to and including the first containing `needle`; fails on close or after LINE_TIMEOUT."""
    lines: list[str] = []
    deadline = time.monotonic() + LINE_TIMEOUT
    while True:
        try:
            raw = await asyncio.wait_for(reader.readline(), max(deadline - time.monotonic(), 0))
        except TimeoutError:
            raise AssertionError(f"{what}: no {needle!r} within {LINE_TIMEOUT}s; got {lines[-8:]}") from None
        except ConnectionError:
            raw = b""
        if not raw:
            raise AssertionError(f"{what}: closed before {needle!r}; got {lines[-8:]}")
        lines.append(raw.decode().rstrip("\r\n"))
        if needle in lines[-1]:
            return lines


async def read_to_close(reader: asyncio.StreamReader, what: str) -> bytes:
    """Everything the peer sends until it closes (a reset counts as a close)."""
    try:
        return await asyncio.wait_for(reader.read(), LINE_TIMEOUT)
    except ConnectionError:
        return b""
    except TimeoutError:
        raise AssertionError(f"{what}: still open after {LINE_TIMEOUT}s") from None


async def wait_for_log(cluster, component: str, event: str, **fields: str) -> None:
    """A JSON log line of `component` with this event and these fields (logs are copied asynchronously)."""
    log_path = cluster.components[component].log_path
    deadline = time.monotonic() + LINE_TIMEOUT
    while True:
        for line in log_path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("event") == event and all(entry.get(k) == v for k, v in fields.items()):
                    return
        if time.monotonic() > deadline:
            raise AssertionError(f"no {event} {fields} in {log_path}: {log_path.read_text()[-2000:]}")
        await asyncio.sleep(0.05)


async def close_writers(writers: list[asyncio.StreamWriter]) -> None:
    for writer in writers:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def edge_connections(http: aiohttp.ClientSession, cluster, edges: int) -> list[int]:
    counts = []
    for index in range(edges):
        async with http.get(f"{edge_http_url(cluster, index)}/health") as response:
            assert response.status == 200
            counts.append((await response.json())["connections"])
    return counts


async def test_clients_through_haproxy_are_spread_over_edges_and_chat(tmp_path):
    irc_port, ws_port, stats_port = free_port(), free_port(), free_port()
    config_path = tmp_path / "haproxy.cfg"
    log_path = tmp_path / "haproxy.log"
    clients: list[IrcClient] = []
    async with running_cluster(tmp_path, edges=2, env=PROXY_ENV) as cluster, aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=5)
    ) as http:
        config_path.write_text(haproxy_config(cluster, 2, irc_port, ws_port, stats_port))
        async with running_haproxy(config_path, log_path) as haproxy:
            try:
                for port in (irc_port, ws_port, stats_port):
                    await wait_for_port(port, haproxy, log_path)
                await wait_for_healthy_servers(http, stats_port, expected=4)

                async def connect(login: str, transport: str) -> IrcClient:
                    if transport == "tcp":
                        client = await IrcClient.tcp(irc_port, name=f"{login}@haproxy")
                    else:
                        client = await IrcClient.ws(ws_port, name=f"{login}@haproxy/ws")
                    clients.append(client)
                    await client.register(login, cluster.token(login))
                    return client

                # leastconn: with one client held open, the next goes to the other edge.
                tcp_a = await connect("alice", "tcp")
                tcp_b = await connect("bob", "tcp")
                assert await edge_connections(http, cluster, 2) == [1, 1]
                # The WebSocket backend balances on its own: again one client per edge.
                ws_a = await connect("carol", "ws")
                ws_b = await connect("dave", "ws")
                assert await edge_connections(http, cluster, 2) == [2, 2]

                channel = "#haproxy"
                for client in clients:
                    await client.join(channel)

                # TCP to everyone (both edges, both transports), then WebSocket back.
                await tcp_a.send(f"PRIVMSG {channel} :hello over tcp")
                for client in (tcp_b, ws_a, ws_b):
                    message = await client.expect_message("PRIVMSG", "hello over tcp")
                    assert message.source.startswith("alice!")
                await ws_b.send(f"PRIVMSG {channel} :hello over websocket")
                for client in (tcp_a, tcp_b, ws_a):
                    message = await client.expect_message("PRIVMSG", "hello over websocket")
                    assert message.source.startswith("dave!")
                # Channel order: had alice's own line come back, it would be here by now.
                assert "hello over tcp" not in tcp_a.texts(channel)
            finally:
                for client in clients:
                    await client.close()


def test_shipped_haproxy_config_passes_the_config_check():
    assert Path(HAPROXY).exists(), f"{HAPROXY} is missing: apt-get install haproxy (.ci/run does)"
    result = subprocess.run(
        [HAPROXY, "-c", "-f", str(DEPLOY_CONFIG)], check=False, capture_output=True, text=True, timeout=30
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "[WARNING]" not in output, output


def test_shipped_haproxy_config_sends_proxy_v2_to_edges_but_not_with_health_checks():
    servers: dict[str, list[list[str]]] = {}
    section = ""
    for line in DEPLOY_CONFIG.read_text().splitlines():
        words = line.split("#", 1)[0].split()
        if words and not line[0].isspace():
            section = " ".join(words)
        elif words and words[0] == "server":
            servers.setdefault(section, []).append(words)
    assert set(servers) == {"backend edges_irc", "backend edges_ws"}
    for section, lines in servers.items():
        for words in lines:
            assert "send-proxy-v2" in words, (section, words)
            # The check has its own port, so HAProxy sends it without the header.
            assert "check" in words and "port" in words and "check-send-proxy" not in words, (section, words)
    assert "EDGE_PROXY_PROTOCOL=on" in DEPLOY_CONFIG.read_text()


async def test_tmi_js_behind_haproxy_follows_reconnect_to_the_remaining_edge(tmp_path, reliability):
    from support import NodeClient

    irc_port, ws_port, stats_port = free_port(), free_port(), free_port()
    config_path, log_path = tmp_path / "haproxy.cfg", tmp_path / "haproxy.log"
    async with running_cluster(tmp_path, edges=2, env=PROXY_ENV) as cluster:
        config_path.write_text(haproxy_config(cluster, 2, irc_port, ws_port, stats_port))
        async with running_haproxy(config_path, log_path) as haproxy, aiohttp.ClientSession() as http:
            await wait_for_port(ws_port, haproxy, log_path)
            await wait_for_healthy_servers(http, stats_port, 4)
            bot = await NodeClient.start("tmi_client.js", str(ws_port), "sturdybot", cluster.token("sturdybot"),
                                         "#survive", env={"TMI_RECONNECT": "1"})
            viewer: IrcClient | None = None
            try:
                await bot.expect(lambda e: e["event"] == "joined")
                counts = await edge_connections(http, cluster, 2)
                doomed = counts.index(1)
                survivor = 1 - doomed
                viewer = await direct_client(cluster, "stayer", survivor, channels=("#survive",))

                started = time.monotonic()
                await cluster.stop_component(f"edge-{doomed}")  # graceful: RECONNECT, then close
                await bot.expect(lambda e: e["event"] == "disconnected")
                rejoined = len([e for e in bot.events if e["event"] == "joined"]) + 1
                await bot.expect(lambda e: e["event"] == "joined"
                                 and len([x for x in bot.events if x["event"] == "joined"]) >= rejoined, timeout=20)
                recovery = time.monotonic() - started
                await viewer.send("PRIVMSG #survive :welcome back")
                got = await bot.expect(lambda e: e["event"] == "message" and e["message"] == "welcome back")
                assert got["user"] == "stayer"
                await bot.command("say thanks")
                await viewer.expect_message("PRIVMSG", "thanks")
                print(f"tmi.js was back in #survive {recovery * 1000:.0f} ms after its edge began to stop")
                reliability("An edge is stopped gracefully (SIGTERM) behind HAProxy",
                            "`RECONNECT`; tmi.js reconnects through HAProxy to the other edge and rejoins",
                            f"tmi.js back in its channel {recovery * 1000:.0f} ms after the stop began",
                            "none for clients that stayed connected; the reconnecting bot misses that window")
            finally:
                await bot.stop()
                if viewer is not None:
                    await viewer.close()


@pytest.mark.parametrize("send_proxy", ["send-proxy-v2", "send-proxy"])
async def test_per_address_limit_counts_the_real_client_behind_haproxy(tmp_path, send_proxy):
    irc_port, ws_port, stats_port = free_port(), free_port(), free_port()
    config_path, log_path = tmp_path / "haproxy.cfg", tmp_path / "haproxy.log"
    writers: list[asyncio.StreamWriter] = []
    # One edge: the limit is per edge process, and leastconn would spread one address over several.
    env = PROXY_ENV | {"EDGE_MAX_CONNECTIONS_PER_IP": "2"}
    async with running_cluster(tmp_path, edges=1, env=env) as cluster, aiohttp.ClientSession() as http:
        config_path.write_text(haproxy_config(cluster, 1, irc_port, ws_port, stats_port, send_proxy))
        async with running_haproxy(config_path, log_path) as haproxy:
            try:
                for port in (irc_port, ws_port, stats_port):
                    await wait_for_port(port, haproxy, log_path)
                await wait_for_healthy_servers(http, stats_port, expected=2)

                for index in range(2):
                    login = f"first{index}"
                    reader, writer = await irc_from(CLIENT_A, irc_port, login, cluster.token(login))
                    writers.append(writer)
                    await read_until(reader, " 376 ", f"{login} from {CLIENT_A}")

                # Every connection reaches the edge from HAProxy's 127.0.0.1; only the header
                # tells it that this is the third from 127.0.0.2.
                reader, writer = await irc_from(CLIENT_A, irc_port, "third", cluster.token("third"))
                writers.append(writer)
                refused = (await read_to_close(reader, f"third from {CLIENT_A}")).decode()
                assert refused == f":tmi.twitch.tv {TOO_MANY}\r\n", refused
                await wait_for_log(cluster, "edge-0", "connection_refused", peer=CLIENT_A)

                # Another address through the same HAProxy still gets in, over TCP and WebSocket.
                reader, writer = await irc_from(CLIENT_B, irc_port, "other", cluster.token("other"))
                writers.append(writer)
                await read_until(reader, " 376 ", f"other from {CLIENT_B}")
                async with websockets.connect(f"ws://127.0.0.1:{ws_port}", subprotocols=["irc"],
                                              local_addr=(CLIENT_B, 0)) as socket:
                    await socket.send(f"PASS oauth:{cluster.token('otherws')}\r\nNICK otherws\r\n")
                    deadline = time.monotonic() + LINE_TIMEOUT
                    received = ""
                    while " 376 " not in received:
                        received += await asyncio.wait_for(socket.recv(), max(deadline - time.monotonic(), 0))
                    # That WebSocket client is 127.0.0.3's second connection: its third is refused too.
                    reader, writer = await irc_from(CLIENT_B, irc_port, "otherthird", cluster.token("otherthird"))
                    writers.append(writer)
                    assert TOO_MANY in (await read_to_close(reader, f"third from {CLIENT_B}")).decode()
            finally:
                await close_writers(writers)


async def test_edge_drops_untrusted_proxy_peers_and_serves_a_trusted_v1_header(tmp_path):
    async with running_cluster(tmp_path, edges=1, env=PROXY_ENV) as cluster:
        irc_port, ws_port = cluster.edge_addresses(0)
        # 127.0.0.2 is not in EDGE_TRUSTED_PROXIES (127.0.0.1,::1): dropped before a byte
        # is read, even though it opens with a well-formed header.
        reader, writer = await asyncio.open_connection("127.0.0.1", irc_port, local_addr=(CLIENT_A, 0))
        try:
            writer.write(f"PROXY TCP4 203.0.113.9 127.0.0.1 40000 {irc_port}\r\n".encode()
                         + f"PASS oauth:{cluster.token('sneaky')}\r\nNICK sneaky\r\n".encode())
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            assert await read_to_close(reader, f"direct IRC from {CLIENT_A}") == b""
        finally:
            await close_writers([writer])
        # On the WebSocket listener too: no HTTP response at all.
        with pytest.raises((websockets.InvalidHandshake, ConnectionError)):
            async with websockets.connect(f"ws://127.0.0.1:{ws_port}", local_addr=(CLIENT_A, 0),
                                          open_timeout=LINE_TIMEOUT):
                pass
        await wait_for_log(cluster, "edge-0", "proxy_untrusted", peer=CLIENT_A)

        # A trusted peer (127.0.0.1) with a hand-written v1 header is served.
        client = await direct_client(cluster, "trusted", 0)
        try:
            await client.ping_roundtrip()
        finally:
            await client.close()
