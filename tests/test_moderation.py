"""Moderation commands through real clients: what the moderator, the target and a
viewer on the other edge each see."""
from __future__ import annotations

import asyncio

import aiohttp
import pytest
import pytest_asyncio
from support import IrcClient, running_cluster

from common.irc import Message, parse
from common.tokens import stable_id

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cluster(tmp_path_factory):
    async with running_cluster(tmp_path_factory.mktemp("moderation"), edges=2) as cluster:
        yield cluster


async def notice(client: IrcClient, channel: str) -> Message:
    return parse(await client.expect(rf" NOTICE {channel} :"))


async def room(cluster, channel: str, *, mod: bool = True):
    """The broadcaster (edge 0), a moderator (edge 0), a target and a viewer (edge 1)."""
    owner = channel.lstrip("#")
    broadcaster = await cluster.client(owner, edge=0, channels=(channel,))
    moderator = await cluster.client(f"{owner}_mod", edge=0, channels=(channel,))
    target = await cluster.client(f"{owner}_troll", edge=1, channels=(channel,))
    viewer = await cluster.client(f"{owner}_fan", edge=1, transport="ws", channels=(channel,))
    if mod:
        await broadcaster.send(f"PRIVMSG {channel} :/mod {owner}_mod")
        assert (await notice(broadcaster, channel)).tags["msg-id"] == "mod_success"
    return broadcaster, moderator, target, viewer


async def test_roles_badges_and_role_lists(cluster):
    channel = "#castle"
    broadcaster, moderator, target, viewer = await room(cluster, channel)

    await broadcaster.send(f"PRIVMSG {channel} :welcome all")
    got = await viewer.expect_message("PRIVMSG", "welcome all")
    assert got.tags["badges"] == "broadcaster/1" and got.tags["user-id"] == got.tags["room-id"]

    await moderator.send(f"PRIVMSG {channel} :I keep order")
    got = await viewer.expect_message("PRIVMSG", "I keep order")
    assert got.tags["badges"] == "moderator/1" and got.tags["mod"] == "1" and got.tags["user-type"] == "mod"
    userstate = parse(await moderator.expect(r";id=.* USERSTATE #castle$"))
    assert userstate.tags["mod"] == "1"

    await broadcaster.send(f"PRIVMSG {channel} :/vip castle_fan")
    assert (await notice(broadcaster, channel)).tags["msg-id"] == "vip_success"
    await viewer.send(f"PRIVMSG {channel} :vip here")
    assert (await target.expect_message("PRIVMSG", "vip here")).tags["badges"] == "vip/1"

    await target.send(f"PRIVMSG {channel} :/mods")
    listed = await notice(target, channel)
    assert listed.tags["msg-id"] == "room_mods" and listed.params[-1].endswith(": castle_mod")
    await target.send(f"PRIVMSG {channel} :/vips")
    assert (await notice(target, channel)).params[-1] == "The VIPs of this channel are: castle_fan."

    # Only the broadcaster grants roles; refusals carry Twitch's msg-ids.
    await moderator.send(f"PRIVMSG {channel} :/mod castle_troll")
    assert (await notice(moderator, channel)).tags["msg-id"] == "no_permission"
    await broadcaster.send(f"PRIVMSG {channel} :/mod castle_mod")
    assert (await notice(broadcaster, channel)).tags["msg-id"] == "bad_mod_mod"
    await broadcaster.send(f"PRIVMSG {channel} :/unvip castle_fan")
    assert (await notice(broadcaster, channel)).tags["msg-id"] == "unvip_success"
    await broadcaster.send(f"PRIVMSG {channel} :/unmod castle_mod")
    assert (await notice(broadcaster, channel)).tags["msg-id"] == "unmod_success"
    await moderator.send(f"PRIVMSG {channel} :/slow")
    assert (await notice(moderator, channel)).tags["msg-id"] == "no_permission"


