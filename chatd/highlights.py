"""`chatd highlights list #channel`: a channel's stream highlights, newest first,
from a running cluster (`GET /api/v1/channels/{c}/highlights` on a clue, found
the way `chatd trigger` finds it: `--url`, or the data dir's cluster.json).
`chatd highlights watch` is chatd/watch.py.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from chatd.trigger import HTTP_TIMEOUT, clue_url, error_message

DEFAULT_SERVER = "ircs://irc.chat.twitch.tv:6697"  # Twitch's own chat


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="highlights_command", required=True)
    listing = sub.add_parser("list", help="a channel's highlights, newest first")
    listing.add_argument("channel", help="#channel")
    listing.add_argument("--limit", type=int, default=20, help="how many (1-100, default 20)")
    listing.add_argument("--before", type=int, help="only highlights whose window started before this (ms)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line, as the API gives them")
    listing.add_argument("--data-dir", help="the `chatd up` data dir, to find a clue (default .chatd)")
    listing.add_argument("--url", help="a clue's (or an edge's WebSocket port's) base URL")
    watch = sub.add_parser("watch", help="join channels anonymously over IRC and detect highlights in their chat")
    watch.add_argument("channels", nargs="+", metavar="#channel")
    watch.add_argument("--server", default=DEFAULT_SERVER,
                       help=f"irc://host:port or ircs://host:port (default {DEFAULT_SERVER})")
    watch.add_argument("--webhook", action="append", default=[], metavar="URL",
                       help="also post each highlight here, signed with HIGHLIGHT_WEBHOOK_SECRET (repeatable)")


def fail(text: str, code: int = 2) -> int:
    print(f"chatd highlights: {text}", file=sys.stderr)
    return code


def run(args: argparse.Namespace, data_dir: Path) -> int:
    if args.highlights_command == "watch":
        from chatd.watch import run as watch

        return watch(args)
    channel = args.channel.lstrip("#").lower()
    url = args.url or clue_url(data_dir)
    if not url:
        return fail(f"no clue to ask: pass --url, or run from the data dir of `chatd up` ({data_dir})")
    query = {"limit": args.limit} | ({"before": args.before} if args.before is not None else {})
    address = f"{url.rstrip('/')}/api/v1/channels/{urllib.parse.quote(channel)}/highlights?" \
              f"{urllib.parse.urlencode(query)}"
    try:
        with urllib.request.urlopen(address, timeout=HTTP_TIMEOUT) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return fail(error_message(exc), 2 if exc.code < 500 else 1)
    except (urllib.error.URLError, OSError) as exc:
        return fail(f"cannot reach clue at {url} ({getattr(exc, 'reason', exc)})", 1)
    for highlight in answer["data"]:
        print(json.dumps(highlight, separators=(",", ":")) if args.json else describe(highlight))
    if not answer["data"] and not args.json:
        print(f"no highlights in #{channel}", file=sys.stderr)
    return 0


def describe(highlight: dict) -> str:
    """One line a person reads: when, how busy against usual, how many messages."""
    start = datetime.datetime.fromtimestamp(highlight["window_start_ms"] / 1000, tz=datetime.UTC)
    seconds = (highlight["window_end_ms"] - highlight["window_start_ms"]) / 1000
    return (f"{start:%Y-%m-%d %H:%M:%S}Z  {highlight['channel']}  {highlight['rate']:g} msg/s over {seconds:g} s "
            f"(usually {highlight['baseline']:g})  score {highlight['score']:g}  {highlight['messages']} messages  "
            f"{highlight['id']}")
