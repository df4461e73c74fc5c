"""twurple 8 (ApiClient, EventSubWsListener, ChatClient), unmodified, against a running cluster.

twurple reaches a self-hosted server only through TWURPLE_MOCK_API_PORT: Helix at
http://localhost:P/mock/…, OAuth at http://localhost:P/auth/…, EventSub at ws://127.0.0.1:P/ws.
So these clusters listen on fixed ports (a free pair above 65000): edge i serves WebSocket and
HTTP on port + i. ChatClient has no port option: ws's `createConnection` (passed through its
`connectionOptions.wsOptions`) sends its IRC-over-WebSocket connection to an edge's port.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import time
from dataclasses import dataclass, field

import aiohttp
import pytest
from helix_support import client_add
from support import NodeClient, running_cluster

from common.irc import parse

PORTS = range(65000, 65500, 2)  # where an edge pair's fixed WebSocket ports are looked for
SCOPES = ("chat:read chat:edit user:read:chat user:write:chat channel:moderate moderator:manage:banned_users "
          "moderator:manage:chat_settings")
WAIT = 15.0
DRAIN = 10.0  # EDGE_DRAIN_TIMEOUT: how long a stopping edge would wait for sessions that do not move


def free_port_pair() -> int:
    """P such that P and P + 1 are free on 127.0.0.1 and ::1 (a fixed port is never assumed free)."""
    for port in random.sample(PORTS, len(PORTS)):
        try:
            for host, family in (("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)):
                for offset in (0, 1):
                    with socket.socket(family) as probe:
                        probe.bind((host, port + offset))
            return port
        except OSError:
            continue
    raise AssertionError(f"no free pair of ports in {PORTS}")


class Twurple(NodeClient):
    """tests/js/twurple_client.mjs: one JSON event per line out, one JSON command per line in."""

    seq = 0

    async def wait(self, what: str, predicate, timeout: float = WAIT) -> dict:
        try:
            return await self.expect(predicate, timeout)
        except TimeoutError:
            raise AssertionError(f"twurple: no {what} within {timeout}s; last: {brief(self.events[-8:])}") from None

    async def call(self, name: str, *args, as_user: str | None = None) -> object:
        """`apiClient.<name>(*args)` (in `asUser(as_user)`'s context when given); its raw Helix data."""
        self.seq += 1
        seq = self.seq
        await self.command(json.dumps({"op": "api", "seq": seq, "call": name, "args": args, "asUser": as_user}))
        event = await self.wait(f"answer to {name}", lambda e: e.get("seq") == seq)
        assert event["event"] == "result", event
        return event["value"]

    async def listen(self, on: str, *args) -> None:
        await self.command(json.dumps({"op": "listen", "on": on, "args": args}))

    def heard(self, on: str) -> list[dict]:
        return [e["data"] for e in self.events if e["event"] == "eventsub" and e["on"] == on]


def brief(events: list[dict]) -> list[object]:
    """Events as a failure shows them: a notification by its text."""
    return [(e["on"], e["data"].get("message", {}).get("text")) if e["event"] == "eventsub" else e for e in events]


@dataclass
class World:
    cluster: object
    port: int  # edge i's WebSocket port is port + i
    client_id: str
    secret: str
    http: aiohttp.ClientSession
    clients: list[Twurple] = field(default_factory=list)

    async def user_token(self, user_id: str) -> dict:
        """The Twitch CLI's grant, as a test harness gets a user token without a browser."""
        async with self.http.post(f"http://127.0.0.1:{self.port}/auth/authorize", params={
                "client_id": self.client_id, "client_secret": self.secret, "grant_type": "user_token",
                "user_id": user_id, "scope": SCOPES}) as response:
            assert response.status == 200, await response.text()
            return await response.json()

    async def twurple(self, user_id: str, *, refreshing: bool = True, edge: int = 0, chat: str | None = None,
                      refresh_only: bool = False) -> Twurple:
        granted = await self.user_token(user_id)
        token = {"accessToken": "" if refresh_only else granted["access_token"],
                 "refreshToken": granted["refresh_token"], "scope": granted["scope"]}
        config = {"clientId": self.client_id, "token": token,
                  "clientSecret": self.secret if refreshing else None,
                  "chat": {"channel": chat, "port": self.port + edge} if chat else None}
        client = await Twurple.start("twurple_client.mjs", json.dumps(config),
                                     env={"TWURPLE_MOCK_API_PORT": str(self.port + edge)})
        self.clients.append(client)
        await client.wait("start", lambda e: e["event"] == "ready")
        return client


@pytest.fixture
async def world(tmp_path):
    port = free_port_pair()
    # A stopping edge 0 tells its EventSub sessions to reconnect to edge 1.
    async with running_cluster(tmp_path, edges=2, ws_port=port, irc_port=0,
                               edge_env={0: {"EDGE_PUBLIC_URL": f"ws://127.0.0.1:{port + 1}",
                                             "EDGE_DRAIN_TIMEOUT": f"{DRAIN:g}s"}}) as cluster:
        client_id, secret = client_add(cluster, "twurple")
        async with aiohttp.ClientSession() as http:
            world = World(cluster, port, client_id, secret, http)
            try:
                yield world
            finally:
                for client in world.clients:
                    await client.stop()


async def room(world: World, name: str, edge: int = 1):
    """The broadcaster of #name, in its channel over IRC; and its user id."""
    owner = await world.cluster.client(name, edge=edge, channels=(f"#{name}",))
    return owner, owner.received("ROOMSTATE")[0].tags["room-id"]


async def test_api_client_finds_users_bans_and_changes_chat_settings_as_irc_sees_them(world):
    owner, room_id = await room(world, "twroom")
    troll = await world.cluster.client("twtroll", edge=1, channels=("#twroom",))
    troll_id = troll.received("GLOBALUSERSTATE")[0].tags["user-id"]
    api = await world.twurple(room_id, refreshing=False)  # StaticAuthProvider: validates, then Helix

    user = await api.call("users.getUserByName", "twtroll")
    assert user["id"] == troll_id and user["login"] == "twtroll"

    [ban] = await api.call("moderation.banUser", room_id, {"user": troll_id, "duration": 60, "reason": "calm"})
    assert ban["user_id"] == troll_id and ban["end_time"]
    clearchat = parse(await owner.expect(r" CLEARCHAT #twroom :twtroll$"))
    assert clearchat.tags["ban-duration"] == "60" and clearchat.tags["target-user-id"] == troll_id

    settings = await api.call("chat.getSettings", room_id)
    assert settings["broadcaster_id"] == room_id and settings["slow_mode"] is False
    changed = await api.call("chat.updateSettings", room_id, {"slowModeEnabled": True, "slowModeDelay": 10})
    assert changed["slow_mode"] is True and changed["slow_mode_wait_time"] == 10
    assert parse(await owner.expect(r" ROOMSTATE #twroom$")).tags == {"room-id": room_id, "slow": "10"}
    assert (await api.call("chat.getSettings", room_id))["slow_mode_wait_time"] == 10


async def test_api_client_send_chat_message_reaches_irc_with_the_senders_user_id(world):
    owner, room_id = await room(world, "sendroom")
    bot = await world.cluster.client("sendbot", edge=1)
    bot_id = bot.received("GLOBALUSERSTATE")[0].tags["user-id"]
    api = await world.twurple(bot_id, refreshing=False)

    # The sender is the user whose context the call runs in (twurple's default context is the broadcaster).
    sent = await api.call("chat.sendChatMessage", room_id, "hello from twurple", as_user=bot_id)
    assert sent["is_sent"] is True
    said = await owner.expect_message("PRIVMSG", "hello from twurple")
    assert said.tags["user-id"] == bot_id and said.tags["id"] == sent["message_id"]


async def test_eventsub_listener_hears_irc_chat_then_a_helix_ban_as_ban_and_clear(world):
    owner, room_id = await room(world, "esroom")
    troll = await world.cluster.client("estroll", edge=1, channels=("#esroom",))
    troll_id = troll.received("GLOBALUSERSTATE")[0].tags["user-id"]
    twurple = await world.twurple(room_id)
    for on, args in (("onChannelChatMessage", (room_id, room_id)), ("onChannelBan", (room_id,)),
                     ("onChannelChatClearUserMessages", (room_id, room_id))):
        await twurple.listen(on, *args)
        await twurple.wait(f"subscription for {on}", lambda e, on=on: e["event"] in ("subscribed", "subscribe_failed")
                           and e["id"].startswith(on_type(on)))
    assert not [e for e in twurple.events if e["event"] == "subscribe_failed"], twurple.events

    await troll.send("PRIVMSG #esroom :hello eventsub")
    message = (await twurple.wait("chat message", lambda e: e.get("on") == "onChannelChatMessage"))["data"]
    assert message["message"]["text"] == "hello eventsub" and message["chatter_user_login"] == "estroll"
    assert message["chatter_user_id"] == troll_id and message["broadcaster_user_id"] == room_id

    await twurple.call("moderation.banUser", room_id, {"user": troll_id, "reason": "spam"})
    await owner.expect(r" CLEARCHAT #esroom :estroll$")
    ban = (await twurple.wait("ban", lambda e: e.get("on") == "onChannelBan"))["data"]
    assert ban["user_id"] == troll_id and ban["is_permanent"] is True and ban["reason"] == "spam"
    cleared = (await twurple.wait("clear", lambda e: e.get("on") == "onChannelChatClearUserMessages"))["data"]
    assert cleared["target_user_id"] == troll_id and cleared["target_user_login"] == "estroll"


def on_type(on: str) -> str:
    """twurple's subscription id starts with the EventSub type it subscribes to."""
    return {"onChannelChatMessage": "channel.chat.message", "onChannelBan": "channel.ban",
            "onChannelChatClearUserMessages": "channel.chat.clear_user_messages"}[on]


async def test_chat_client_refreshes_its_token_joins_hears_and_says(world):
    owner, room_id = await room(world, "chatroom", edge=1)
    bot_irc = await world.cluster.client("chatbot", edge=1)  # a user exists once it has logged in
    bot_id = bot_irc.received("GLOBALUSERSTATE")[0].tags["user-id"]
    await bot_irc.close()
    # Only a refresh token: twurple refreshes at /auth/token, validates at /auth/validate, logs in over IRC.
    bot = await world.twurple(bot_id, chat="chatroom", refresh_only=True)
    refreshed = await bot.wait("refresh", lambda e: e["event"] == "refreshed")
    assert refreshed["userId"] == bot_id and refreshed["accessToken"]
    await bot.wait("join", lambda e: e["event"] == "joined" and e["user"] == "chatbot")

    await owner.send("PRIVMSG #chatroom :hello twurple chat")
    heard = await bot.wait("message", lambda e: e["event"] == "message")
    assert (heard["channel"], heard["user"], heard["text"]) == ("chatroom", "chatroom", "hello twurple chat")
    assert heard["userId"] == room_id

    await bot.command(json.dumps({"op": "say", "seq": 1, "channel": "chatroom", "text": "hello from twurple chat"}))
    said = await owner.expect_message("PRIVMSG", "hello from twurple chat")
    assert said.source.startswith("chatbot!") and said.tags["user-id"] == bot_id
    assert (await bot.wait("say", lambda e: e.get("seq") == 1))["event"] == "result"


async def test_eventsub_session_follows_a_draining_edge_without_losing_a_notification(world):
    """The listener starts on edge 0 (its mock port); edge 0 stops, tells the session to reconnect
    to edge 1 (its EDGE_PUBLIC_URL), and twurple follows the reconnect_url while chat goes on."""
    owner, room_id = await room(world, "drainroom", edge=1)
    witness = await world.cluster.client("witness", edge=1, channels=("#drainroom",))
    twurple = await world.twurple(room_id, edge=0)
    await twurple.listen("onChannelChatMessage", room_id, room_id)
    await twurple.wait("subscription", lambda e: e["event"] == "subscribed")

    sent: list[str] = []

    async def chatter() -> None:
        while True:
            sent.append(f"line {len(sent)}")
            await owner.send(f"PRIVMSG #drainroom :{sent[-1]}")
            await asyncio.sleep(0.25)  # the broadcaster may say 100 lines in 30 s

    talking = asyncio.get_running_loop().create_task(chatter())
    try:
        await twurple.wait("a first notification", lambda e: e["event"] == "eventsub")
        started = time.monotonic()
        await asyncio.wait_for(world.cluster.stop_component("edge-0"), WAIT)
        stopped = time.monotonic() - started
        await twurple.wait("the reconnect", lambda e: e["event"] == "log" and "Reconnect: new connection" in
                           e["message"])
        mark = len(sent)
        await twurple.wait("notifications after the move", lambda e: e["event"] == "eventsub" and
                           int(e["data"]["message"]["text"].split()[1]) >= mark + 5)
    finally:
        talking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await talking
    await owner.send("PRIVMSG #drainroom :last")
    await twurple.wait("the last line", lambda e: e["event"] == "eventsub" and e["data"]["message"]["text"] == "last")
    said = await witness.wait_for_texts(set(sent) | {"last"}, "#drainroom")
    heard = [e["message"]["text"] for e in twurple.heard("onChannelChatMessage")]
    assert sorted(heard) == sorted(said), (set(said) - set(heard), len(heard) - len(set(heard)))
    # twurple followed session_reconnect on the one socket: never disconnected, never subscribed again.
    assert not [e for e in twurple.events if e["event"] in ("socket_disconnected", "subscribe_failed")]
    assert len([e for e in twurple.events if e["event"] == "subscribed"]) == 1
    assert stopped < DRAIN / 2, f"edge-0 took {stopped:.1f}s to stop"  # it did not wait its drain out


async def test_an_edge_stops_soon_after_twurple_has_moved_its_eventsub_session(world):
    _, room_id = await room(world, "quickroom", edge=1)
    twurple = await world.twurple(room_id, edge=0)
    await twurple.listen("onChannelChatMessage", room_id, room_id)
    await twurple.wait("subscription", lambda e: e["event"] == "subscribed")
    started = time.monotonic()
    await asyncio.wait_for(world.cluster.stop_component("edge-0"), WAIT)
    stopped = time.monotonic() - started
    await twurple.wait("the reconnect", lambda e: e["event"] == "log" and "Reconnect: new connection" in e["message"])
    # twurple closes its old connection as soon as edge 1 welcomes the session: edge 0 has nothing left to wait for.
    assert stopped < DRAIN / 2, f"edge-0 took {stopped:.1f}s to stop"
