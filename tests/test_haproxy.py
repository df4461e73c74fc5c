"""HAProxy in front of two edges: clients over TCP and WebSocket chat through it.

The proxy runs a config generated from TEMPLATE (the shape of deploy/haproxy.cfg, on
ephemeral loopback ports); the shipped file itself only gets HAProxy's config check.
"""
from __future__ import annotations

import asyncio
import contextlib
import csv
import subprocess
import time
from pathlib import Path

import aiohttp
from support import IrcClient, running_cluster

from chatd.cluster import die_with_parent, free_port

HAPROXY = "/usr/sbin/haproxy"
DEPLOY_CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "haproxy.cfg"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0

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


def haproxy_config(cluster, edges: int, irc_port: int, ws_port: int, stats_port: int) -> str:
    irc_servers, ws_servers = [], []
    for index in range(edges):
        edge_irc, edge_ws = cluster.edge_addresses(index)
        health_port = edge_http_url(cluster, index).rsplit(":", 1)[1]
        irc_servers.append(f"    server edge{index} 127.0.0.1:{edge_irc} check port {health_port}")
        ws_servers.append(f"    server edge{index} 127.0.0.1:{edge_ws} check port {health_port}")
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
    async with running_cluster(tmp_path, edges=2) as cluster, aiohttp.ClientSession(
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
    # Edges do not speak the PROXY protocol.
    directives = [line.split("#", 1)[0] for line in DEPLOY_CONFIG.read_text().splitlines()]
    assert not any("send-proxy" in line for line in directives)


async def test_tmi_js_behind_haproxy_follows_reconnect_to_the_remaining_edge(tmp_path, reliability):
    from test_clients import NodeClient

    irc_port, ws_port, stats_port = free_port(), free_port(), free_port()
    config_path, log_path = tmp_path / "haproxy.cfg", tmp_path / "haproxy.log"
    async with running_cluster(tmp_path, edges=2) as cluster:
        config_path.write_text(haproxy_config(cluster, 2, irc_port, ws_port, stats_port))
        async with running_haproxy(config_path, log_path) as haproxy, aiohttp.ClientSession() as http:
            await wait_for_port(ws_port, haproxy, log_path)
            await wait_for_healthy_servers(http, stats_port, 4)
            bot = await NodeClient.start("tmi_client.js", str(ws_port), "sturdybot", cluster.token("sturdybot"),
                                         "#survive", env={"TMI_RECONNECT": "1"})
            try:
                await bot.expect(lambda e: e["event"] == "joined")
                counts = await edge_connections(http, cluster, 2)
                doomed = counts.index(1)
                survivor = 1 - doomed
                viewer = await cluster.client("stayer", edge=survivor, channels=("#survive",))

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
