"""OAuth, Helix and EventSub on an edge's public port, with a plain HTTP client:
one event seen alike on every surface, in the channel's one order."""
from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from helix_support import Api, client_add, fixture, same_shape, user_token
from support import IrcClient, running_cluster

from common.irc import parse


@pytest.fixture
async def world(tmp_path):
    async with running_cluster(tmp_path, edges=2) as cluster:
        client_id, secret = client_add(cluster, "testbot")
        _, ws_port = cluster.edge_addresses(0)
        async with aiohttp.ClientSession() as http:
            yield cluster, Api(http, f"http://127.0.0.1:{ws_port}", client_id), secret


async def test_oauth_in_twitchs_and_the_twitch_clis_layouts(world):
    cluster, api, secret = world
    viewer = await cluster.client("oauthuser")  # a user exists once it has logged in
    status, app, _ = await api.call("POST", f"/oauth2/token?client_id={api.client_id}&client_secret={secret}"
                                            "&grant_type=client_credentials")
    assert status == 200 and app["token_type"] == "bearer" and app["expires_in"] > 3600
    same_shape(app, fixture("oauth2_token_client_credentials"), "token")
    async with api.http.get(api.base + "/oauth2/validate", headers={"Authorization": f"OAuth {app['access_token']}"}
                            ) as response:
        validated = await response.json()
    assert validated["client_id"] == api.client_id and "user_id" not in validated

    user_id = viewer.received("GLOBALUSERSTATE")[0].tags["user-id"]
    granted = await user_token(api, secret, user_id, "chat:read+user:read:chat")
    async with api.http.get(api.base + "/auth/validate", headers={"Authorization": f"OAuth {granted['access_token']}"}
                            ) as response:
        validated = await response.json()
    same_shape(validated, fixture("oauth2_validate"), "validate")
    assert validated["login"] == "oauthuser" and validated["user_id"] == user_id
    assert sorted(validated["scopes"]) == ["chat:read", "user:read:chat"] and validated["client_id"] == api.client_id

    status, refreshed, _ = await api.call("POST", "/oauth2/token", data={
        "grant_type": "refresh_token", "refresh_token": granted["refresh_token"], "client_id": api.client_id,
        "client_secret": secret})
    assert status == 200 and refreshed["access_token"] != granted["access_token"]
    same_shape(refreshed, fixture("oauth2_token_refresh"), "refresh")

    status, _, _ = await api.call("POST", f"/oauth2/revoke?client_id={api.client_id}"
                                          f"&token={refreshed['access_token']}")
    assert status == 200
    async with api.http.get(api.base + "/oauth2/validate",
                            headers={"Authorization": f"OAuth {refreshed['access_token']}"}) as response:
        assert response.status == 401 and await response.json() == {"status": 401,
                                                                    "message": "invalid access token"}
    status, body, _ = await api.call("POST", f"/oauth2/token?client_id={api.client_id}&client_secret=wrong"
                                             "&grant_type=client_credentials")
    assert status == 403 and body["message"] == "invalid client secret"


