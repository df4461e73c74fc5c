"""TwitchIO 3.3, unmodified but for its base URLs, against a real cluster: a bot that hears
IRC chat over EventSub and answers through Helix, a Helix ban seen on IRC and on EventSub, an
AutoBot on a conduit, and an EventSub session moved off a draining edge without losing chat."""
from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
import twitchio
from support import running_cluster
from twitchio import HTTPException, eventsub
from twitchio.eventsub import websockets as eventsub_websockets
from twitchio.ext import commands
from twitchio.http import Route

ROOT = Path(__file__).parent.parent
DEADLINE = 15.0
BOT_SCOPES = "user:read:chat user:write:chat user:bot"
MOD_SCOPES = "moderator:manage:banned_users channel:moderate user:read:chat"


def cli(cluster, *args: str) -> list[str]:
    result = subprocess.run([sys.executable, "-m", "chatd.cli", *args, "--data-dir", str(cluster.data_dir)],
                            capture_output=True, text=True, timeout=30, check=True, cwd=ROOT)
    return result.stdout.split()


def point_twitchio_at(monkeypatch, helix_port: int, eventsub_port: int | None = None) -> None:
    """TwitchIO's only redirection: class and module attributes it reads at call time (restored after)."""
    monkeypatch.setattr(Route, "BASE", f"http://127.0.0.1:{helix_port}/helix/")
    monkeypatch.setattr(Route, "ID_BASE", f"http://127.0.0.1:{helix_port}/")
    monkeypatch.setattr(eventsub_websockets, "WSS", f"ws://127.0.0.1:{eventsub_port or helix_port}/ws")


async def user_tokens(port: int, client_id: str, secret: str, user_id: str, scopes: str) -> tuple[str, str]:
    """The Twitch CLI's dev grant: an access and a refresh token for `user_id`."""
    async with aiohttp.ClientSession() as http, http.post(f"http://127.0.0.1:{port}/auth/authorize", params={
            "client_id": client_id, "client_secret": secret, "grant_type": "user_token", "user_id": user_id,
            "scope": scopes}) as response:
        body = await response.json()
    assert response.status == 200, body
    return body["access_token"], body["refresh_token"]


class Hello(commands.Component):
    @commands.command()
    async def hello(self, ctx: commands.Context) -> None:
        await ctx.channel.send_message(f"hello {ctx.chatter.name}", sender=ctx.bot.bot_id, token_for=ctx.bot.bot_id,
                                       reply_to_message_id=ctx.message.id)


class Recording:
    """Event handlers that keep what they saw, and a wait for it with a deadline that says what it waited for."""

    def __init__(self, **options) -> None:
        super().__init__(prefix="!", **options)
        self.seen: list[tuple[str, object]] = []
        self.changed = asyncio.Event()

    def of(self, kind: str) -> list:
        return [payload for seen, payload in self.seen if seen == kind]

    async def wait(self, done: Callable[[], object], what: str, timeout: float = DEADLINE) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not done():
            if loop.time() >= deadline:
                raise AssertionError(f"the bot saw no {what} within {timeout}s; saw {[k for k, _ in self.seen][-8:]}")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), deadline - loop.time())
            except TimeoutError:
                pass

    def _record(self, kind: str, payload: object) -> None:
        self.seen.append((kind, payload))
        self.changed.set()

    async def event_message(self, payload) -> None:
        self._record("message", payload)
        await super().event_message(payload)  # commands

    async def event_ban(self, payload) -> None:
        self._record("ban", payload)

    async def event_chat_clear_user(self, payload) -> None:
        self._record("clear_user", payload)

    async def event_websocket_welcome(self, payload) -> None:
        self._record("welcome", payload)


class RecordingBot(Recording, commands.Bot):
    pass


class RecordingAutoBot(Recording, commands.AutoBot):
    pass


async def started(bot: twitchio.Client) -> asyncio.Task:
    """Start `bot` in this loop (no web adapter, no token file) and wait until it is ready."""
    task = asyncio.create_task(bot.start(with_adapter=False, load_tokens=False, save_tokens=False))
    ready = asyncio.create_task(bot.wait_until_ready())
    await asyncio.wait({task, ready}, timeout=DEADLINE, return_when=asyncio.FIRST_COMPLETED)
    if not ready.done():
        ready.cancel()
        await stopped(bot, task)  # raises what stopped the login, if anything did
        raise AssertionError(f"TwitchIO was not ready within {DEADLINE}s")
    return task


async def stopped(bot: twitchio.Client, task: asyncio.Task) -> None:
    await asyncio.wait_for(bot.close(), DEADLINE)
    await asyncio.wait_for(task, DEADLINE)
    # TwitchIO 3.3 files the socket a session_reconnect moved to under the session id (which Twitch
    # keeps), then drops that id as it closes the old socket: close() misses the new one.
    for socket in [o for o in gc.get_objects() if isinstance(o, eventsub_websockets.Websocket)]:
        await asyncio.wait_for(socket.close(), DEADLINE)


