"""`chatd reshard`: move keys whose owner changes when the shard list changes.

Consistent hashing means adding a fourth shard to three moves only the keys
that now hash to the new shard (about a quarter); everything else stays put.
Each moved key is copied with DUMP/RESTORE (keeping its remaining TTL, so
timeouts keep counting down) and then deleted from its old shard. Run it with
the new list in place of the old one before clue processes start using the new
list (stop clue, reshard, start clue with the new CACHE_SERVERS).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from typing import Protocol

import redis.asyncio as aioredis

from common.config import parse_address
from common.ring import Ring

SCAN_BATCH = 500
PROGRESS_EVERY = 100  # keys between two updates of the progress bar


class Progress(Protocol):
    """chatd.progress.Progress, as the command line hands it in (a bar on a terminal, lines elsewhere)."""

    def advance(self, amount: int = 1) -> None: ...
    def note(self, text: str) -> None: ...
    def close(self) -> None: ...


class Quiet:
    def advance(self, amount: int = 1) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


async def reshard(old: list[str], new: list[str],
                  progress: Callable[[int | None], Progress] = lambda total: Quiet()) -> dict:
    """Move the keys of the `old` shards whose owner on the `new` ring changed;
    `progress(total keys)` is told of every key looked at."""
    ring = Ring(new)
    clients = {address: _client(address) for address in dict.fromkeys(old + new)}
    moved: dict[str, int] = {}
    total = 0
    try:
        shown = progress(sum([await clients[source].dbsize() for source in old]))
        for source in old:
            client = clients[source]
            count = seen = 0
            async for key in client.scan_iter(count=SCAN_BATCH):
                total += 1
                seen += 1
                if seen % PROGRESS_EVERY == 0:
                    shown.advance(PROGRESS_EVERY)
                owner = ring.node_for(key.decode())
                if owner == source:
                    continue
                dump, ttl = await client.pipeline(transaction=False).dump(key).pttl(key).execute()
                if dump is None:  # expired or deleted meanwhile
                    continue
                await clients[owner].restore(key, max(int(ttl), 0), dump, replace=True)
                await client.delete(key)
                count += 1
            shown.advance(seen % PROGRESS_EVERY)
            shown.note(f"{source}: moved {count:,} of its {seen:,} keys")
            moved[source] = count
        shown.close()
    finally:
        for client in clients.values():
            await client.aclose()
    return {"keys": total, "moved": sum(moved.values()), "moved_from": moved,
            "moved_share": round(sum(moved.values()) / total, 4) if total else 0.0}


def _client(address: str) -> aioredis.Redis:
    host, port = parse_address(address)
    return aioredis.Redis(host=host, port=port, socket_timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chatd reshard", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="old", required=True, help="the current CACHE_SERVERS (host:port,...)")
    parser.add_argument("--to", dest="new", required=True, help="the new CACHE_SERVERS (host:port,...)")


def run(args: argparse.Namespace, progress: Callable[[int | None], Progress] = lambda total: Quiet()) -> int:
    try:
        old = [f"{h}:{p}" for h, p in (parse_address(a) for a in args.old.split(",") if a.strip())]
        new = [f"{h}:{p}" for h, p in (parse_address(a) for a in args.new.split(",") if a.strip())]
    except ValueError as exc:
        print(f"chatd reshard: {exc}", file=sys.stderr)
        return 2
    if not old or not new:
        print("chatd reshard: --from and --to each need at least one host:port", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(reshard(old, new, progress))
    except (OSError, aioredis.RedisError) as exc:
        print(f"chatd reshard: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0