async def test_ban_and_unban(cluster):
    channel = "#keep"
    broadcaster, moderator, target, viewer = await room(cluster, channel)
    await moderator.send(f"PRIVMSG {channel} :/ban keep_troll spamming")
    assert (await notice(moderator, channel)).params[-1] == "keep_troll is now banned from this channel."
    for client in (target, viewer, broadcaster):
        cleared = parse(await client.expect(r" CLEARCHAT #keep :keep_troll$"))
        assert cleared.tags["target-user-id"] == stable_id("keep_troll") and "ban-duration" not in cleared.tags

    await target.send(f"PRIVMSG {channel} :let me speak")
    assert (await notice(target, channel)).tags["msg-id"] == "msg_banned"
    await moderator.send(f"PRIVMSG {channel} :/ban keep_troll")
    assert (await notice(moderator, channel)).tags["msg-id"] == "already_banned"
    await moderator.send(f"PRIVMSG {channel} :/ban keep")
    assert (await notice(moderator, channel)).tags["msg-id"] == "bad_ban_broadcaster"
    await moderator.send(f"PRIVMSG {channel} :/ban")
    assert (await notice(moderator, channel)).tags["msg-id"] == "usage_ban"
    await moderator.send(f"PRIVMSG {channel} :/ban nobody_ever_logged_in")
    assert (await notice(moderator, channel)).params[-1] == "Invalid username: nobody_ever_logged_in"

    await moderator.send(f"PRIVMSG {channel} :/unban keep_troll")
    assert (await notice(moderator, channel)).tags["msg-id"] == "unban_success"
    await target.send(f"PRIVMSG {channel} :thank you")
    assert await viewer.wait_for_texts({"thank you"}, channel) == ["thank you"]


async def test_timeout_and_untimeout(cluster):
    channel = "#clock"
    _, moderator, target, viewer = await room(cluster, channel)
    await moderator.send(f"PRIVMSG {channel} :/timeout clock_troll 90 calm down")
    assert (await notice(moderator, channel)).params[-1] == "clock_troll has been timed out for 90 seconds."
    cleared = parse(await viewer.expect(r" CLEARCHAT #clock :clock_troll$"))
    assert cleared.tags["ban-duration"] == "90"
    await target.send(f"PRIVMSG {channel} :how long?")
    refused = await notice(target, channel)
    assert refused.tags["msg-id"] == "msg_timedout" and "for 90 more seconds" in refused.params[-1]
    await moderator.send(f"PRIVMSG {channel} :/timeout clock_troll 3w")
    assert (await notice(moderator, channel)).tags["msg-id"] == "bad_timeout_duration"
    await moderator.send(f"PRIVMSG {channel} :/untimeout clock_troll")
    assert (await notice(moderator, channel)).tags["msg-id"] == "untimeout_success"
    await target.send(f"PRIVMSG {channel} :free again")
    assert await viewer.wait_for_texts({"free again"}, channel) == ["free again"]


async def test_clear_and_delete(cluster):
    channel = "#tidy"
    _, moderator, target, viewer = await room(cluster, channel)
    await target.send(f"PRIVMSG {channel} :something regrettable")
    sent = await viewer.expect_message("PRIVMSG", "something regrettable")
    await moderator.send(f"PRIVMSG {channel} :/delete {sent.tags['id']}")
    assert (await notice(moderator, channel)).tags["msg-id"] == "delete_message_success"
    deleted = parse(await viewer.expect(r" CLEARMSG #tidy :"))
    assert deleted.tags["target-msg-id"] == sent.tags["id"] and deleted.tags["login"] == "tidy_troll"
    assert deleted.params[-1] == "something regrettable"
    await moderator.send(f"PRIVMSG {channel} :/delete 00000000-0000-0000-0000-000000000000")
    assert (await notice(moderator, channel)).tags["msg-id"] == "bad_delete_message_error"

    await moderator.send(f"PRIVMSG {channel} :/clear")
    for client in (viewer, target, moderator):
        assert parse(await client.expect(r" CLEARCHAT #tidy$")).tags["room-id"] == stable_id("tidy")


async def test_slow_mode(cluster):
    channel = "#snail"
    _, moderator, target, viewer = await room(cluster, channel)
    await moderator.send(f"PRIVMSG {channel} :/slow 60")
    for client in (viewer, moderator):
        changed = parse(await client.expect(r"slow=60 :tmi\.twitch\.tv ROOMSTATE #snail$"))
        assert changed.tags == {"room-id": stable_id("snail"), "slow": "60"}
        assert (await notice(client, channel)).tags["msg-id"] == "slow_on"
    assert (await notice(target, channel)).tags["msg-id"] == "slow_on"  # everyone is told
    await target.send(f"PRIVMSG {channel} :first", f"PRIVMSG {channel} :second")
    refused = await notice(target, channel)
    assert refused.tags["msg-id"] == "msg_slowmode"
    # Moderators are exempt.
    await moderator.send(f"PRIVMSG {channel} :mod one", f"PRIVMSG {channel} :mod two")
    assert await viewer.wait_for_texts({"first", "mod one", "mod two"}, channel)
    assert "second" not in viewer.texts(channel)
    await moderator.send(f"PRIVMSG {channel} :/slow 500")
    assert (await notice(moderator, channel)).tags["msg-id"] == "usage_slow_on"
    await moderator.send(f"PRIVMSG {channel} :/slowoff")
    await viewer.expect(r"@room-id=\d+;slow=0 :tmi\.twitch\.tv ROOMSTATE #snail$")
    await target.send(f"PRIVMSG {channel} :second")
    await viewer.wait_for_texts({"second"}, channel)


