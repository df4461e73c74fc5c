"""A socket-level fuzzer against a running edge: it survives, stays small, and
everyone else keeps chatting."""
from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
import websockets
from support import IrcClient, running_cluster

VALID = [
    "CAP REQ :twitch.tv/tags twitch.tv/commands",
    "PRIVMSG #fuzz :hello there",
    "@client-nonce=abc;reply-parent-msg-id=1 PRIVMSG #fuzz :reply",
    "JOIN #fuzz,#other",
    "PART #fuzz",
    "PING :tmi.twitch.tv",
    "NICK justinfan123",
    "USER a 0 * :b",
]


def mutate(line: str, rng: random.Random) -> bytes:
    data = bytearray(line.encode())
    for _ in range(rng.randint(1, 4)):
        choice = rng.random()
        position = rng.randrange(len(data) + 1)
        if choice < 0.3 and data:
            data[min(position, len(data) - 1)] = rng.randrange(256)
        elif choice < 0.6:
            data[position:position] = rng.choice([b"\0", b"\r", b" :", b"@", b";", b"\xff\xfe", b"=" * 50])
        else:
            del data[position:position + rng.randint(1, 5)]
    return bytes(data)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def raw(port: int, payload: bytes, linger: float = 0.0) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(payload)
        await writer.drain()
        try:
            await asyncio.wait_for(reader.read(1 << 20), linger or 0.5)
        except TimeoutError:
            pass
        writer.close()
    except (ConnectionError, OSError):
        pass  # the edge may cut a fuzzer off: that is allowed


@pytest.mark.asyncio
async def test_edge_survives_fuzzing_and_other_clients_are_unaffected(tmp_path, reliability):
    env = {"EDGE_REGISTRATION_TIMEOUT": "2s"}
    async with running_cluster(tmp_path, edges=1, env=env) as cluster:
        irc_port, ws_port = cluster.edge_addresses(0)
        edge = cluster.components["edge-0"]
        alice = await cluster.client("alice", channels=("#fuzz",))
        bob = await cluster.client("bob", transport="ws", channels=("#fuzz",))
        rss_before = rss_kib(edge.process.pid)
        rng = random.Random(20261122)

        attacks = []
        # Random lines, mutated valid lines, invalid UTF-8 and control characters, pipelined.
        for _ in range(20):
            garbage = b"".join(bytes(rng.randrange(256) for _ in range(rng.randint(0, 300))) + b"\r\n"
                               for _ in range(50))
            attacks.append(raw(irc_port, garbage))
            mutated = b"".join(mutate(rng.choice(VALID), rng) + b"\r\n" for _ in range(200))
            attacks.append(raw(irc_port, b"NICK justinfan77\r\nJOIN #fuzz\r\n" + mutated))
        # One-megabyte lines, with and without an end.
        attacks.append(raw(irc_port, b"PRIVMSG #fuzz :" + b"A" * (1 << 20) + b"\r\nPING :ok\r\n"))
        attacks.append(raw(irc_port, b"@" + b"t=" * (1 << 19)))
        await asyncio.gather(*attacks)

        # WebSocket: binary frames, no subprotocol, a frame too big, broken framing.
        async with websockets.connect(f"ws://127.0.0.1:{ws_port}") as plain:  # no `irc` offered
            await plain.send(b"NICK justinfan5\r\nJOIN #fuzz\r\n")  # binary frame
            assert " 001 " in await asyncio.wait_for(plain.recv(), 5)
        try:
            async with websockets.connect(f"ws://127.0.0.1:{ws_port}", subprotocols=["irc"], max_size=None) as big:
                await big.send("PRIVMSG #fuzz :" + "B" * 200_000)
                await asyncio.wait_for(big.recv(), 5)
        except websockets.ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 1009  # message too big
        handshake = (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        await raw(ws_port, handshake + bytes(rng.randrange(256) for _ in range(5000)))
        await raw(ws_port, b"GET / HTTP/1.1\r\n" + b"X: " + b"y" * 100_000 + b"\r\n\r\n")

        # Slowloris: connections that trickle a registration never finish it.
        slow = [await IrcClient.tcp(irc_port, f"slow{n}") for n in range(30)]
        for byte in b"NICK justi":
            for client in slow:
                await client.send_raw(bytes([byte]))
            await asyncio.sleep(0.1)
        for client in slow:
            await asyncio.wait_for(client.closed.wait(), 10)  # registration timeout
            await client.close()

        assert edge.running, "the edge crashed"
        await alice.send("PRIVMSG #fuzz :still standing")
        await bob.expect_message("PRIVMSG", "still standing")
        await bob.send("PRIVMSG #fuzz :me too")
        await alice.expect_message("PRIVMSG", "me too")
        grown = rss_kib(edge.process.pid) - rss_before
        assert grown < 64 * 1024, f"edge grew by {grown} KiB"
        log = edge.log_path.read_text()
        assert "Traceback" not in log, log[-2000:]
        reliability("Fuzzing: random and mutated lines, invalid UTF-8, NUL/CR/LF, 1 MB lines, WebSocket binary, "
                    "oversized and broken frames, no subprotocol, 30 slowloris connections",
                    "fuzzers get IRC errors (417, 421, NOTICE) or are closed; slowloris closed by the "
                    "registration timeout; other clients chat on",
                    f"no crash, no traceback; edge memory +{grown} KiB", "0")
