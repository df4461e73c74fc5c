"""The `chatd` command line (SPEC §2)."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path


def _data_dir(value: str | None) -> Path:
    return Path(value or os.environ.get("CHATD_DATA_DIR") or ".chatd")


def cmd_up(args: argparse.Namespace) -> int:
    from chatd.cluster import ClusterConfig, ClusterError, LocalCluster

    cache_servers = [s.strip() for s in os.environ.get("CACHE_SERVERS", "").split(",") if s.strip()]
    config = ClusterConfig(
        data_dir=_data_dir(args.data_dir),
        edges=args.edges,
        workers=args.workers,
        shards=args.shards,
        irc_port=args.irc_port,
        ws_port=args.ws_port,
        redis_port=args.redis_port,
        cache_servers=cache_servers or None,
        supervise=True,
    )
    if args.config:
        try:
            config = config_from_toml(Path(args.config), config)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"chatd up: {args.config}: {exc}", file=sys.stderr)
            return 2

    _log_supervision_to_stderr()

    async def run() -> int:
        cluster = LocalCluster(config)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await cluster.start()
        except ClusterError as exc:
            print(f"chatd up: {exc}", file=sys.stderr)
            return 1
        for address in cluster.redis_addresses:
            print(f"{'redis':<17} {address}", flush=True)
        for name, component in cluster.components.items():
            if name.startswith("redis"):
                continue
            shown = "  ".join(component.addresses[key] for key in ("irc", "ws", "http") if key in component.addresses)
            if name.startswith("edge") and config.workers > 1:
                shown += f"  ({config.workers} workers)"
            print(f"{name:<17} {shown}", flush=True)
        print(f"{'logs':<17} {cluster.log_dir}", flush=True)
        print("ready", flush=True)
        await stop.wait()  # meanwhile the cluster restarts whatever exits, and logs it
        await cluster.stop()
        print("stopped", flush=True)
        return 0

    return asyncio.run(run())


def _log_supervision_to_stderr() -> None:
    """The cluster's exit and restart lines, one each, as `chatd up: edge-0 exited (...)` on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("chatd up: %(message)s"))
    cluster_log = logging.getLogger("chatd.cluster")
    cluster_log.addHandler(handler)
    cluster_log.setLevel(logging.INFO)


def config_from_toml(path: Path, base):
    """A cluster file (deploy/cluster.example.toml) over the command-line defaults."""
    import dataclasses
    import tomllib

    data = tomllib.loads(path.read_text())
    redis, edges, clusters = data.get("redis", {}), data.get("edges", {}), data.get("clusters", {})
    main = clusters.get("main", {})
    extra = {name: (int(c.get("clues", 1)), int(c.get("exchanges", 1))) for name, c in clusters.items()
             if name != "main"}
    for name in extra:
        if not name.isalnum():
            raise ValueError(f"cluster names are letters and digits, got {name!r}")
    return dataclasses.replace(
        base,
        shards=int(redis.get("shards", base.shards)),
        redis_port=int(redis.get("port", base.redis_port)),
        edges=int(edges.get("count", base.edges)),
        workers=int(edges.get("workers", base.workers)),
        irc_port=int(edges.get("irc_port", base.irc_port)),
        ws_port=int(edges.get("ws_port", base.ws_port)),
        clues=int(main.get("clues", base.clues)),
        exchanges=int(main.get("exchanges", base.exchanges)),
        extra_clusters=extra,
        env={str(k): str(v) for k, v in data.get("env", {}).items()},
    )


def cmd_token_issue(args: argparse.Namespace) -> int:
    from chatd.admin import register_user
    from chatd.cluster import load_or_create_secret
    from common import scopes
    from common.tokens import CLI_CLIENT_ID, issue_token, read_token

    data_dir = _data_dir(args.data_dir)
    secret = load_or_create_secret(data_dir)
    try:
        token = issue_token(
            secret,
            args.login,
            user_id=args.user_id,
            display_name=args.display_name,
            color=args.color or "",
            subscriber=args.subscriber,
            bot=args.bot or "",
            ttl=args.ttl,
            client_id=args.client_id or CLI_CLIENT_ID,
            scope_bits=scopes.ALL if args.scopes is None else scopes.parse(args.scopes),
        )
    except ValueError as exc:
        print(f"chatd token issue: {exc}", file=sys.stderr)
        return 2
    grant = read_token(secret, token)
    assert grant.identity is not None
    why_not = register_user(grant.identity, grant.client_id, grant.scopes, data_dir)
    if why_not and not args.quiet:
        print(f"chatd token issue: {args.login} is known to the cluster once it logs in ({why_not})",
              file=sys.stderr)
    print(token)
    return 0


def cmd_client_add(args: argparse.Namespace) -> int:
    from chatd.admin import client_add

    if not args.name.strip():
        print("chatd client add: NAME must not be empty", file=sys.stderr)
        return 2
    return client_add(args.name.strip(), _data_dir(args.data_dir))