@pytest.fixture
async def world(tmp_path, monkeypatch):
    async with running_cluster(tmp_path) as cluster:
        client_id, secret = cli(cluster, "client", "add", "twitchio")
        port = cluster.edge_addresses(0)[1]
        point_twitchio_at(monkeypatch, port)
        yield cluster, port, client_id, secret


async def test_a_bot_hears_irc_chat_over_eventsub_and_answers_through_helix(world):
    cluster, port, client_id, secret = world
    owner = await cluster.client("tioroom", channels=("#tioroom",))
    bot_irc = await cluster.client("tiobot")
    room_id = owner.received("ROOMSTATE")[0].tags["room-id"]
    bot_id = bot_irc.received("GLOBALUSERSTATE")[0].tags["user-id"]
    bot = RecordingBot(client_id=client_id, client_secret=secret, bot_id=bot_id)
    task = await started(bot)
    try:
        await bot.add_token(*await user_tokens(port, client_id, secret, bot_id, BOT_SCOPES))
        await bot.add_component(Hello())
        await bot.subscribe_websocket(eventsub.ChatMessageSubscription(broadcaster_user_id=room_id, user_id=bot_id))
        await owner.send("PRIVMSG #tioroom :!hello")
        await bot.wait(lambda: bot.of("message"), "channel.chat.message")
        [heard] = bot.of("message")
        assert heard.text == "!hello" and heard.chatter.name == "tioroom" and heard.broadcaster.id == room_id
        answer = await owner.expect_message("PRIVMSG", "hello tioroom")
        assert answer.source.startswith("tiobot!") and answer.tags["user-id"] == bot_id
        assert answer.tags["reply-parent-msg-id"] == heard.id
    finally:
        await stopped(bot, task)


async def test_a_bot_answers_with_its_app_token_as_ctx_reply_does(world):
    cluster, port, client_id, secret = world
    owner = await cluster.client("tioapproom", channels=("#tioapproom",))
    bot_irc = await cluster.client("tioappbot")
    room_id = owner.received("ROOMSTATE")[0].tags["room-id"]
    bot_id = bot_irc.received("GLOBALUSERSTATE")[0].tags["user-id"]
    await user_tokens(port, client_id, secret, bot_id, "user:bot user:write:chat")  # the bot account's grant
    bot = RecordingBot(client_id=client_id, client_secret=secret, bot_id=bot_id)
    task = await started(bot)
    try:
        with pytest.raises(HTTPException) as refused:  # the broadcaster has not let the app's bots in yet
            await bot.create_partialuser(room_id).send_message("too early", sender=bot_id)
        assert refused.value.status == 403 and "channel:bot" in str(refused.value)
        await user_tokens(port, client_id, secret, room_id, "channel:bot")
        sent = await bot.create_partialuser(room_id).send_message("hello from the app token", sender=bot_id)
        answer = await owner.expect_message("PRIVMSG", "hello from the app token")
        assert answer.tags["user-id"] == bot_id and answer.tags["id"] == sent.id
    finally:
        await stopped(bot, task)


async def test_a_helix_ban_through_twitchio_reaches_irc_as_clearchat_and_eventsub_as_ban_and_clear(world):
    cluster, port, client_id, secret = world
    owner = await cluster.client("tiobanroom", channels=("#tiobanroom",))
    troll = await cluster.client("tiotroll", channels=("#tiobanroom",))
    room_id = owner.received("ROOMSTATE")[0].tags["room-id"]
    troll_id = troll.received("GLOBALUSERSTATE")[0].tags["user-id"]
    bot = RecordingBot(client_id=client_id, client_secret=secret, bot_id=room_id)  # the broadcaster's own bot
    task = await started(bot)
    try:
        await bot.add_token(*await user_tokens(port, client_id, secret, room_id, MOD_SCOPES))
        await bot.subscribe_websocket(eventsub.ChannelBanSubscription(broadcaster_user_id=room_id))
        await bot.subscribe_websocket(eventsub.ChatClearUserMessagesSubscription(broadcaster_user_id=room_id,
                                                                                 user_id=room_id))
        ban = await bot.create_partialuser(room_id).ban_user(user=troll_id, reason="calm down")
        assert ban.user.id == troll_id and ban.moderator.id == room_id
        clearchat = await owner.expect_message("CLEARCHAT", "tiotroll")
        assert clearchat.tags["target-user-id"] == troll_id and "ban-duration" not in clearchat.tags
        await bot.wait(lambda: bot.of("ban") and bot.of("clear_user"),
                       "channel.ban and channel.chat.clear_user_messages")
        [banned], [cleared] = bot.of("ban"), bot.of("clear_user")
        assert banned.user.id == troll_id and banned.permanent and banned.reason == "calm down"
        assert banned.moderator.id == room_id and cleared.user.id == troll_id
    finally:
        await stopped(bot, task)


