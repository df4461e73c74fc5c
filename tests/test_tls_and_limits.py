"""IRC over TLS and wss with a configured certificate; per-address connection limits."""
from __future__ import annotations

import asyncio
import ssl

import pytest
import trustme
import websockets
from support import IrcClient, running_cluster


@pytest.mark.asyncio
async def test_irc_over_tls_and_wss(tmp_path):
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1", "localhost")
    cert, key = tmp_path / "edge.pem", tmp_path / "edge.key"
    certificate.cert_chain_pems[0].write_to_path(cert)
    certificate.private_key_pem.write_to_path(key)
    env = {"EDGE_TLS_CERT": str(cert), "EDGE_TLS_KEY": str(key),
           "EDGE_IRC_TLS_LISTEN": "127.0.0.1:0", "EDGE_WSS_LISTEN": "127.0.0.1:0"}
    async with running_cluster(tmp_path, edges=1, env=env) as cluster:
        addresses = cluster.components["edge-0"].addresses
        ircs_port = int(addresses["ircs"].rsplit(":", 1)[1])
        wss_port = int(addresses["wss"].rsplit(":", 1)[1])
        trusted = ssl.create_default_context()
        authority.configure_trust(trusted)

        reader, writer = await asyncio.open_connection("127.0.0.1", ircs_port, ssl=trusted, server_hostname="127.0.0.1")
        writer.write(f"PASS oauth:{cluster.token('secure')}\r\nNICK secure\r\nJOIN #tls\r\n".encode())
        lines = []
        while not any(" 366 " in line for line in lines):
            lines.append((await asyncio.wait_for(reader.readline(), 10)).decode())
        async with websockets.connect(f"wss://127.0.0.1:{wss_port}", ssl=trusted, subprotocols=["irc"]) as ws:
            assert ws.subprotocol == "irc"
            await ws.send("NICK justinfan4242\r\nJOIN #tls\r\n")
            received = ""
            while " 366 " not in received:
                received += await asyncio.wait_for(ws.recv(), 10)
            writer.write(b"PRIVMSG #tls :sealed\r\n")
            while "PRIVMSG #tls :sealed" not in received:
                received += await asyncio.wait_for(ws.recv(), 10)
        writer.close()

        # Plain TLS without trusting the certificate is refused by the client, as it should be.
        with pytest.raises(ssl.SSLError):
            await asyncio.open_connection("127.0.0.1", ircs_port, ssl=ssl.create_default_context(),
                                          server_hostname="127.0.0.1")


@pytest.mark.asyncio
async def test_connections_per_address_are_limited(tmp_path, reliability):
    async with running_cluster(tmp_path, edges=1, env={"EDGE_MAX_CONNECTIONS_PER_IP": "2"}) as cluster:
        irc_port, ws_port = cluster.edge_addresses(0)
        first = await IrcClient.tcp(irc_port, "first")
        second = await IrcClient.ws(ws_port, "second")
        third = await IrcClient.tcp(irc_port, "third")
        await third.expect(r"NOTICE \* :Too many connections from your address$")
        await asyncio.wait_for(third.closed.wait(), 5)
        await first.send("NICK justinfan1")
        await first.expect(r" 376 ")
        await second.send("NICK justinfan2")
        await second.expect(r" 376 ")
        await first.close()
        # A freed slot can be used again (once the edge has seen the close).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while True:
            fourth = await IrcClient.tcp(irc_port, "fourth")
            await fourth.send("NICK justinfan4")
            line = await fourth.expect(r" 376 |Too many connections")
            if " 376 " in line:
                break
            await fourth.close()
            assert loop.time() < deadline, "the freed slot was never given back"
        for client in (second, third, fourth):
            await client.close()
        reliability("Too many connections from one address (EDGE_MAX_CONNECTIONS_PER_IP)",
                    "`NOTICE * :Too many connections from your address`, then close",
                    "a slot is usable again as soon as a connection closes", "0")
