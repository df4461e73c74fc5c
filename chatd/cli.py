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
        edge = cluster.components.get("edge-0")
        if edge is not None and "ws" in edge.addresses:
            print(f"{'chat page':<17} {http_url(edge.addresses['ws'])}/", flush=True)
            print(f"{'console':<17} {http_url(edge.addresses['ws'])}/console  (`chatd console` prints it with its "
                  "token)", flush=True)
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


def http_url(address: str) -> str:
    """An edge's `ws://host:port` as the http:// base a browser opens."""
    return "http" + address[2:] if address.startswith("ws") else address


def cmd_console(args: argparse.Namespace) -> int:
    """The console's address with its admin token, for the cluster `chatd up` runs from this directory."""
    import json

    from chatd.cluster import load_or_create_secret

    data_dir = _data_dir(args.data_dir)
    described = data_dir / "cluster.json"
    if not described.exists():
        print(f"chatd console: no cluster described in {described}; start one with `chatd up`", file=sys.stderr)
        return 2
    edges = json.loads(described.read_text()).get("edges", {})
    edge = edges.get(f"edge-{args.edge}", {})
    if "ws" not in edge:
        print(f"chatd console: the cluster has no edge-{args.edge} (it has {', '.join(sorted(edges)) or 'none'})",
              file=sys.stderr)
        return 2
    token = os.environ.get("CONSOLE_TOKEN") or load_or_create_secret(data_dir, "internal-token",
                                                                      "CHAT_INTERNAL_TOKEN")
    print(f"{http_url(edge['ws'])}/console#token={token}")
    return 0


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


def cmd_highlights(args: argparse.Namespace) -> int:
    from chatd.highlights import run

    return run(args, _data_dir(getattr(args, "data_dir", None)))
def cmd_broadcast(args: argparse.Namespace) -> int:
    from chatd.sessions import broadcast

    return broadcast(args, _data_dir(args.data_dir))


def cmd_sessions_list(args: argparse.Namespace) -> int:
    from chatd.sessions import list_sessions

    return list_sessions(args, _data_dir(args.data_dir))


def cmd_sessions_backfill(args: argparse.Namespace) -> int:
    from chatd.backfill import run

    return run(args, _data_dir(args.data_dir))


def cmd_reshard(args: argparse.Namespace) -> int:
    from chatd.progress import Progress
    from clue.reshard import run

    return run(args, lambda total: Progress(total, "reshard", unit="keys"))


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

    from chatd.highlights import add_arguments as highlights_arguments

    highlights = sub.add_parser("highlights", help="stream highlights: list a channel's, or watch channels on any "
                                                   "Twitch-compatible IRC server")
    highlights_arguments(highlights)
    highlights.set_defaults(handler=cmd_highlights)

    from chatd.backfill import add_arguments as backfill_arguments
    from chatd.sessions import add_broadcast_arguments, add_list_arguments

    broadcast = sub.add_parser("broadcast", help="say a channel is live this minute (a minute_broadcast event)")
    add_broadcast_arguments(broadcast)
    broadcast.set_defaults(handler=cmd_broadcast)

    sessions = sub.add_parser("sessions", help="stream sessions: list #CHANNEL | backfill --day YYYY-MM-DD")
    sessions_sub = sessions.add_subparsers(dest="sessions_command", required=True)
    listing = sessions_sub.add_parser("list", help="a channel's sessions with their summaries, newest first")
    add_list_arguments(listing)
    listing.set_defaults(handler=cmd_sessions_list)
    backfill = sessions_sub.add_parser("backfill", help="recompute a day's sessions from the archive and repair Redis")
    backfill_arguments(backfill)
    backfill.set_defaults(handler=cmd_sessions_backfill)

    console = sub.add_parser("console", help="print the operator console's link, with its admin token")
    console.add_argument("--edge", type=int, default=0, help="which edge serves it (default 0)")
    console.add_argument("--data-dir")
    console.set_defaults(handler=cmd_console)

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
