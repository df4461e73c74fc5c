"""The history APIs clue serves: robotty's recent-messages (public, behind the
edges' `/api/v2/recent-messages/{login}`) and CHATHISTORY for edges."""
from __future__ import annotations

from http import HTTPStatus

from aiohttp import web

from clue.history import BadReference, HistoryReader, Options, chathistory, export
from common import twitch
from common.internal_http import ApiError, read_body, reply
from common.shards import ShardUnavailable
from common.wire import HistoryReply, HistoryRequest

_TRUE, _FALSE = ("true", "1"), ("false", "0", "")
# recent-messages' option names, with the camelCase ones of its first version.
FLAGS = {"hide_moderation": ("hide_moderation_messages", "hideModerationMessages"),
         "hide_moderated": ("hide_moderated_messages", "hideModeratedMessages"),
         "clearchat_to_notice": ("clearchat_to_notice", "clearchatToNotice")}


def _error(status: int, message: str, code: str) -> web.Response:
    """recent-messages' error body."""
    return web.json_response({"status": status, "status_message": HTTPStatus(status).phrase, "error": message,
                              "error_code": code}, status=status)


def options(query) -> Options:
    """Query options; ValueError for one that does not parse."""
    flags = {}
    for field, names in FLAGS.items():
        raw = next((query[name] for name in names if name in query), "false").lower()
        if raw not in _TRUE + _FALSE:
            raise ValueError(f"{names[0]} must be true or false")
        flags[field] = raw in _TRUE
    numbers = {}
    for name in ("limit", "before", "after"):
        if name in query:
            numbers[name] = int(query[name])
            if numbers[name] < 0:
                raise ValueError(f"{name} must not be negative")
    return Options(**numbers, **flags)


class HistoryApi:
    def __init__(self, reader: HistoryReader) -> None:
        self.reader = reader

    async def recent_messages(self, request: web.Request) -> web.Response:
        login = request.match_info["login"].lower()
        if not twitch.is_valid_channel("#" + login):
            return _error(400, f"Invalid channel login: {login!r}", "invalid_channel_login")
        try:
            wanted = options(request.query)
        except ValueError as exc:
            return _error(400, f"Invalid or missing query parameters: {exc}", "invalid_query")
        try:
            entries = await self.reader.entries("#" + login)
        except ShardUnavailable:
            return _error(500, "Internal Server Error", "internal_server_error")
        return web.json_response({"messages": export(entries, wanted), "error": None, "error_code": None})

    async def on_history(self, request: web.Request) -> web.Response:
        body = await read_body(request, HistoryRequest)
        try:
            found = chathistory(await self.reader.entries(body.channel), body.subcommand, body.references, body.limit)
        except BadReference as exc:
            raise ApiError(400, str(exc)) from None
        except ShardUnavailable:
            raise ApiError(503, "history is unavailable right now") from None
        return reply(HistoryReply(found))