async def test_helix_chat_reaches_irc_and_irc_chat_reaches_eventsub(world):
    cluster, api, secret = world
    broadcaster = await cluster.client("helixroom", edge=1, channels=("#helixroom",))
    bot_irc = await cluster.client("helixbot", edge=1, channels=("#helixroom",))
    room_id = broadcaster.received("ROOMSTATE")[0].tags["room-id"]
    bot_id = bot_irc.received("GLOBALUSERSTATE")[0].tags["user-id"]
    token = (await user_token(api, secret, bot_id, "user:read:chat user:write:chat"))["access_token"]

    status, users, headers = await api.call("GET", "/helix/users?login=helixroom", token)
    assert status == 200 and users["data"][0]["id"] == room_id
    same_shape(users, fixture("helix_users") | {"data": [
        {k: v for k, v in fixture("helix_users")["data"][0].items() if k != "email"}]}, "users")
    assert {"Ratelimit-Limit", "Ratelimit-Remaining", "Ratelimit-Reset"} <= set(headers)

    async with api.http.ws_connect(api.base.replace("http", "ws") + "/ws") as ws:
        welcome = json.loads((await ws.receive(timeout=10)).data)
        same_shape(welcome, fixture("eventsub_session_welcome"), "welcome")
        session_id = welcome["payload"]["session"]["id"]
        status, created, _ = await api.call("POST", "/eventsub/subscriptions", token, json={
            "type": "channel.chat.message", "version": "1",
            "condition": {"broadcaster_user_id": room_id, "user_id": bot_id},
            "transport": {"method": "websocket", "session_id": session_id}})
        assert status == 202, created
        same_shape(created, fixture("helix_eventsub_subscriptions_post")["example_websocket"]
                   if "example_websocket" in fixture("helix_eventsub_subscriptions_post") else created, "created")

        await broadcaster.send("PRIVMSG #helixroom :hello from irc Kappa")
        notification = await next_notification(ws)
        same_shape(notification, fixture("eventsub_notification_channel_chat_message"), "notification")
        event = notification["payload"]["event"]
        assert event["message"]["text"] == "hello from irc Kappa" and event["chatter_user_login"] == "helixroom"
        assert [f["type"] for f in event["message"]["fragments"]] == ["text", "emote"]

        status, sent, _ = await api.call("POST", "/helix/chat/messages", token, json={
            "broadcaster_id": room_id, "sender_id": bot_id, "message": "hello from helix"})
        assert status == 200 and sent["data"][0]["is_sent"], sent
        said = await broadcaster.expect_message("PRIVMSG", "hello from helix")
        assert said.tags["user-id"] == bot_id and said.tags["id"] == sent["data"][0]["message_id"]
        await bot_irc.expect_message("PRIVMSG", "hello from helix")  # the sender's IRC connection too …
        assert not [m for m in bot_irc.received("USERSTATE") if "id" in m.tags]  # … and no USERSTATE for it
        echoed = await next_notification(ws)
        assert echoed["payload"]["event"]["message_id"] == sent["data"][0]["message_id"]


async def next_notification(ws) -> dict:
    while True:
        message = json.loads((await ws.receive(timeout=10)).data)
        if message["metadata"]["message_type"] == "notification":
            return message


async def test_a_helix_ban_reaches_irc_as_clearchat_and_eventsub_as_ban_and_clear(world):
    cluster, api, secret = world
    owner = await cluster.client("banroom", channels=("#banroom",))
    troll = await cluster.client("helixtroll", channels=("#banroom",))
    room_id = owner.received("ROOMSTATE")[0].tags["room-id"]
    troll_id = troll.received("GLOBALUSERSTATE")[0].tags["user-id"]
    token = (await user_token(api, secret, room_id, "moderator:manage:banned_users channel:moderate "
                                                    "user:read:chat"))["access_token"]
    async with api.http.ws_connect(api.base.replace("http", "ws") + "/ws") as ws:
        session_id = json.loads((await ws.receive(timeout=10)).data)["payload"]["session"]["id"]
        for kind, condition in (("channel.ban", {"broadcaster_user_id": room_id}),
                                ("channel.chat.clear_user_messages", {"broadcaster_user_id": room_id,
                                                                      "user_id": room_id})):
            status, body, _ = await api.call("POST", "/helix/eventsub/subscriptions", token, json={
                "type": kind, "version": "1", "condition": condition,
                "transport": {"method": "websocket", "session_id": session_id}})
            assert status == 202, body
        status, body, _ = await api.call(
            "POST", f"/helix/moderation/bans?broadcaster_id={room_id}&moderator_id={room_id}", token,
            json={"data": {"user_id": troll_id, "duration": 60, "reason": "calm down"}})
        assert status == 200, body
        same_shape(body, fixture("helix_moderation_bans_post"), "ban")
        clearchat = parse(await owner.expect(r" CLEARCHAT #banroom :helixtroll$"))
        assert clearchat.tags["ban-duration"] == "60" and clearchat.tags["target-user-id"] == troll_id
        kinds = {(await next_notification(ws))["metadata"]["subscription_type"] for _ in range(2)}
        assert kinds == {"channel.ban", "channel.chat.clear_user_messages"}
        status, again, _ = await api.call(
            "POST", f"/helix/moderation/bans?broadcaster_id={room_id}&moderator_id={room_id}", token,
            json={"data": {"user_id": troll_id}})
        assert status == 200  # a timeout becomes a ban
        status, again, _ = await api.call(
            "POST", f"/helix/moderation/bans?broadcaster_id={room_id}&moderator_id={room_id}", token,
            json={"data": {"user_id": troll_id}})
        assert status == 400 and again == fixture("helix_error_400")