def cmd_service(args: argparse.Namespace) -> int:
    # The same entry point `python -m edge` (and clue, exchange) runs.
    import importlib

    if getattr(args, "workers", None) is not None:
        os.environ["EDGE_WORKERS"] = str(args.workers)

    return importlib.import_module(f"{args.command}.__main__").main()


def cmd_route(args: argparse.Namespace) -> int:
    from chatd.admin import route

    return route(args, _data_dir(args.data_dir))


def cmd_trigger(args: argparse.Namespace) -> int:
    from chatd.trigger import run

    return run(args, _data_dir(args.data_dir))


def cmd_reshard(args: argparse.Namespace) -> int:
    from clue.reshard import run

    return run(args)


def cmd_bench(args: argparse.Namespace) -> int:
    # Benchmark code loads only for `chatd bench`, which parses its own options.
    from loadtest.bench import main as bench_main

    return bench_main(args.bench_args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatd", description="Twitch-compatible chat server")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start a whole local cluster")
    up.add_argument("--edges", type=int, default=1)
    up.add_argument("--workers", type=int, default=1,
                    help="worker processes per edge, sharing its ports (one per core)")
    up.add_argument("--shards", type=int, default=3)
    up.add_argument("--irc-port", type=int, default=6667)
    up.add_argument("--ws-port", type=int, default=8080)
    up.add_argument("--redis-port", type=int, default=7000)
    up.add_argument("--data-dir", help="state, secret and logs (default .chatd, or $CHATD_DATA_DIR)")
    up.add_argument("--config", help="a cluster file (TOML) describing clusters and process counts")
    up.set_defaults(handler=cmd_up)

    for name in ("edge", "clue", "exchange"):
        service = sub.add_parser(name, help=f"run one {name} process, configured by the environment")
        service.set_defaults(handler=cmd_service)
        if name == "edge":
            service.add_argument("--workers", type=int, help="worker processes sharing the edge's ports "
                                                             "(EDGE_WORKERS; default 1)")

    from chatd.admin import route_arguments
    from clue.reshard import add_arguments as reshard_arguments

    route = sub.add_parser("route", help="the channel → cluster routing table: list | get CHANNEL | set CHANNEL CLUSTER")
    route_arguments(route)
    route.set_defaults(handler=cmd_route)

    reshard = sub.add_parser("reshard", help="move Redis keys after a change of CACHE_SERVERS")
    reshard_arguments(reshard)
    reshard.set_defaults(handler=cmd_reshard)

    from chatd.trigger import add_arguments as trigger_arguments

    trigger = sub.add_parser("trigger", help="publish a test sub, resub, gift, raid, cheer, … in a channel")
    trigger_arguments(trigger)
    trigger.set_defaults(handler=cmd_trigger)

    bench = sub.add_parser("bench", add_help=False,
                           help="side-by-side benchmarks (`chatd bench --help` lists the scenarios)")
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)
    bench.set_defaults(handler=cmd_bench)

    token = sub.add_parser("token", help="bearer tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    issue = token_sub.add_parser("issue", help="print a token for LOGIN")
    issue.add_argument("login")
    issue.add_argument("--user-id")
    issue.add_argument("--display-name")
    issue.add_argument("--color")
    issue.add_argument("--subscriber", action="store_true")
    issue.add_argument("--bot", choices=("known", "verified"),
                       help="Twitch's bot status, which sets the message and JOIN rate limits")
    issue.add_argument("--ttl", type=float)
    issue.add_argument("--scopes", help="space- or comma-separated OAuth scopes (default: every scope chatd knows)")
    issue.add_argument("--client-id", help="the OAuth client the token is for (default: chatd's command line)")
    issue.add_argument("--quiet", action="store_true", help="say nothing on stderr when the cluster is unreachable")
    issue.add_argument("--data-dir")
    issue.set_defaults(handler=cmd_token_issue)

    client = sub.add_parser("client", help="OAuth clients (apps)")
    client_sub = client.add_subparsers(dest="client_command", required=True)
    add = client_sub.add_parser("add", help="register a client; prints CLIENT_ID CLIENT_SECRET")
    add.add_argument("name")
    add.add_argument("--data-dir")
    add.set_defaults(handler=cmd_client_add)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # every option after `bench` is the benchmark's own
        return cmd_bench(argparse.Namespace(bench_args=argv[1:]))
    args = build_parser().parse_args(argv)
    for value, name in ((getattr(args, "edges", 1), "--edges"), (getattr(args, "shards", 1), "--shards"),
                        (1 if getattr(args, "workers", None) is None else args.workers, "--workers")):
        if value < 1:
            print(f"chatd: {name} must be at least 1", file=sys.stderr)
            return 2
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
