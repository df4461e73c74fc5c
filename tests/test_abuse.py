"""Edge hygiene and abuse, with real processes: connections that never finish
their handshake, floods of JOINs, whispers and commands, a client that sends
faster than its messages can be checked, and malformed requests to every HTTP
API — each gets a clear answer and harms no one else."""
from __future__ import annotations

import asyncio
import json
import signal
import socket

import aiohttp
import pytest
import websockets
from support import IrcClient, running_cluster

from clue import limits
from common.irc import parse
from common.metrics import Metrics
from common.shards import ShardSet


async def edge_health(cluster, edge: int = 0) -> dict:
    async with aiohttp.ClientSession() as http, http.get(
        cluster.components[f"edge-{edge}"].addresses["http"] + "/health"
    ) as response:
        return await response.json()


async def wait_for(check, what: str, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, f"waited {timeout} s for {what}"
        await asyncio.sleep(0.05)


def open_from(address: str, port: int) -> socket.socket:
    """A raw connection from a chosen loopback address (all of 127/8 is loopback)."""
    sock = socket.socket()
    sock.bind((address, 0))
    sock.connect(("127.0.0.1", port))
    return sock


@pytest.mark.asyncio
async def test_half_open_connections_time_out_and_count_against_their_address(tmp_path, reliability):
    env = {"EDGE_HANDSHAKE_TIMEOUT": "1s", "EDGE_REGISTRATION_TIMEOUT": "2s", "EDGE_MAX_CONNECTIONS_PER_IP": "40"}
    async with running_cluster(tmp_path, edges=1, env=env) as cluster:
        irc_port, ws_port = cluster.edge_addresses(0)
        # 20 WebSocket handshakes that never finish and 20 IRC connections that never register.
        stuck = [open_from("127.0.0.2", ws_port) for _ in range(20)] + [open_from("127.0.0.2", irc_port)
                                                                       for _ in range(20)]
        for sock in stuck[:20]:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never the rest
        await wait_for(lambda: _connections_at_least(cluster, 40), "the stuck connections to be counted")
        # They hold the address's 40 slots: one more from it is refused, others are not.
        extra = await IrcClient.tcp_from("127.0.0.2", irc_port, "extra")
        await extra.expect(r"NOTICE \* :Too many connections from your address$")
        someone = await cluster.client("someone_else", channels=("#busy",))
        await someone.ping_roundtrip()
        # The handshake timeout closes the WebSocket ones, the registration timeout the IRC ones.
        for sock in stuck:
            sock.settimeout(10)
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
            sock.close()
            assert b"Registration timed out" in data or data == b"", data[-200:]
        again = await IrcClient.tcp_from("127.0.0.2", irc_port, "again")
        await again.register("justinfan31337")
        await again.close()
        await extra.close()
        reliability("300 half-open connections (a WebSocket handshake or IRC registration never finished)",
                    "closed after EDGE_HANDSHAKE_TIMEOUT (5 s) / EDGE_REGISTRATION_TIMEOUT (10 s); until then they "
                    "count against their address's EDGE_MAX_CONNECTIONS_PER_IP (200), so they cannot lock others out",
                    "the address's slots are free again as soon as they close (1 s / 2 s in the test)", "0")


async def _connections_at_least(cluster, count: int) -> bool:
    return (await edge_health(cluster))["connections"] >= count


@pytest.mark.asyncio
async def test_a_join_flood_is_cut_at_twitchs_rate_and_others_join_meanwhile(tmp_path):
    async with running_cluster(tmp_path, edges=1) as cluster:
        irc_port, _ = cluster.edge_addresses(0)
        flooder = await IrcClient.tcp(irc_port, "flooder")
        await flooder.register("justinfan666")
        await flooder.send(*(f"JOIN {','.join(f'#flood{n}' for n in range(start, start + 100))}"
                             for start in range(0, 10_000, 100)))  # 10,000 JOINs
        await flooder.expect(r"msg_join_ratelimit|NOTICE #flood\d+ :You are joining channels too quickly")
        viewer = await cluster.client("calm_viewer", channels=("#calm",))
        talker = await cluster.client("calm_talker", channels=("#calm",))
        await talker.send("PRIVMSG #calm :still works")
        await viewer.expect_message("PRIVMSG", "still works")
        await flooder.ping_roundtrip()
        joined = sum(1 for line in flooder.lines if " 366 justinfan666 #flood" in line)
        assert joined <= 20, joined  # Twitch's 20 per 10 s, for anonymous connections too
        assert (await edge_health(cluster))["channels"] <= 20 + 4


@pytest.mark.asyncio
async def test_commands_count_against_the_message_rate_and_whispers_have_their_own(tmp_path):
    async with running_cluster(tmp_path, edges=1, env={"RATE_LIMIT": "4"}) as cluster:
        target = await cluster.client("whisper_target")
        chatty = await cluster.client("chatty")
        await chatty.send(*(f"PRIVMSG #elsewhere :/w whisper_target hello {n}" for n in range(4)))
        refusal = parse(await chatty.expect(r" NOTICE #elsewhere "))  # whispers that go through answer nothing
        assert refusal.tags["msg-id"] == "whisper_limit_per_sec"
        assert refusal.params[-1] == "You are sending whispers too fast. Try again in a second."
        for n in range(3):
            await target.expect_message("WHISPER", f"hello {n}")
        # Four commands so far: the fifth message of any kind is over RATE_LIMIT=4.
        await chatty.send("PRIVMSG #elsewhere :/color Blue")
        assert "msg-id=msg_ratelimit" in await chatty.expect(r" NOTICE #elsewhere :Your message was not sent")


@pytest.mark.asyncio
async def test_whisper_windows_per_second_and_per_minute(tmp_path):
    async with running_cluster(tmp_path, edges=1, shards=1) as cluster:
        host, port = cluster.redis_addresses[0].split(":")
        shards = ShardSet([(host, int(port))], 2, 1.0, Metrics("127.0.0.1", 9, "t", "t"))
        try:
            windows = ((3, 60_000), (5, 600_000))  # the same script, with windows a test can fill
            verdicts = [await limits.charge(shards, "42", "whispers", f"w{n}", windows) for n in range(4)]
            assert verdicts == [0, 0, 0, 1]
            assert await limits.charge(shards, "43", "whispers", "x", windows) == 0  # per user
            assert await limits.charge(shards, "42", "whispers", "late", ((10, 60_000), (3, 600_000))) == 2
        finally:
            await shards.close()


@pytest.mark.asyncio
async def test_a_client_that_outruns_its_checks_is_not_read_until_they_catch_up(tmp_path, reliability):
    env = {"EDGE_MAX_INFLIGHT": "5", "RATE_LIMIT": "1000", "HTTP_TIMEOUT": "10s"}
    async with running_cluster(tmp_path, edges=1, env=env) as cluster:
        viewer = await cluster.client("pressure_viewer", channels=("#pressure",))
        hasty = await cluster.client("hasty")
        cluster.kill("clue-0", signal.SIGSTOP)  # checks stop answering
        try:
            await hasty.send(*(f"PRIVMSG #pressure :hurry {n}" for n in range(300)))
            await wait_for(lambda: _paused(cluster), "the edge to stop reading the hasty client")
        finally:
            cluster.kill("clue-0", signal.SIGCONT)
        texts = await viewer.wait_for_texts(300, "#pressure", timeout=60)
        assert texts == [f"hurry {n}" for n in range(300)]
        assert (await edge_health(cluster))["paused"] == 0
        reliability("A client sends faster than its messages can be checked (clue hung)",
                    "the edge stops reading it once EDGE_MAX_INFLIGHT (100; 5 in the test) messages wait for an "
                    "answer, so its lines wait in its own socket, not in the edge's memory", "reading resumes as "
                    "answers come", "0 (all 300 delivered, in order)")


async def _paused(cluster) -> bool:
    return (await edge_health(cluster))["paused"] == 1


BAD_BODIES = [b"not json", b"[1, 2, 3]", b'{"messages": "no"}', b'{"messages": [{"id": 1}]}', b"{}",
              b'{"events": [{"channel": 5}]}', b'\xff\xfe', b'{"token": null}']


@pytest.mark.asyncio
async def test_every_http_api_answers_malformed_requests_with_a_json_error(tmp_path):
    async with running_cluster(tmp_path, edges=1) as cluster:
        internal = {"Authorization": f"Bearer {cluster.internal_token}"}
        targets = [(cluster.clue_urls[0], path) for path in ("/v1/login", "/v1/joins", "/v1/messages", "/v1/tail")]
        targets += [(cluster.exchange_urls[0], path) for path in
                    ("/v1/publish", "/v1/subscribe", "/v1/sync", "/v1/heartbeat", "/v1/range", "/v1/outcome",
                     "/v1/lookup", "/v1/move")]
        targets += [(cluster.components["edge-0"].addresses["http"], "/v1/deliver")]
        async with aiohttp.ClientSession() as http:
            for base, path in targets:
                for body in BAD_BODIES:
                    async with http.post(base + path, data=body, headers=internal) as response:
                        answer = await response.json()
                        assert response.status == 400, (path, body, response.status, answer)
                        assert set(answer) == {"error", "status", "message"} and answer["status"] == 400
                async with http.post(base + path, data=b"x" * (17 * 1024 * 1024), headers=internal) as response:
                    assert response.status == 413 and (await response.json())["status"] == 413
            # The public moderation API, with a user's token: a NUL in a whisper is a 400, not a traceback.
            user = {"Authorization": f"Bearer {cluster.token('apiuser')}"}
            url = f"{cluster.clue_urls[0]}/api/v1/channels/apiuser/commands"
            async with http.post(url, data=json.dumps({"command": "/w someone hi\u0000there"}), headers=user) as r:
                assert r.status == 400 and (await r.json())["error"] == "Bad Request"
            async with http.post(url, data=b"{", headers=user) as r:
                assert r.status == 400
        for name in cluster.components:
            log = (cluster.log_dir / f"{name}.log").read_text()
            assert "Traceback" not in log and "internal_error" not in log, name


@pytest.mark.asyncio
async def test_a_websocket_protocol_error_closes_with_a_status_and_one_warning(tmp_path):
    async with running_cluster(tmp_path, edges=1) as cluster:
        _, ws_port = cluster.edge_addresses(0)
        reader, writer = await asyncio.open_connection("127.0.0.1", ws_port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                     b"Sec-WebSocket-Protocol: irc\r\n\r\n")
        assert b"101" in await reader.readuntil(b"\r\n\r\n")
        # A masked NICK, then an unmasked PING: clients must mask (RFC 6455 5.1), a protocol error.
        nick = b"NICK justinfan5\r\n"
        mask = b"abcd"
        writer.write(bytes([0x81, 0x80 | len(nick)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(nick)))
        writer.write(bytes([0x81, 11]) + b"PING :x\r\n\x00\x00")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(65536), 10)
        rest = data
        while chunk := await asyncio.wait_for(reader.read(65536), 10):
            rest += chunk
        close = rest[rest.rfind(b"\x88"):]
        assert close[:1] == b"\x88" and int.from_bytes(close[2:4], "big") == 1002, rest[-40:]
        writer.close()
        someone = await cluster.client("after_the_error", transport="ws")
        await someone.ping_roundtrip()
        log = (cluster.log_dir / "edge-0.log").read_text()
        assert log.count('"websocket_protocol_error"') == 1 and "Traceback" not in log


@pytest.mark.asyncio
async def test_websocket_clients_that_stop_mid_handshake_do_not_lock_out_others(tmp_path):
    env = {"EDGE_HANDSHAKE_TIMEOUT": "1s", "EDGE_MAX_CONNECTIONS_PER_IP": "0"}
    async with running_cluster(tmp_path, edges=1, env=env) as cluster:
        _, ws_port = cluster.edge_addresses(0)
        stuck = [socket.create_connection(("127.0.0.1", ws_port)) for _ in range(300)]
        await wait_for(lambda: _connections_at_least(cluster, 300), "300 half-open handshakes")
        await wait_for(lambda: _connections_at_most(cluster, 0), "the handshake timeout to close them")
        for sock in stuck:
            sock.close()
        async with websockets.connect(f"ws://127.0.0.1:{ws_port}", subprotocols=["irc"]) as ws:
            await ws.send("NICK justinfan77\r\n")
            assert " 001 " in await asyncio.wait_for(ws.recv(), 10)


async def _connections_at_most(cluster, count: int) -> bool:
    return (await edge_health(cluster))["connections"] <= count


@pytest.mark.asyncio
async def test_a_websocket_over_the_address_limit_is_told_why(tmp_path):
    async with running_cluster(tmp_path, edges=1, env={"EDGE_MAX_CONNECTIONS_PER_IP": "1"}) as cluster:
        _, ws_port = cluster.edge_addresses(0)
        first = await cluster.client("justinfan1", transport="ws")
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(f"ws://127.0.0.1:{ws_port}", subprotocols=["irc"])
        assert refused.value.response.status_code == 429
        assert refused.value.response.body == b"Too many connections from your address\n"
        await first.ping_roundtrip()
