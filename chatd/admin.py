"""Command-line tasks that change the cluster's durable state in Redis:
`chatd route`, `chatd client add`, and registering the user `chatd token issue` names.

They find the shards in `CACHE_SERVERS`, or in the `cluster.json` that
`chatd up` writes to its data directory, so they work when run from there.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from clue.accounts import Accounts
from clue.routes import RouteTable
from common.config import parse_address
from common.metrics import Metrics
from common.shards import ShardSet
from common.wire import Identity

T = TypeVar("T")


class NoCluster(Exception):
    """Neither CACHE_SERVERS nor a `chatd up` data directory says where Redis is."""


def cache_servers(data_dir: Path) -> list[tuple[str, int]]:
    servers = os.environ.get("CACHE_SERVERS", "")
    described = data_dir / "cluster.json"
    if not servers and described.exists():
        servers = ",".join(json.loads(described.read_text())["cache_servers"])
    if not servers:
        raise NoCluster("set CACHE_SERVERS or run from the directory of `chatd up`")
    return [parse_address(item) for item in servers.split(",") if item.strip()]


async def with_shards(data_dir: Path, work: Callable[[ShardSet], Awaitable[T]]) -> T:
    shards = ShardSet(cache_servers(data_dir), 2, 2.0, Metrics("127.0.0.1", 8125, "chatd", "cli"))
    try:
        return await work(shards)
    finally:
        await shards.close()


def fail(command: str, text: str, code: int = 2) -> int:
    print(f"chatd {command}: {text}", file=sys.stderr)
    return code


# ---- chatd route list | get CHANNEL | set CHANNEL CLUSTER

def route_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["list", "get", "set"])
    parser.add_argument("channel", nargs="?")
    parser.add_argument("cluster", nargs="?")
    parser.add_argument("--data-dir", help="a `chatd up` data dir to read CACHE_SERVERS from (default .chatd)")


def route(args: argparse.Namespace, data_dir: Path) -> int:
    if args.action in ("get", "set") and not args.channel:
        return fail("route", f"{args.action} needs a CHANNEL")
    if args.action == "set" and (not args.cluster or not args.cluster.isalnum()):
        return fail("route", "set needs a CLUSTER name (letters and digits)")
    channel = "#" + args.channel.lstrip("#").lower() if args.channel else ""

    async def act(shards: ShardSet) -> None:
        table = RouteTable(shards)
        await table.load()
        if args.action == "list":
            for name, (cluster, version) in sorted(table.routes.items()):
                print(f"{name} {cluster} v{version}")
        elif args.action == "get":
            print(table.cluster_for(channel))
        else:
            version = await table.set(channel, args.cluster.lower())
            print(f"{channel} {args.cluster.lower()} v{version}")

    return _run("route", data_dir, act)


# ---- chatd client add NAME

def client_add(name: str, data_dir: Path) -> int:
    async def act(shards: ShardSet) -> None:
        client_id, secret = await Accounts(shards).add_client(name)
        print(f"{client_id} {secret}")

    return _run("client add", data_dir, act)


# ---- chatd token issue: the user becomes known (Helix ids, EventSub conditions)

def register_user(identity: Identity, client_id: str, scope_bits: int, data_dir: Path) -> str | None:
    """Record the user, and that it authorized the client for these scopes, in
    the cluster, if one is described (CACHE_SERVERS or a `chatd up` data dir);
    why not, when it is described but cannot be reached."""
    async def act(shards: ShardSet) -> None:
        accounts = Accounts(shards)
        await accounts.remember(identity)
        await accounts.grant(identity.user_id, client_id, scope_bits)

    try:
        asyncio.run(with_shards(data_dir, act))
    except NoCluster:
        return None  # no cluster yet: the user is recorded at its first login
    except Exception as exc:  # noqa: BLE001 -- the token is still good; the user is recorded at first login
        return f"the cluster is not reachable ({str(exc)[:120]})"
    return None


def _run(command: str, data_dir: Path, act: Callable[[ShardSet], Awaitable[None]]) -> int:
    try:
        asyncio.run(with_shards(data_dir, act))
    except (NoCluster, ValueError) as exc:
        return fail(command, str(exc))
    except Exception as exc:  # noqa: BLE001 -- an unreachable shard: one line, no traceback
        return fail(command, str(exc), 1)
    return 0