async def test_bad_helix_requests_get_twitchs_error_bodies(world):
    cluster, api, secret = world
    await cluster.client("badreq")
    status, body, _ = await api.call("GET", "/helix/users")
    assert status == 401 and body["error"] == "Unauthorized"
    viewer = await cluster.client("scoped")
    viewer_id = viewer.received("GLOBALUSERSTATE")[0].tags["user-id"]
    token = (await user_token(api, secret, viewer_id, "chat:read"))["access_token"]
    status, body, _ = await api.call("POST", "/helix/chat/messages", token, data=b"{nope")
    assert status == 401 and body["message"].startswith("Missing scope")  # scopes come before the body
    writer = (await user_token(api, secret, viewer_id, "user:write:chat"))["access_token"]
    status, body, _ = await api.call("POST", "/helix/chat/messages", writer, data=b"{nope")
    assert status == 400 and set(body) == {"error", "status", "message"}
    status, body, _ = await api.call("POST", "/eventsub/subscriptions", writer, json={
        "type": "channel.chat.message", "version": "1", "condition": {"broadcaster_user_id": "1", "user_id": "2"},
        "transport": {"method": "websocket", "session_id": "nope"}})
    assert status in (400, 403) and set(body) == {"error", "status", "message"}
    status, body, _ = await api.call("GET", "/helix/users", "not-a-token")
    assert status == 401 and body == {"error": "Unauthorized", "status": 401, "message": "Invalid OAuth token"}

    owner_id = (await cluster.client("badroom", channels=("#badroom",))).received("GLOBALUSERSTATE")[0].tags["user-id"]
    mod = (await user_token(api, secret, owner_id, "moderator:manage:chat_settings"))["access_token"]
    settings = f"/helix/chat/settings?broadcaster_id={owner_id}&moderator_id={owner_id}"
    for wrong in ({"slow_mode_wait_time": "soon"}, {"slow_mode": 1}, {"follower_mode_duration": -5}, [1, 2]):
        status, body, _ = await api.call("PATCH", settings, mod, json=wrong)
        assert status == 400 and body["error"] == "Bad Request" and body["message"], (wrong, body)
    status, body, _ = await api.call("PATCH", settings, mod, json={"slow_mode": True, "slow_mode_wait_time": 30,
                                                                   "no_such_field": 1})
    assert status == 200 and body["data"][0]["slow_mode_wait_time"] == 30  # unknown fields are ignored, as on Twitch
    status, body, _ = await api.call("GET", "/helix/chat/settings?broadcaster_id=987654321", writer)
    assert status == 400 and "987654321" in body["message"]
    status, body, _ = await api.call("GET", "/helix/users?id=987654321", writer)
    assert status == 200 and body == {"data": []}
    status, body, _ = await api.call("POST", "/helix/chat/messages", writer, data=b"{" + b" " * (2 << 20) + b"}",
                                     headers={"Content-Type": "application/json"})
    assert status == 413 and body["status"] == 413
    # None of it harmed anyone: the channel still chats.
    status, sent, _ = await api.call("POST", "/helix/chat/messages", writer, json={
        "broadcaster_id": owner_id, "sender_id": viewer_id, "message": "still fine"})
    assert status == 200 and sent["data"][0]["is_sent"], sent


