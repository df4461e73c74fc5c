"""IRCv3 for clients that ask (`CAP LS 302`): server-time, message-tags (msgid),
batch, draft/chathistory and echo-message. Twitch clients never see any of it:
the capabilities are listed only to `CAP LS 302`, and each line's extra tags
only go to connections that requested them. Pure: the session and delivery
call in here.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass

from common.wire import HistoryEntry

SERVER_TIME, MESSAGE_TAGS, BATCH, CHATHISTORY, ECHO = 8, 16, 32, 64, 128
CAPABILITY_BITS = {"server-time": SERVER_TIME, "message-tags": MESSAGE_TAGS, "batch": BATCH,
                   "draft/chathistory": CHATHISTORY, "echo-message": ECHO}
EXTRA_TAGS = SERVER_TIME | MESSAGE_TAGS
MAX_HISTORY = 100
SUBCOMMANDS = {"LATEST": 1, "BEFORE": 1, "AFTER": 1, "AROUND": 1, "BETWEEN": 2, "TARGETS": 2}  # → references


def iso_time(ms: int) -> str:
    """server-time's format: `2026-11-22T21:05:57.123Z`."""
    moment = datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def timestamp_ms(reference: str) -> int | None:
    """A `timestamp=…` reference in ms since the epoch; None if it is not one."""
    kind, _, value = reference.partition("=")
    if kind != "timestamp":
        return None
    try:
        return int(datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return None


def extra_tags(variant: int, sent_ms: int, message_id: str) -> str:
    """`time=…;msgid=…` as this connection asked for them ("" if it asked for neither)."""
    tags = []
    if variant & SERVER_TIME and sent_ms:
        tags.append(f"time={iso_time(sent_ms)}")
    if variant & MESSAGE_TAGS and message_id:
        tags.append(f"msgid={message_id}")
    return ";".join(tags)


def shape(tags: str, line: str, variant: int, twitch_tags: bool, extra: str) -> str:
    """A line with the tags this connection takes: Twitch's (escaped already) and IRCv3's."""
    wanted = ";".join(part for part in (extra, tags if twitch_tags else "") if part)
    return f"@{wanted} {line}" if wanted else line


@dataclass(slots=True)
class ChatHistory:
    """Action: fetch a channel's history for a CHATHISTORY request (TARGETS: which
    of the connection's channels spoke between two times; its channel is "")."""

    channel: str
    subcommand: str
    references: list[str]
    limit: int


def parse_chathistory(params: list[str]) -> ChatHistory | str:
    """A CHATHISTORY request, or the FAIL reason (`INVALID_PARAMS …`) for a bad one."""
    if not params:
        return "INVALID_PARAMS :Missing subcommand"
    subcommand = params[0].upper()
    wanted = SUBCOMMANDS.get(subcommand)
    if wanted is None:
        return f"INVALID_PARAMS {params[0]} :Unknown subcommand"
    if subcommand == "TARGETS":  # CHATHISTORY TARGETS <timestamp> <timestamp> <limit>: no target
        if len(params) != 4 or any(timestamp_ms(reference) is None for reference in params[1:3]):
            return "INVALID_PARAMS TARGETS :Expected two timestamp= references and a limit"
        if not params[3].isdigit():
            return f"INVALID_PARAMS TARGETS :Bad limit {params[3]}"
        return ChatHistory("", "TARGETS", params[1:3], min(int(params[3]), MAX_HISTORY))
    if len(params) != 3 + wanted:
        return f"INVALID_PARAMS {subcommand} :Expected a target, {wanted} reference(s) and a limit"
    target, references, limit = params[1].lower(), params[2:2 + wanted], params[-1]
    for reference in references:
        if not (reference == "*" and subcommand == "LATEST") and \
                not reference.startswith(("msgid=", "timestamp=")):
            return f"INVALID_PARAMS {subcommand} :Bad message reference {reference}"
    if not limit.isdigit():
        return f"INVALID_PARAMS {subcommand} :Bad limit {limit}"
    return ChatHistory(target, subcommand, references, min(int(limit), MAX_HISTORY))


def history_lines(server: str, request: ChatHistory, entries: list[HistoryEntry], variant: int, twitch_tags: bool,
                  batch_id: str) -> list[str]:
    """The history a request selected, in a `chathistory` batch when the connection takes batches."""
    batched = bool(variant & BATCH)
    lines = [f":{server} BATCH +{batch_id} chathistory {request.channel}"] if batched else []
    for entry in entries:
        tags, _, rest = entry.line[1:].partition(" ") if entry.line.startswith("@") else ("", "", entry.line)
        extra = extra_tags(variant, entry.sent_ms, entry.id)
        if batched:
            extra = f"batch={batch_id};{extra}" if extra else f"batch={batch_id}"
        lines.append(shape(tags, rest, variant, twitch_tags, extra))
    if batched:
        lines.append(f":{server} BATCH -{batch_id}")
    return lines


def targets_lines(server: str, found: list[tuple[str, int]], variant: int, batch_id: str) -> list[str]:
    """TARGETS' answer: each channel and the time of its latest message, oldest first."""
    batched = bool(variant & BATCH)
    prefix = f"@batch={batch_id} " if batched else ""
    lines = [f":{server} BATCH +{batch_id} draft/chathistory-targets"] if batched else []
    lines += [f"{prefix}:{server} CHATHISTORY TARGETS {channel} {iso_time(ms)}"
              for channel, ms in sorted(found, key=lambda item: item[1])]
    if batched:
        lines.append(f":{server} BATCH -{batch_id}")
    return lines
