"""`chatd broadcast #channel` and `chatd sessions list #channel`: stream sessions of a
running cluster, over its HTTP API (clue.sessions), as the channel's broadcaster.

Like `chatd trigger`, they sign a short-lived token for the broadcaster with the
data dir's secret and find a clue in the data dir's cluster.json (or `--url`).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from chatd.cluster import load_or_create_secret
from chatd.trigger import clue_url, error_message
from common.tokens import issue_token

HTTP_TIMEOUT = 10.0
TOKEN_TTL = 60


def add_broadcast_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("channel", help="#channel (you act as its broadcaster)")
    parser.add_argument("--time", help="the live minute, `2026-03-05 14:13:00` (UTC) or ISO 8601 (default: now)")
    parser.add_argument("--every", type=float, help="keep sending one event every this many seconds until stopped, "
                                                    "as broadcasting software does (60 for one per minute)")
    parser.add_argument("--data-dir", help="the `chatd up` data dir: secret and clue address (default .chatd)")
    parser.add_argument("--url", help="a clue's or an edge's base URL (default: the data dir's cluster.json)")


def add_list_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("channel")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--before", help="only sessions that started before this time")
    parser.add_argument("--json", action="store_true", help="print the API's JSON")
    parser.add_argument("--data-dir", help="the `chatd up` data dir: secret and clue address (default .chatd)")
    parser.add_argument("--url", help="a clue's or an edge's base URL (default: the data dir's cluster.json)")


class Failed(Exception):
    def __init__(self, text: str, code: int) -> None:
        super().__init__(text)
        self.code = code


def _call(args: argparse.Namespace, data_dir: Path, method: str, path: str, body: dict | None = None) -> dict:
    url = args.url or clue_url(data_dir)
    if not url:
        raise Failed(f"no clue to ask: pass --url, or run from the data dir of `chatd up` ({data_dir})", 2)
    channel = args.channel.lstrip("#").lower()
    try:
        token = issue_token(load_or_create_secret(data_dir), channel, ttl=TOKEN_TTL)
    except ValueError as exc:
        raise Failed(f"{args.channel}: {exc}", 2) from None
    request = urllib.request.Request(
        f"{url.rstrip('/')}/api/v1/channels/{channel}/{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise Failed(error_message(exc), 2 if exc.code < 500 else 1) from None
    except (urllib.error.URLError, OSError) as exc:
        raise Failed(f"cannot reach {url} ({getattr(exc, 'reason', exc)})", 1) from None


def broadcast(args: argparse.Namespace, data_dir: Path) -> int:
    if args.every is not None and args.every <= 0:
        print("chatd broadcast: --every must be more than zero", file=sys.stderr)
        return 2
    try:
        while True:
            answer = _call(args, data_dir, "POST", "broadcast", {"time": args.time} if args.time else {})
            print(f"{answer['channel']} ({answer['channel_id']}) live at {answer['time']}", flush=True)
            if args.every is None:
                return 0
            time.sleep(args.every)
    except Failed as exc:
        print(f"chatd broadcast: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 0


def list_sessions(args: argparse.Namespace, data_dir: Path) -> int:
    query = {"limit": str(args.limit)} | ({"before": args.before} if args.before else {})
    try:
        answer = _call(args, data_dir, "GET", "sessions?" + urllib.parse.urlencode(query))
    except Failed as exc:
        print(f"chatd sessions list: {exc}", file=sys.stderr)
        return exc.code
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    if not answer["sessions"]:
        print(f"{answer['channel']}: no sessions")
    for session in answer["sessions"]:
        summary = session["summary"] or {}
        emotes = ", ".join(f"{e[1] or e[0]}×{e[2]}" for e in summary.get("top_emotes", []))
        state = "live " if session["open"] else ""
        print(f"{session['start_time']} → {state}{session['end_time']}  {summary.get('messages', 0)} messages, "
              f"{summary.get('unique_chatters', 0)} chatters ({summary.get('first_time_chatters', 0)} first-time), "
              f"peak {summary.get('peak_messages_per_minute', 0)}/min, {summary.get('highlights', 0)} highlights"
              + (f"; {emotes}" if emotes else ""))
    return 0
