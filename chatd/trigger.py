"""`chatd trigger KIND #channel`: a test sub, raid, cheer, … in a running cluster.

It signs a short-lived token for the channel's broadcaster with the data dir's
secret (as `chatd token issue` does) and asks a clue to publish the event
(`POST /api/v1/channels/{channel}/trigger`, clue.triggers), so it reaches every
edge in the channel's order, IRC and EventSub alike.
"""
from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

from chatd.cluster import load_or_create_secret
from clue.usernotice import KINDS
from common.irc import parse
from common.tokens import issue_token

HTTP_TIMEOUT = 10.0
TOKEN_TTL = 60  # seconds: the token only has to carry this one request


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", help=", ".join(KINDS))
    parser.add_argument("channel", help="#channel (you act as its broadcaster)")
    parser.add_argument("--user", help="who subscribes, gifts, raids or cheers (default: a made-up testuser)")
    parser.add_argument("--recipient", help="subgift: who gets the gift")
    parser.add_argument("--gifter", help="giftpaidupgrade: who gave the gift being continued")
    parser.add_argument("--months", type=int, help="resub: cumulative months")
    parser.add_argument("--tier", choices=("1000", "2000", "3000", "prime"), help="subscription tier")
    parser.add_argument("--count", type=int, help="submysterygift: gifts; viewermilestone: streams in the streak")
    parser.add_argument("--viewers", type=int, help="raid: raiders")
    parser.add_argument("--bits", type=int, help="cheer: bits; bitsbadgetier: the badge's threshold")
    parser.add_argument("--message", help="the user's message (sub, resub, cheer, announcement, …)")
    parser.add_argument("--color", choices=("blue", "green", "orange", "purple", "primary"),
                        help="announcement: its color")
    parser.add_argument("--data-dir", help="the `chatd up` data dir: secret and clue address (default .chatd)")
    parser.add_argument("--url", help="a clue's base URL (default: the data dir's cluster.json)")


def fail(text: str, code: int = 2) -> int:
    print(f"chatd trigger: {text}", file=sys.stderr)
    return code


def run(args: argparse.Namespace, data_dir: Path) -> int:
    if args.kind not in KINDS:
        return fail(f"unknown kind {args.kind!r}; one of {', '.join(KINDS)}")
    channel = args.channel.lstrip("#").lower()
    url = args.url or clue_url(data_dir)
    if not url:
        return fail(f"no clue to ask: pass --url, or run from the data dir of `chatd up` ({data_dir})")
    try:
        token = issue_token(load_or_create_secret(data_dir), channel, ttl=TOKEN_TTL)
    except ValueError as exc:
        return fail(f"{args.channel}: {exc}")
    body = {"kind": args.kind} | {name: value for name in ("user", "recipient", "gifter", "months", "tier", "count",
                                                           "viewers", "bits", "message", "color")
                                  if (value := getattr(args, name)) is not None}
    request = urllib.request.Request(
        f"{url.rstrip('/')}/api/v1/channels/{channel}/trigger", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return fail(error_message(exc), 2 if exc.code < 500 else 1)
    except (urllib.error.URLError, OSError) as exc:
        return fail(f"cannot reach clue at {url} ({getattr(exc, 'reason', exc)})", 1)
    print(f"sent {args.kind} to #{channel}: {_summary(answer)}")
    return 0


def clue_url(data_dir: Path) -> str:
    """The main cluster's first clue, as `chatd up` described it."""
    try:
        return json.loads((data_dir / "cluster.json").read_text())["clue_urls"]["main"][0]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return ""


def error_message(error: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(error.read())["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {error.code}"


def _summary(answer: dict) -> str:
    """What the channel shows: the notice's system-msg, or the cheer's words."""
    lines = answer.get("lines") or []
    if not lines:
        return str(answer.get("id", ""))
    message = parse(lines[0])
    sender = message.tags.get("login") or (message.source or "").split("!", 1)[0]
    shown = message.tags.get("system-msg") or f"{sender}: {message.params[-1]}"
    if message.tags.get("system-msg") and len(message.params) > 1:
        shown += f" ({sender}: {message.params[-1]})"
    return shown
