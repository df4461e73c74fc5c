"""Helix moderation endpoints, run through chat's own command table: a ban here is
the ban `/ban` makes, with the same checks and the same announcements."""
from __future__ import annotations

import time
import uuid

from aiohttp import web

from clue.channels import ChannelState
from clue.commands import MAX_TIMEOUT, Commands
from clue.helix.base import Call, HelixBase, HelixError, paginate
from clue.ingest import Ingest
from common.tokens import USER
from common.twitch import rfc3339_seconds as rfc3339
from common.wire import Outcome

# A refused command's msg-id → Helix's status and message.
REFUSALS: dict[str, tuple[int, str]] = {
    "no_permission": (403, "The user in moderator_id is not one of the broadcaster's moderators"),
    "already_banned": (400, "user is already banned"),
    "bad_ban_self": (400, "The user specified in the user_id field may not be banned"),
    "bad_timeout_self": (400, "The user specified in the user_id field may not be banned"),
    "bad_ban_broadcaster": (400, "The user specified in the user_id field may not be banned"),
    "bad_timeout_broadcaster": (400, "The user specified in the user_id field may not be banned"),
    "bad_ban_mod": (400, "The user specified in the user_id field may not be banned"),
    "bad_timeout_mod": (400, "The user specified in the user_id field may not be banned"),
    "bad_unban_no_ban": (400, "The user specified in the user_id field is not banned"),
    "bad_delete_message_error": (404, "The message specified in message_id was not found"),
    "bad_delete_message_broadcaster": (400, "You may not delete another moderator's or the broadcaster's messages"),
    "bad_delete_message_mod": (400, "You may not delete another moderator's or the broadcaster's messages"),
    "bad_mod_mod": (400, "The user specified in the user_id field is already a moderator"),
    "bad_mod_banned": (400, "The user specified in the user_id field is banned"),
    "bad_unmod_mod": (400, "The user specified in the user_id field is not a moderator"),
    "bad_vip_grantee_already_vip": (422, "The user specified in the user_id field is already a VIP"),
    "bad_vip_grantee_banned": (400, "The user specified in the user_id field is banned"),
    "bad_unvip_grantee_not_vip": (422, "The user specified in the user_id field is not a VIP"),
    "invalid_user": (400, "The user specified in the user_id field does not exist"),
    "msg_service_unavailable": (503, "Chat is unavailable; try again"),
    "msg_ratelimit": (429, "Too many requests; try again in a few seconds"),
}


def answer(outcome: Outcome) -> None:
    """Raise the Helix error a refused command stands for."""
    if not outcome.ok:
        status, message = REFUSALS.get(outcome.msg_id, (400, outcome.text or "The request was refused"))
        raise HelixError(status, message)


