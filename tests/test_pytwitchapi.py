"""pyTwitchAPI 4.5, unmodified but for its URLs (its own twitch-cli mocking recipe), against a real
cluster: chat crosses IRC, Helix, EventSub and the library's IRC `Chat`; a Helix ban reaches IRC and
EventSub; a draining edge moves an EventSub session without losing a message; Helix answers parse
into the library's dataclasses with every field they declare."""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import subprocess
import sys
import time
import typing
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support import IrcClient, running_cluster
from twitchAPI.chat import Chat, ChatEvent
from twitchAPI.eventsub.websocket import EventSubWebsocket
from twitchAPI.helper import first
from twitchAPI.oauth import UserAuthenticator
from twitchAPI.object.base import TwitchObject
from twitchAPI.twitch import Twitch
from twitchAPI.type import AuthScope, AuthType

from common.irc import parse

ROOT = Path(__file__).parent.parent
CHAT_SCOPES = [AuthScope.USER_READ_CHAT, AuthScope.USER_WRITE_CHAT, AuthScope.CHAT_READ]
MOD_SCOPES = [AuthScope.USER_READ_CHAT, AuthScope.CHANNEL_MODERATE, AuthScope.MODERATOR_MANAGE_BANNED_USERS,
              AuthScope.MODERATOR_MANAGE_CHAT_SETTINGS]
DRAIN_WS, DRAIN_IRC = 65210, 65220  # fixed ports, so edge-0's reconnect_url can name edge-1


class Inbox:
    """What a pyTwitchAPI callback got; the library calls it on its own thread and loop."""

    def __init__(self) -> None:
        self.items: list = []

    async def handler(self, item) -> None:
        self.items.append(item)

    async def wait(self, done: typing.Callable[[list], bool], what: str, timeout: float = 10.0) -> list:
        deadline = time.monotonic() + timeout
        while not done(self.items):
            if time.monotonic() > deadline:
                last = repr(self.items[-1])[:300] if self.items else None
                raise AssertionError(f"no {what} within {timeout}s; got {len(self.items)}, the last: {last}")
            await asyncio.sleep(0.02)
        return self.items


def chat_texts(inbox: Inbox) -> list[str]:
    """The texts of the channel.chat.message notifications an EventSub callback got."""
    return [notification.event.message.text for notification in inbox.items]


def user_id(client: IrcClient) -> str:
    return client.received("GLOBALUSERSTATE")[0].tags["user-id"]


def client_add(cluster, name: str) -> tuple[str, str]:
    result = subprocess.run([sys.executable, "-m", "chatd.cli", "client", "add", name, "--data-dir",
                             str(cluster.data_dir)], capture_output=True, text=True, timeout=30, check=True, cwd=ROOT)
    client_id, secret = result.stdout.split()
    return client_id, secret


def unset_fields(obj: TwitchObject, where: str = "") -> list[str]:
    """Fields the library's dataclass requires that the answer left out (pyTwitchAPI leaves them unset, and
    only reading one raises); optional fields and fields with a default may be absent."""
    missing = []
    for name, kind in obj._get_annotations().items():
        optional = type(None) in typing.get_args(kind) or hasattr(type(obj), name)
        value = obj.__dict__.get(name)
        if name not in obj.__dict__ and not optional:
            missing.append(f"{where}{name}")
        elif isinstance(value, TwitchObject):
            missing += unset_fields(value, f"{where}{name}.")
        elif isinstance(value, list):
            for item in value:
                missing += unset_fields(item, f"{where}{name}[].") if isinstance(item, TwitchObject) else []
    return missing


@contextlib.asynccontextmanager
async def pytwitchapi(cluster, who: str, scopes: list[AuthScope], ws: int):
    """A Twitch object for user `who`, logged in the twitch-cli way (mock_authenticate) through port `ws`."""
    client_id, secret = client_add(cluster, f"app-{who}")
    twitch = await Twitch(client_id, secret, base_url=f"http://localhost:{ws}/mock/",
                          auth_base_url=f"http://localhost:{ws}/auth/")
    try:
        token = await UserAuthenticator(twitch, scopes, auth_base_url=twitch.auth_base_url).mock_authenticate(who)
        twitch.auto_refresh_auth = False  # mock_authenticate returns the access token alone
        await twitch.set_user_authentication(token, scopes)
        yield twitch
    finally:
        await twitch.close()