async def test_emote_only_mode_and_emotes_tag(cluster):
    channel = "#faces"
    _, moderator, target, viewer = await room(cluster, channel)
    await moderator.send(f"PRIVMSG {channel} :/emoteonly")
    await viewer.expect(r"@room-id=\d+;emote-only=1 :tmi\.twitch\.tv ROOMSTATE #faces$")
    assert (await notice(target, channel)).tags["msg-id"] == "emote_only_on"
    await target.send(f"PRIVMSG {channel} :words here")
    assert (await notice(target, channel)).tags["msg-id"] == "msg_emoteonly"
    await target.send(f"PRIVMSG {channel} :Kappa Kappa PogChamp")
    got = await viewer.expect_message("PRIVMSG", "Kappa Kappa PogChamp")
    assert got.tags["emotes"] == "25:0-4,6-10/88:12-19"
    assert (await notice(moderator, channel)).tags["msg-id"] == "emote_only_on"
    await moderator.send(f"PRIVMSG {channel} :/emoteonly")
    assert (await notice(moderator, channel)).tags["msg-id"] == "already_emote_only_on"
    await moderator.send(f"PRIVMSG {channel} :/emoteonlyoff")
    await viewer.expect(r"@room-id=\d+;emote-only=0 :tmi\.twitch\.tv ROOMSTATE #faces$")


async def test_unique_chat_mode(cluster):
    channel = "#echoes"
    _, moderator, target, viewer = await room(cluster, channel)
    await moderator.send(f"PRIVMSG {channel} :/uniquechat")
    await viewer.expect(r"@room-id=\d+;r9k=1 :tmi\.twitch\.tv ROOMSTATE #echoes$")
    await viewer.send(f"PRIVMSG {channel} :an original thought")
    await target.expect_message("PRIVMSG", "an original thought")
    await target.send(f"PRIVMSG {channel} :An original thought")
    assert (await notice(target, channel)).tags["msg-id"] == "msg_r9k"
    await moderator.send(f"PRIVMSG {channel} :/uniquechatoff")
    assert (await notice(viewer, channel)).tags["msg-id"] == "r9k_on"
    assert (await notice(viewer, channel)).tags["msg-id"] == "r9k_off"


async def test_subscribers_only_mode(cluster):
    channel = "#club"
    _, moderator, target, viewer = await room(cluster, channel)
    irc_port, _ = cluster.edge_addresses(1)
    member = await IrcClient.tcp(irc_port, "member")
    await member.register("club_member", cluster.token("club_member", subscriber=True))
    await member.join(channel)
    await moderator.send(f"PRIVMSG {channel} :/subscribers")
    await viewer.expect(r"@room-id=\d+;subs-only=1 :tmi\.twitch\.tv ROOMSTATE #club$")
    assert (await notice(target, channel)).tags["msg-id"] == "subs_on"
    await target.send(f"PRIVMSG {channel} :can I talk?")
    assert (await notice(target, channel)).tags["msg-id"] == "msg_subsonly"
    await member.send(f"PRIVMSG {channel} :members only")
    got = await viewer.expect_message("PRIVMSG", "members only")
    assert got.tags["subscriber"] == "1" and got.tags["badges"] == "subscriber/0"
    await moderator.send(f"PRIVMSG {channel} :/subscribersoff")
    assert (await notice(viewer, channel)).tags["msg-id"] == "subs_off"
    await member.close()


async def test_color_me_and_unknown_commands(cluster):
    channel = "#paint"
    _, moderator, target, viewer = await room(cluster, channel, mod=False)
    await target.send(f"PRIVMSG {channel} :/color HotPink")
    assert (await notice(target, channel)).tags["msg-id"] == "color_changed"
    await target.send(f"PRIVMSG {channel} :/me waves")
    got = await viewer.expect_message("PRIVMSG", "\x01ACTION waves\x01")
    assert got.tags["color"] == "#FF69B4"
    await target.send(f"PRIVMSG {channel} :/color mauve")
    assert (await notice(target, channel)).tags["msg-id"] == "usage_color"
    await target.send(f"PRIVMSG {channel} :/frobnicate")
    assert (await notice(target, channel)).params[-1] == "Unrecognized command: /frobnicate"
    await target.send(f"PRIVMSG {channel} :/ban paint_fan")
    assert (await notice(target, channel)).tags["msg-id"] == "no_permission"


