"""`GET /api/v1/channels/{channel}/highlights`: a channel's stream highlights,
newest first, as its exchange stored them (exchange/highlights.py).

Open like recent-messages (a highlight says no more than the chat it points at,
which anyone in the channel saw). `limit` (1–100, default 20) and `before` (ms:
only highlights whose window started earlier) page backwards; the answer's
`pagination.before` is the value for the next page, absent on the last one.
"""
from __future__ import annotations

from aiohttp import web

from common import twitch, wire
from common.highlights import highlights_key
from common.internal_http import ApiError
from common.shards import ShardSet, ShardUnavailable, pipeline_call
from common.wire import Highlight

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


def _number(query, name: str, default: int | None, low: int, high: int) -> int | None:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise ApiError(400, f"{name} must be between {low} and {high}, got {value}")
    return value


class HighlightsApi:
    def __init__(self, shards: ShardSet) -> None:
        self.shards = shards

    async def on_list(self, request: web.Request) -> web.Response:
        channel = "#" + request.match_info["channel"].lstrip("#").lower()
        if not twitch.is_valid_channel(channel):
            raise ApiError(400, "no such channel name")
        limit = _number(request.query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        before = _number(request.query, "before", None, 0, 2 ** 53)
        key = highlights_key(channel)
        top = f"({before}" if before is not None else "+inf"
        try:
            shard = self.shards.for_key(key)
            [found] = await pipeline_call(shard, "highlights_read",
                                          [("ZREVRANGEBYSCORE", key, top, "-inf", "LIMIT", 0, limit)], shard.read_timeout)
        except ShardUnavailable:
            raise ApiError(503, "highlights are unavailable right now") from None
        if isinstance(found, Exception):
            raise ApiError(503, "highlights are unavailable right now")
        pagination = b"{}"
        if len(found) == limit:  # there may be more: the next page ends before this one's oldest
            pagination = b'{"before":%d}' % wire.decode(found[-1], Highlight).window_start_ms
        # Stored as the exchange encoded them: passed on as they are.
        return web.Response(body=wire.encode_list(b'{"data":', found, b',"pagination":' + pagination + b"}"),
                            content_type="application/json")
