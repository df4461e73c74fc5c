"""Swarm generator: tens of thousands of chat connections from several processes.

One Locust process cannot hold that many sockets; this spreads cheap asyncio
listeners over several fleet processes (each process may open at most 20,000
files), has a few logged-in senders post at a fixed rate spread over Zipf-sized
channels, and reports deliveries per second, send→receive latency and lost
messages. Traffic goes only to a loopback address and stops by itself.

    python -m loadtest.swarm --port 6667 6668 --connections 30000 --rate 300 --duration 20
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import sys
from pathlib import Path

from chatd.cluster import load_or_create_secret
from loadtest.fleet import FleetConfig, FleetGroup
from loadtest.systems import ExternalChatd, Sender
from loadtest.traffic import drive, zipf_sizes

MAX_CONNECTIONS_PER_PROCESS = 19_000


def loopback(host: str) -> str:
    if host == "localhost" or ipaddress.ip_address(host).is_loopback:
        return host
    raise argparse.ArgumentTypeError("the swarm only sends traffic to a loopback address")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtest.swarm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", type=loopback, default="127.0.0.1")
    parser.add_argument("--port", type=int, nargs="+", default=[6667],
                        help="edges' IRC (or, with --transport ws, WebSocket) ports; connections are spread over them")
    parser.add_argument("--sender-port", type=int, help="IRC port for the senders (default: the first --port)")
    parser.add_argument("--transport", choices=["tcp", "ws"], default="tcp")
    parser.add_argument("--connections", type=int, default=20_000)
    parser.add_argument("--processes", type=int, default=0, help="fleet processes (default: enough for the count)")
    parser.add_argument("--channels", type=int, default=100)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--rate", type=int, default=200, help="messages per second in, over all channels")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--data-dir", help="where `chatd up` keeps its secret (default .chatd or $CHATD_DATA_DIR)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser


async def run(args: argparse.Namespace) -> dict:
    secret = load_or_create_secret(Path(args.data_dir or os.environ.get("CHATD_DATA_DIR") or ".chatd"))
    target = ExternalChatd(args.host, args.sender_port or args.port[0], secret)
    channels = [f"#swarm{i}" for i in range(args.channels)]
    sizes = dict(zip(channels, zipf_sizes(args.connections, args.channels), strict=True))
    members = [channel for channel in channels for _ in range(sizes[channel])]
    random.Random(11).shuffle(members)
    ports = args.port
    processes = max(args.processes, len(ports), -(-args.connections // MAX_CONNECTIONS_PER_PROCESS))
    fleets = [FleetGroup() for _ in ports]
    senders: list[Sender] = []
    try:
        for index, (port, fleet) in enumerate(zip(ports, fleets, strict=True)):
            share = members[index :: len(ports)]
            await fleet.start(
                FleetConfig(host=args.host, port=port, transport=args.transport, dialect="twitch",
                            caps="twitch.tv/tags twitch.tv/commands", channels=share,
                            probe_every=max(1, args.connections // 500), ready_timeout=600,
                            first_index=index * args.connections),
                processes=max(1, processes // len(ports)),
            )
        joined = sum(fleet.joined for fleet in fleets)
        failed = sum(fleet.failed for fleet in fleets)
        print(f"connected {joined} of {args.connections} ({failed} failed) in {processes} processes",
              file=sys.stderr, flush=True)
        for index in range(args.senders):
            sender = Sender(target, f"swarmsender{index}", channels)
            await sender.connect()
            senders.append(sender)
        result = await drive(fleets, senders, channels, sizes, args.rate, args.duration)
        return {"connections": joined, "failed": failed, "processes": processes, **result}
    finally:
        for sender in senders:
            await sender.close()
        for fleet in fleets:
            await fleet.stop()


def main(argv: list[str] | None = None) -> int:
    import uvloop

    args = build_parser().parse_args(argv)
    result = uvloop.run(run(args))
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