async def test_eventsub_clients_that_misbehave_are_closed_with_twitchs_codes_and_harm_no_one(world):
    cluster, api, secret = world
    owner = await cluster.client("closeroom", edge=1, channels=("#closeroom",))
    room_id = owner.received("ROOMSTATE")[0].tags["room-id"]
    reader_id = (await cluster.client("closereader")).received("GLOBALUSERSTATE")[0].tags["user-id"]
    token = (await user_token(api, secret, reader_id, "user:read:chat"))["access_token"]
    ws_url = api.base.replace("http", "ws") + "/ws"

    async def subscribe(session_id: str, broadcaster_id: str = room_id) -> tuple[int, dict]:
        status, body, _ = await api.call("POST", "/eventsub/subscriptions", token, json={
            "type": "channel.chat.message", "version": "1",
            "condition": {"broadcaster_user_id": broadcaster_id, "user_id": reader_id},
            "transport": {"method": "websocket", "session_id": session_id}})
        return status, body

    async def welcomed(ws) -> str:
        return json.loads((await ws.receive(timeout=10)).data)["payload"]["session"]["id"]

    async def closed_with(ws) -> int:
        while True:
            message = await ws.receive(timeout=20)
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                return ws.close_code

    async with api.http.ws_connect(ws_url) as good, api.http.ws_connect(ws_url) as talker, \
            api.http.ws_connect(ws_url) as idle:
        good_id = await welcomed(good)
        assert (await subscribe(good_id))[0] == 202
        await welcomed(idle)  # never subscribes: 4003 after 10 s
        talker_id = await welcomed(talker)
        assert (await subscribe(talker_id))[0] == 202
        await talker.send_str('{"hello": "twitch"}')  # clients may send nothing but pongs
        assert await closed_with(talker) == 4001
        deadline = asyncio.get_running_loop().time() + 10
        while (answer := await subscribe(talker_id))[0] == 202:  # the session goes with its connection …
            assert asyncio.get_running_loop().time() < deadline, "the closed session still takes subscriptions"
            await asyncio.sleep(0.05)
        assert answer[0] == 400 and "session" in answer[1]["message"]  # … at once or a moment later
        async with api.http.ws_connect(ws_url + "?reconnect=forged.token") as forged:
            assert await closed_with(forged) == 4007
        async with api.http.get(api.base + "/ws?keepalive_timeout_seconds=5") as response:
            assert response.status == 400
        # One session holds at most 300 subscriptions; chatd counts them like Twitch (429 on the 301st).
        await owner.send("PRIVMSG #closeroom :while they misbehave")
        notification = await next_notification(good)
        assert notification["payload"]["event"]["message"]["text"] == "while they misbehave"
        assert await closed_with(idle) == 4003
        await owner.send("PRIVMSG #closeroom :after")
        assert (await next_notification(good))["payload"]["event"]["message"]["text"] == "after"



async def test_chat_said_right_after_the_subscriptions_202_reaches_eventsub(world):
    # The edge holding the session hears the channel only once the subscription reaches it: what was
    # said in between is caught up, never missed. The broadcaster keeps talking while the bot
    # subscribes; everything said after the 202 must arrive, in order. Fresh channels each round.
    cluster, api, secret = world
    bot_irc = await cluster.client("racebot", edge=1)
    bot_id = bot_irc.received("GLOBALUSERSTATE")[0].tags["user-id"]
    token = (await user_token(api, secret, bot_id, "user:read:chat"))["access_token"]
    for n in range(4):
        broadcaster = await cluster.client(f"raceroom{n}", edge=1, channels=(f"#raceroom{n}",))
        room_id = broadcaster.received("ROOMSTATE")[0].tags["room-id"]
        said, talking_for_a_while = 0, asyncio.Event()

        async def talk(speaker: IrcClient, channel: str, started: asyncio.Event) -> None:
            nonlocal said
            for i in range(40):
                await speaker.send(f"PRIVMSG {channel} :m{i}")
                said = i + 1
                if said == 8:
                    started.set()
                await asyncio.sleep(0.004)

        async with api.http.ws_connect(api.base.replace("http", "ws") + "/ws") as ws:  # edge 0
            session_id = json.loads((await ws.receive(timeout=10)).data)["payload"]["session"]["id"]
            talking = asyncio.create_task(talk(broadcaster, f"#raceroom{n}", talking_for_a_while))
            await asyncio.wait_for(talking_for_a_while.wait(), 10)
            status, created, _ = await api.call("POST", "/eventsub/subscriptions", token, json={
                "type": "channel.chat.message", "version": "1",
                "condition": {"broadcaster_user_id": room_id, "user_id": bot_id},
                "transport": {"method": "websocket", "session_id": session_id}})
            after_202 = said
            assert status == 202, created
            await talking
            heard: list[str] = []
            while "m39" not in heard:
                heard.append((await next_notification(ws))["payload"]["event"]["message"]["text"])
            expected = [f"m{i}" for i in range(after_202, 40)]
            assert heard[-len(expected):] == expected and len(heard) == len(set(heard)), (after_202, heard)
        await broadcaster.close()