async def test_an_autobot_on_a_conduit_hears_chat(world):
    cluster, port, client_id, secret = world
    owner = await cluster.client("tioconduit", channels=("#tioconduit",))
    bot_irc = await cluster.client("tioautobot")
    room_id = owner.received("ROOMSTATE")[0].tags["room-id"]
    bot_id = bot_irc.received("GLOBALUSERSTATE")[0].tags["user-id"]
    # The bot account and the broadcaster authorized the app, so its app token may read chat for the bot.
    await user_tokens(port, client_id, secret, bot_id, "user:bot user:read:chat")
    await user_tokens(port, client_id, secret, room_id, "channel:bot")
    # No conduit yet: AutoBot creates one (POST conduits), subscribes on it with its app token, opens a
    # WebSocket per shard and associates them (PATCH conduits/shards).
    bot = RecordingAutoBot(client_id=client_id, client_secret=secret, bot_id=bot_id, subscriptions=[
        eventsub.ChatMessageSubscription(broadcaster_user_id=room_id, user_id=bot_id)])
    task = await started(bot)
    try:
        [conduit] = await bot.fetch_conduits()
        assert conduit.id == bot.conduit_info.id and conduit.shard_count == 2
        shards = [shard async for shard in conduit.fetch_shards()]
        assert sorted(shard.id for shard in shards) == ["0", "1"] and {s.status for s in shards} == {"enabled"}
        await owner.send("PRIVMSG #tioconduit :through the conduit")
        await bot.wait(lambda: bot.of("message"), "channel.chat.message on a conduit shard")
        [heard] = bot.of("message")
        assert heard.text == "through the conduit" and heard.broadcaster.id == room_id
    finally:
        await stopped(bot, task)


async def test_an_eventsub_session_moves_off_a_draining_edge_and_loses_no_chat(tmp_path, monkeypatch):
    edge_env = {0: {"EDGE_PUBLIC_URL": "ws://127.0.0.1:65251"}}  # edge-0 sends its sessions to edge-1
    async with running_cluster(tmp_path, edges=2, ws_port=65250, irc_port=65260, edge_env=edge_env) as cluster:
        client_id, secret = cli(cluster, "client", "add", "twitchio")
        point_twitchio_at(monkeypatch, helix_port=65251, eventsub_port=65250)
        owner = await cluster.client("tiodrain", edge=1, channels=("#tiodrain",))
        viewer = await cluster.client("tioviewer", edge=1, channels=("#tiodrain",))
        bot_irc = await cluster.client("tiodrainbot", edge=1)
        room_id = owner.received("ROOMSTATE")[0].tags["room-id"]
        bot_id = bot_irc.received("GLOBALUSERSTATE")[0].tags["user-id"]
        bot = RecordingBot(client_id=client_id, client_secret=secret, bot_id=bot_id)
        task = await started(bot)
        stopping = None
        try:
            await bot.add_token(*await user_tokens(65251, client_id, secret, bot_id, BOT_SCOPES))
            await bot.subscribe_websocket(eventsub.ChatMessageSubscription(broadcaster_user_id=room_id,
                                                                           user_id=bot_id))
            for n in range(60):  # the broadcaster's limit is 100 in 30 s
                await owner.send(f"PRIVMSG #tiodrain :n{n}")
                if n == 15:
                    stopping = asyncio.create_task(cluster.stop_component("edge-0"))
                await asyncio.sleep(0.05)
            await owner.send("PRIVMSG #tiodrain :marker")  # same channel, same order: the barrier
            heard = lambda: [message.text for message in bot.of("message")]
            await bot.wait(lambda: "marker" in heard(), "marker after the drain")
            said = await viewer.wait_for_texts({"marker"}, "#tiodrain")
            assert set(said) <= set(heard()), f"lost: {sorted(set(said) - set(heard()))}"
            welcomes = bot.of("welcome")
            assert len(welcomes) == 2 and welcomes[0].id == welcomes[1].id  # one session, moved to edge-1
            ids = [message.id for message in bot.of("message")]
            # TwitchIO does not drop a repeated message_id: the draining edge handed the session over
            # where it stopped, so the bot heard each message once (it would answer a command twice).
            assert len(ids) == len(set(ids)), f"heard {len(ids)}, {len(ids) - len(set(ids))} twice"
        finally:
            await stopped(bot, task)
            if stopping is not None:
                await asyncio.wait_for(stopping, 30)
