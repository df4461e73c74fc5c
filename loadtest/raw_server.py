"""The ceiling for fan-out on this machine: a minimal uvloop relay.

It ignores registration (answering JOIN with a bare 366 so clients know they
are in), and relays every PRIVMSG it receives to every other connection,
one write per connection per received chunk, with no parsing beyond lines.
Usage: python -m loadtest.raw_server PORT
"""
from __future__ import annotations

import asyncio
import sys

import uvloop

members: set[RawConnection] = set()


class RawConnection(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.partial = b""
        members.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        members.discard(self)

    def data_received(self, data: bytes) -> None:
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        relay = []
        for line in lines:
            if line.startswith(b"PRIVMSG "):
                relay.append(b":sender!sender@raw " + line.rstrip(b"\r") + b"\r\n")
            elif line.startswith(b"JOIN "):
                self.transport.write(b":raw 366 member " + line[5:].rstrip(b"\r") + b" :End of /NAMES list\r\n")
        if relay:
            payload = b"".join(relay)
            for member in members:
                if member is not self:
                    member.transport.write(payload)


async def main(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(RawConnection, "127.0.0.1", port, backlog=4096)
    print("listening", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