@contextlib.asynccontextmanager
async def eventsub_on(twitch: Twitch, ws: int):
    eventsub = EventSubWebsocket(twitch, connection_url=f"ws://127.0.0.1:{ws}/ws",
                                 subscription_url=f"http://127.0.0.1:{ws}/")
    await asyncio.wait_for(asyncio.to_thread(eventsub.start), 15)  # start() blocks until session_welcome
    try:
        yield eventsub
    finally:
        await eventsub.stop()


@contextlib.asynccontextmanager
async def chat_in(twitch: Twitch, ws: int, channel: str, inbox: Inbox):
    """pyTwitchAPI's IRC-over-WebSocket Chat, joined to `channel`, its messages into `inbox`."""
    chat = await Chat(twitch, connection_url=f"ws://127.0.0.1:{ws}", initial_channel=[channel])
    joined = Inbox()
    chat.register_event(ChatEvent.JOINED, joined.handler)
    chat.register_event(ChatEvent.MESSAGE, inbox.handler)
    await asyncio.wait_for(asyncio.to_thread(chat.start), 15)
    try:
        await joined.wait(bool, f"JOINED #{channel}")
        yield chat
    finally:
        await asyncio.to_thread(chat.stop)


async def until_heard(speaker: IrcClient, channel: str, heard: Inbox, timeout: float = 10.0) -> None:
    """Say markers in `channel` until the EventSub callback hears one. chatd answers a subscription's 202
    before the session's edge has joined the channel's stream, so a message said at once can be missed."""
    deadline = time.monotonic() + timeout
    for attempt in itertools.count():
        await speaker.send(f"PRIVMSG {channel} :marker {attempt}")
        with contextlib.suppress(AssertionError):
            await heard.wait(lambda _: any(t.startswith("marker") for t in chat_texts(heard)), "a marker", 0.5)
            return
        assert time.monotonic() < deadline, f"EventSub heard no marker in {channel} within {timeout}s"


@pytest.fixture
async def chat_world(tmp_path):
    """#pyroom's broadcaster on IRC (edge-1); pybot's pyTwitchAPI with EventSub listening on edge-0."""
    async with running_cluster(tmp_path, edges=2) as cluster, contextlib.AsyncExitStack() as stack:
        room = await cluster.client("pyroom", edge=1, channels=("#pyroom",))
        room_id, bot_id = user_id(room), user_id(await cluster.client("pybot", edge=1))
        _, ws = cluster.edge_addresses(0)
        twitch = await stack.enter_async_context(pytwitchapi(cluster, bot_id, CHAT_SCOPES, ws))
        eventsub = await stack.enter_async_context(eventsub_on(twitch, ws))
        heard = Inbox()
        await eventsub.listen_channel_chat_message(room_id, bot_id, heard.handler)
        await until_heard(room, "#pyroom", heard)
        yield stack, twitch, room, heard, ws


async def test_irc_chat_reaches_pytwitchapis_eventsub_and_chat(chat_world):
    stack, twitch, room, heard, ws = chat_world
    chat_heard = Inbox()
    await stack.enter_async_context(chat_in(twitch, ws, "pyroom", chat_heard))
    await room.send("PRIVMSG #pyroom :hello from irc")
    await heard.wait(lambda _: "hello from irc" in chat_texts(heard), "channel.chat.message from IRC")
    notification = heard.items[chat_texts(heard).index("hello from irc")]
    event, room_id = notification.event, user_id(room)
    assert (event.chatter_user_login, event.chatter_user_id, event.broadcaster_user_login,
            event.broadcaster_user_id) == ("pyroom", room_id, "pyroom", room_id)
    assert notification.metadata.subscription_type == "channel.chat.message" and not unset_fields(notification)
    await chat_heard.wait(lambda items: any(m.text == "hello from irc" for m in items), "a ChatMessage from IRC")
    [said] = [message for message in chat_heard.items if message.text == "hello from irc"]
    assert (said.user.name, said.user.id, said.room.name, said.room.room_id, said.id) == (
        "pyroom", room_id, "pyroom", room_id, event.message_id)