async def test_moderators_may_send_100_messages_per_30s(cluster):
    channel = "#chatty"
    broadcaster, moderator, _, viewer = await room(cluster, channel)
    await moderator.send(*(f"PRIVMSG {channel} :mod line {n}" for n in range(40)))
    await viewer.wait_for_texts({f"mod line {n}" for n in range(40)}, channel)
    assert not moderator.received("NOTICE")[1:]  # only /mod's answer went to the broadcaster


async def test_http_moderation_api(cluster):
    channel = "#desk"
    broadcaster, moderator, target, viewer = await room(cluster, channel)
    url = f"{cluster.clue_urls[0]}/api/v1/channels/desk"
    async with aiohttp.ClientSession() as http:
        bot = {"Authorization": f"Bearer {cluster.token('desk_mod')}"}
        async with http.post(f"{url}/commands", json={"command": "/timeout desk_troll 45"}, headers=bot) as r:
            assert r.status == 200
            assert await r.json() == {"ok": True, "msg_id": "timeout_success",
                                      "text": "desk_troll has been timed out for 45 seconds."}
        assert parse(await viewer.expect(r" CLEARCHAT #desk :desk_troll$")).tags["ban-duration"] == "45"

        nobody = {"Authorization": f"Bearer {cluster.token('desk_fan')}"}
        async with http.post(f"{url}/commands", json={"command": "/slow 10"}, headers=nobody) as r:
            assert r.status == 403 and (await r.json())["msg_id"] == "no_permission"
        async with http.post(f"{url}/commands", json={"command": "/slow 10"}, headers={"Authorization": "Bearer x"}) as r:
            assert r.status == 401 and (await r.json())["error"] == "Unauthorized"
        async with http.post(f"{url}/commands", json={"command": "hello"}, headers=bot) as r:
            assert r.status == 400 and "error" in await r.json()
        async with http.get(url, headers=nobody) as r:
            state = await r.json()
            assert state["mods"] == ["desk_mod"] and state["broadcaster"] == "desk"
            assert state["room_state"]["slow"] == "0"


async def test_joins_and_logins_are_limited_to_20_per_10s_per_user(cluster):
    hopper = await cluster.client("hopper", edge=0)
    await hopper.send(f"JOIN {','.join(f'#hop{n}' for n in range(21))}")
    refused = await notice(hopper, r"#hop\d+")
    assert refused.tags["msg-id"] == "msg_join_ratelimit"

    def joined() -> int:
        return sum(" 366 hopper #hop" in line for line in hopper.lines)

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while joined() < 20:
        assert loop.time() < deadline, f"only {joined()} joins answered"
        await asyncio.sleep(0.05)
    assert joined() == 20 and len(hopper.received("NOTICE")) == 1

    irc_port, _ = cluster.edge_addresses(1)
    token = cluster.token("relogger")
    failures = 0
    for _ in range(21):  # one login above the limit (the first `client` above was another user)
        client = await IrcClient.tcp(irc_port, "relogger")
        await client.send(f"PASS oauth:{token}", "NICK relogger")
        line = await client.expect(r" 376 | NOTICE \* ")
        failures += "Login authentication failed" in line
        await client.close()
    assert failures == 1


async def test_strict_mode_answers_irc_slash_commands_as_twitch_does_since_2023(tmp_path):
    # TWITCH_STRICT=on: moderation lives in Helix only; IRC chat commands are unrecognized, /me still acts.
    async with running_cluster(tmp_path, edges=1, env={"TWITCH_STRICT": "on"}) as strict:
        owner = await strict.client("strictroom", channels=("#strictroom",))
        troll = await strict.client("stricttroll", channels=("#strictroom",))
        for command in ("/timeout stricttroll 10", "/ban stricttroll", "/slow 30", "/mod stricttroll"):
            await owner.send(f"PRIVMSG #strictroom :{command}")
            refused = await notice(owner, "#strictroom")
            assert refused.tags["msg-id"] == "unrecognized_cmd"
            assert refused.params[-1] == f"Unrecognized command: {command.split()[0]}"
        await troll.send("PRIVMSG #strictroom :still here")  # nothing above took effect …
        await owner.expect_message("PRIVMSG", "still here")
        await owner.send("PRIVMSG #strictroom :/me waves")  # … and /me is chat, not a command
        assert (await troll.expect_message("PRIVMSG", "\x01ACTION waves\x01")).params[0] == "#strictroom"
        assert not troll.received("CLEARCHAT") and not troll.received("ROOMSTATE")[1:]
