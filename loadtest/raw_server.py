"""The ceiling for fan-out on this machine: a minimal uvloop relay.

It ignores registration (answering JOIN with a bare 366 so clients know they
are in), and relays every PRIVMSG it receives to the other members of its
channel, one write per connection per received chunk, with no parsing beyond
lines and the channel name.
Usage: python -m loadtest.raw_server PORT
"""
from __future__ import annotations

import asyncio
import sys

import uvloop

channels: dict[bytes, set[RawConnection]] = {}


class RawConnection(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.partial = b""
        self.joined: list[bytes] = []

    def connection_lost(self, exc: Exception | None) -> None:
        for channel in self.joined:
            channels[channel].discard(self)

    def data_received(self, data: bytes) -> None:
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        relay: dict[bytes, list[bytes]] = {}
        for line in lines:
            if line.startswith(b"PRIVMSG "):
                channel = line[8:line.find(b" ", 8)]
                relay.setdefault(channel, []).append(b":sender!sender@raw " + line.rstrip(b"\r") + b"\r\n")
            elif line.startswith(b"JOIN "):
                for channel in line[5:].rstrip(b"\r").split(b","):
                    channels.setdefault(channel, set()).add(self)
                    self.joined.append(channel)
                    self.transport.write(b":raw 366 member " + channel + b" :End of /NAMES list\r\n")
        for channel, payload in relay.items():
            joined = b"".join(payload)
            for member in channels.get(channel, ()):
                if member is not self:
                    member.transport.write(joined)


async def main(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(RawConnection, "127.0.0.1", port, backlog=4096)
    print("listening", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