async def test_pytwitchapis_send_chat_message_reaches_irc_and_eventsub(chat_world):
    _, twitch, room, heard, _ = chat_world
    room_id, bot_id = user_id(room), heard.items[0].subscription.condition["user_id"]
    sent = await twitch.send_chat_message(room_id, bot_id, "hello from pytwitchapi")
    assert sent.is_sent and sent.message_id and not unset_fields(sent)
    privmsg = await room.expect_message("PRIVMSG", "hello from pytwitchapi")
    assert privmsg.tags["user-id"] == bot_id and privmsg.tags["id"] == sent.message_id
    await heard.wait(lambda _: "hello from pytwitchapi" in chat_texts(heard), "channel.chat.message from Helix")
    echoed = heard.items[chat_texts(heard).index("hello from pytwitchapi")].event
    assert (echoed.message_id, echoed.chatter_user_id, echoed.chatter_user_login) == (
        sent.message_id, bot_id, "pybot")


async def test_a_pytwitchapi_ban_reaches_irc_as_clearchat_and_eventsub_as_ban_and_clear(tmp_path):
    async with running_cluster(tmp_path) as cluster, contextlib.AsyncExitStack() as stack:
        owner = await cluster.client("pybanroom", channels=("#pybanroom",))
        troll = await cluster.client("pytroll", channels=("#pybanroom",))
        room_id, troll_id = user_id(owner), user_id(troll)
        _, ws = cluster.edge_addresses(0)
        twitch = await stack.enter_async_context(pytwitchapi(cluster, room_id, MOD_SCOPES, ws))
        eventsub = await stack.enter_async_context(eventsub_on(twitch, ws))
        bans, clears, chat = Inbox(), Inbox(), Inbox()
        await eventsub.listen_channel_ban(room_id, bans.handler)
        await eventsub.listen_channel_chat_clear_user_messages(room_id, room_id, clears.handler)
        await eventsub.listen_channel_chat_message(room_id, room_id, chat.handler)
        await until_heard(owner, "#pybanroom", chat)  # the session's edge hears the channel now

        banned = await twitch.ban_user(room_id, room_id, troll_id, "calm down")
        assert (banned.broadcaster_id, banned.moderator_id, banned.user_id, banned.end_time) == (
            room_id, room_id, troll_id, None)
        clearchat = parse(await owner.expect(r" CLEARCHAT #pybanroom :pytroll$"))
        assert clearchat.tags["target-user-id"] == troll_id and "ban-duration" not in clearchat.tags
        [ban] = await bans.wait(bool, "channel.ban")
        assert (ban.event.user_login, ban.event.user_id, ban.event.moderator_user_login, ban.event.reason) == (
            "pytroll", troll_id, "pybanroom", "calm down")
        assert ban.event.is_permanent and ban.event.ends_at is None and not unset_fields(ban)
        [clear] = await clears.wait(bool, "channel.chat.clear_user_messages")
        assert (clear.event.target_user_login, clear.event.target_user_id) == ("pytroll", troll_id)
        assert not unset_fields(clear)


def edge_health(cluster, name: str) -> dict:
    with urllib.request.urlopen(cluster.components[name].addresses["http"] + "/health", timeout=5) as response:
        return json.loads(response.read())