class ModerationEndpoints:
    def __init__(self, base: HelixBase, ingest: Ingest, commands: Commands) -> None:
        self.base = base
        self.ingest = ingest
        self.commands = commands

    def routes(self) -> list[web.RouteDef]:
        e = self.base.endpoint
        bans = ("moderator:manage:banned_users",)
        read_mods = ("moderation:read", "channel:manage:moderators", "moderator:read:moderators")
        read_vips = ("channel:read:vips", "channel:manage:vips", "moderator:read:vips")
        return [
            web.post("/helix/moderation/bans", e(self.ban, scopes_all=bans, tokens=(USER,))),
            web.delete("/helix/moderation/bans", e(self.unban, scopes_all=bans, tokens=(USER,))),
            web.delete("/helix/moderation/chat",
                       e(self.delete, scopes_all=("moderator:manage:chat_messages",), tokens=(USER,))),
            web.get("/helix/moderation/moderators", e(self.moderators, scopes_any=read_mods, tokens=(USER,))),
            web.post("/helix/moderation/moderators",
                     e(self.add_moderator, scopes_all=("channel:manage:moderators",), tokens=(USER,))),
            web.delete("/helix/moderation/moderators",
                       e(self.remove_moderator, scopes_all=("channel:manage:moderators",), tokens=(USER,))),
            web.get("/helix/channels/vips", e(self.vips, scopes_any=read_vips, tokens=(USER,))),
            web.post("/helix/channels/vips", e(self.add_vip, scopes_all=("channel:manage:vips",), tokens=(USER,))),
            web.delete("/helix/channels/vips",
                       e(self.remove_vip, scopes_all=("channel:manage:vips",), tokens=(USER,))),
        ]

    async def _run(self, call: Call, state: ChannelState, command: str) -> Outcome:
        """Run a chat command as the caller, through the same checks and limits as chat."""
        identity = call.grant.identity
        assert identity is not None
        outcome = await self.ingest.run_command(identity, state, command, str(uuid.uuid4()))
        answer(outcome)
        return outcome

    async def _as_moderator(self, call: Call) -> tuple[ChannelState, str]:
        moderator_id = call.param("moderator_id")
        call.require_user(moderator_id, "moderator_id")
        return await self.base.channel(call.param("broadcaster_id")), moderator_id

    async def _as_broadcaster(self, call: Call) -> ChannelState:
        broadcaster_id = call.param("broadcaster_id")
        call.require_user(broadcaster_id, "broadcaster_id")
        return await self.base.channel(broadcaster_id)

    # ---- bans and timeouts
    async def ban(self, call: Call) -> web.Response:
        state, moderator_id = await self._as_moderator(call)
        data = (await call.body()).get("data")
        if not isinstance(data, dict) or not data.get("user_id"):
            raise HelixError(400, "Missing required field \"data.user_id\"")
        user = await self.base.user(str(data["user_id"]))
        reason = str(data.get("reason") or "")
        if any(char in reason for char in "\r\n\0"):
            raise HelixError(400, "The reason must be on one line")
        duration = data.get("duration")
        now = time.time()
        if duration is None:
            await self._run(call, state, f"/ban {user['login']} {reason}".rstrip())
            end_time = None
        else:
            if not isinstance(duration, int) or not 1 <= duration <= MAX_TIMEOUT:
                raise HelixError(400, f"\"duration\" must be from 1 through {MAX_TIMEOUT} seconds")
            await self._run(call, state, f"/timeout {user['login']} {duration} {reason}".rstrip())
            end_time = rfc3339(now + duration)
        return call.json({"data": [{"broadcaster_id": state.room_id, "moderator_id": moderator_id,
                                    "user_id": str(data["user_id"]), "created_at": rfc3339(now),
                                    "end_time": end_time}]})

    async def unban(self, call: Call) -> web.Response:
        state, _ = await self._as_moderator(call)
        user = await self.base.user(call.param("user_id"))
        remaining = await self.commands.ban_ttl(state.name, call.param("user_id"))
        await self._run(call, state, f"/{'untimeout' if remaining > 0 else 'unban'} {user['login']}")
        return call.empty()

    async def delete(self, call: Call) -> web.Response:
        state, _ = await self._as_moderator(call)
        message_id = call.param("message_id", required=False)
        await self._run(call, state, f"/delete {message_id}" if message_id else "/clear")
        return call.empty()

    # ---- moderators and VIPs
    async def moderators(self, call: Call) -> web.Response:
        state = await self._as_broadcaster(call)
        return call.json(await self._listing(call, state.mods))

    async def vips(self, call: Call) -> web.Response:
        state = await self._as_broadcaster(call)
        return call.json(await self._listing(call, state.vips))

    async def _listing(self, call: Call, logins: frozenset[str]) -> dict:
        wanted = set(call.params("user_id"))
        people = []
        for login in sorted(logins):
            user_id = await self.base.accounts.user_id(login)
            if user_id is None or (wanted and user_id not in wanted):
                continue
            profile = await self.base.accounts.user(user_id) or {}
            people.append({"user_id": user_id, "user_login": login, "user_name": profile.get("display_name", login)})
        page, pagination = paginate(people, call)
        return {"data": page, "pagination": pagination}

    async def add_moderator(self, call: Call) -> web.Response:
        return await self._role(call, "/mod")

    async def remove_moderator(self, call: Call) -> web.Response:
        return await self._role(call, "/unmod")

    async def add_vip(self, call: Call) -> web.Response:
        return await self._role(call, "/vip")

    async def remove_vip(self, call: Call) -> web.Response:
        return await self._role(call, "/unvip")

    async def _role(self, call: Call, command: str) -> web.Response:
        state = await self._as_broadcaster(call)
        user = await self.base.user(call.param("user_id"))
        await self._run(call, state, f"{command} {user['login']}")
        return call.empty()