async def test_a_draining_edge_moves_the_eventsub_session_and_loses_no_message(tmp_path):
    edge_env = {0: {"EDGE_PUBLIC_URL": f"ws://127.0.0.1:{DRAIN_WS + 1}"}}
    async with running_cluster(tmp_path, edges=2, ws_port=DRAIN_WS, irc_port=DRAIN_IRC,
                               edge_env=edge_env) as cluster, contextlib.AsyncExitStack() as stack:
        sender = await cluster.client("pydrain", edge=1, channels=("#pydrain",))  # the broadcaster: 100 messages in 30 s
        watcher = await cluster.client("pywatch", edge=1, channels=("#pydrain",))
        room_id, reader_id = user_id(sender), user_id(await cluster.client("pyreader", edge=1))
        twitch = await stack.enter_async_context(pytwitchapi(cluster, reader_id, CHAT_SCOPES, DRAIN_WS + 1))
        eventsub = await stack.enter_async_context(eventsub_on(twitch, DRAIN_WS))  # on edge-0
        heard = Inbox()
        await eventsub.listen_channel_chat_message(room_id, reader_id, heard.handler)
        session_id = eventsub.active_session.id
        await until_heard(sender, "#pydrain", heard)

        stopping = None
        for number in range(30):
            await sender.send(f"PRIVMSG #pydrain :n{number:02d}")
            if number == 10:
                stopping = asyncio.create_task(cluster.stop_component("edge-0"))
            await asyncio.sleep(0.15)
        await asyncio.wait_for(stopping, 30)
        await watcher.wait_for_texts({f"n{number:02d}" for number in range(30)}, "#pydrain")
        accepted = {text for text in watcher.texts("#pydrain") if text.startswith("n")}
        with contextlib.suppress(AssertionError):  # the assertion below names what is missing
            await heard.wait(lambda _: accepted <= set(chat_texts(heard)), "every accepted message", 20)
        assert accepted <= set(chat_texts(heard)), f"lost on EventSub: {sorted(accepted - set(chat_texts(heard)))}"

        assert len(accepted) == 30 and eventsub.active_session.id == session_id
        assert edge_health(cluster, "edge-1")["eventsub_sessions"] == 1
        assert {text for text in chat_texts(heard) if text.startswith("n")} == accepted
        ids = [notification.metadata.message_id for notification in heard.items]
        assert len(set(ids)) == len(set(chat_texts(heard)))  # one id per message
        # pyTwitchAPI does not drop a repeated message_id: the draining edge handed the session over
        # where it stopped, so each message came once.
        assert len(ids) == len(set(ids)), f"{len(ids)} notifications, {len(ids) - len(set(ids))} twice"


async def test_helix_answers_fill_pytwitchapis_dataclasses(tmp_path):
    async with running_cluster(tmp_path) as cluster, contextlib.AsyncExitStack() as stack:
        owner = await cluster.client("pyshapes", channels=("#pyshapes",))
        viewer = await cluster.client("pyviewer", channels=("#pyshapes",))
        room_id, viewer_id = user_id(owner), user_id(viewer)
        _, ws = cluster.edge_addresses(0)
        twitch = await stack.enter_async_context(pytwitchapi(cluster, room_id, MOD_SCOPES, ws))

        me = await first(twitch.get_users())
        assert (me.id, me.login, me.display_name) == (room_id, "pyshapes", "pyshapes")
        users = [user async for user in twitch.get_users(logins=["pyshapes", "pyviewer", "nobody"])]
        assert {(user.id, user.login) for user in users} == {(room_id, "pyshapes"), (viewer_id, "pyviewer")}
        assert all(isinstance(user.created_at, datetime) and not unset_fields(user) for user in [me, *users])

        await twitch.update_chat_settings(room_id, room_id, slow_mode=True, slow_mode_wait_time=10)
        settings = await twitch.get_chat_settings(room_id, room_id)
        assert (settings.broadcaster_id, settings.moderator_id, settings.slow_mode, settings.slow_mode_wait_time,
                settings.emote_mode, settings.follower_mode) == (room_id, room_id, True, 10, False, False)
        assert not unset_fields(settings)

        before = datetime.now(UTC)
        timed_out = await twitch.ban_user(room_id, room_id, viewer_id, "a minute", duration=60)
        assert (timed_out.user_id, timed_out.broadcaster_id, timed_out.moderator_id) == (viewer_id, room_id, room_id)
        assert timedelta(seconds=58) <= timed_out.end_time - before <= timedelta(seconds=62)
        assert abs(timed_out.created_at - before) < timedelta(seconds=2) and not unset_fields(timed_out)

        eventsub = await stack.enter_async_context(eventsub_on(twitch, ws))
        created = {await eventsub.listen_channel_chat_message(room_id, room_id, Inbox().handler),
                   await eventsub.listen_channel_ban(room_id, Inbox().handler)}
        listed = await twitch.get_eventsub_subscriptions(target_token=AuthType.USER)
        subscriptions = [subscription async for subscription in listed]
        assert {subscription.id for subscription in subscriptions} == created and listed.total == 2
        assert {(s.type, s.status, s.transport["session_id"]) for s in subscriptions} == {
            ("channel.chat.message", "enabled", eventsub.active_session.id),
            ("channel.ban", "enabled", eventsub.active_session.id)}
        assert [unset_fields(subscription) for subscription in subscriptions] == [[], []]
