"""Test events on demand: clue.usernotice's builders (Twitch's tags, msg-params,
system-msg and EventSub objects per kind), the trigger endpoint's checks, and
`chatd trigger` against a cluster seen by tmi.js, plain IRC and EventSub."""
from __future__ import annotations

import asyncio
import json
import sys
import time

import aiohttp
import pytest
from helix_support import (
    FIXTURES,
    ROOT,
    Api,
    client_add,
    fixture,
    same_shape,
    user_token,
)
from support import NodeClient, running_cluster

from clue import usernotice as un
from clue.channels import ChannelState
from clue.triggers import TriggerRequest, options_for
from common.internal_http import ApiError
from common.irc import Message, parse
from common.tokens import stable_id

STATE = ChannelState(name="#stream", room_id="1001", owner_display_name="Stream")
USER = ("2002", "viewer", "Viewer")
RECIPIENT = ("3003", "lucky", "Lucky")
GIFTER = ("4004", "giver", "Giver")
EMOTES = {"Kappa": "25"}
COMMON_TAGS = {"badge-info", "badges", "color", "display-name", "emotes", "flags", "id", "login", "mod", "msg-id",
               "room-id", "subscriber", "system-msg", "tmi-sent-ts", "user-id", "user-type"}
WAIT = 15.0


def built(kind: str, **options) -> list:
    notice = un.Notice(server="tmi.twitch.tv", state=STATE, user=USER, message_id="m-1", sent_ms=1_700_000_000_000,
                       emotes=EMOTES)
    return un.build(kind, notice, un.Options(recipient=RECIPIENT, gifter=GIFTER, **options))


def irc(event) -> Message:
    return parse(f"@{event.tags} {event.line}")


def params_of(message: Message) -> dict[str, str]:
    return {key[len("msg-param-"):]: value for key, value in message.tags.items() if key.startswith("msg-param-")}


def documented_notification(notice_type: str) -> dict:
    """Twitch's channel.chat.notification example (the sub or the raid one); for
    other notice types its detail object is left out, checked key by key instead."""
    example = "example_raid" if notice_type == "raid" else "example"
    whole = json.loads((FIXTURES / "eventsub_notification_channel_chat_notification.json").read_text())[example]
    if notice_type not in ("sub", "raid"):
        whole["payload"]["event"]["sub"] = None
    return whole


def notified(event) -> dict[str, dict]:
    return {notify.type: json.loads(bytes(notify.event)) for notify in event.notify}


PLAN = {"sub-plan": "1000", "sub-plan-name": "Channel Subscription (stream)"}
# kind, options → msg-id, msg-params, system-msg
USERNOTICES = [
    ("sub", {}, "sub", {"cumulative-months": "1", "months": "0", "multimonth-duration": "1",
                        "multimonth-tenure": "0", "should-share-streak": "0", "streak-months": "0",
                        "was-gifted": "false", **PLAN}, "Viewer subscribed at Tier 1."),
    ("sub", {"tier": "Prime"}, "sub", {"cumulative-months": "1", "months": "0", "multimonth-duration": "1",
                                       "multimonth-tenure": "0", "should-share-streak": "0", "streak-months": "0",
                                       "was-gifted": "false", **PLAN, "sub-plan": "Prime"},
     "Viewer subscribed with Prime."),
    ("resub", {"months": 6, "tier": "2000"}, "resub",
     {"cumulative-months": "6", "months": "0", "multimonth-duration": "1", "multimonth-tenure": "0",
      "should-share-streak": "1", "streak-months": "6", "was-gifted": "false", **PLAN, "sub-plan": "2000"},
     "Viewer subscribed at Tier 2. They've subscribed for 6 months, currently on a 6 month streak!"),
    ("subgift", {"tier": "3000"}, "subgift",
     {"gift-months": "1", "months": "1", "recipient-display-name": "Lucky", "recipient-id": "3003",
      "recipient-user-name": "lucky", "sender-count": "0", **PLAN, "sub-plan": "3000"},
     "Viewer gifted a Tier 3 sub to Lucky!"),
    ("submysterygift", {"count": 5}, "submysterygift",
     {"community-gift-id": "*", "mass-gift-count": "5", "sender-count": "0", "sub-plan": "1000"},
     "Viewer is gifting 5 Tier 1 Subs to Stream's community!"),
    ("submysterygift", {"count": 1}, "submysterygift",
     {"community-gift-id": "*", "mass-gift-count": "1", "sender-count": "0", "sub-plan": "1000"},
     "Viewer is gifting 1 Tier 1 Sub to Stream's community!"),
    ("giftpaidupgrade", {}, "giftpaidupgrade",
     {"promo-gift-total": "0", "promo-name": "", "sender-login": "giver", "sender-name": "Giver"},
     "Viewer is continuing the Gift Sub they got from Giver!"),
    ("raid", {"viewers": 42}, "raid",
     {"displayName": "Viewer", "login": "viewer", "profileImageURL": "", "viewerCount": "42"},
     "42 raiders from Viewer have joined!"),
    ("announcement", {"color": "blue", "message": "hello"}, "announcement", {"color": "BLUE"}, ""),
    ("bitsbadgetier", {"bits": 10000}, "bitsbadgetier", {"threshold": "10000"}, "bits badge tier notification"),
    ("viewermilestone", {"count": 7}, "viewermilestone",
     {"category": "watch-streak", "copoReward": "450", "id": "*", "value": "7"},
     "Viewer watched 7 consecutive streams and sparked a watch streak!"),
]


@pytest.mark.parametrize(("kind", "options", "msg_id", "params", "system_msg"), USERNOTICES,
                         ids=[f"{row[0]}-{i}" for i, row in enumerate(USERNOTICES)])
def test_usernotice_has_twitchs_tags_msg_params_and_system_msg(kind, options, msg_id, params, system_msg):
    message = irc(built(kind, **options)[0])
    assert message.command == "USERNOTICE" and message.source == "tmi.twitch.tv"
    assert message.params[0] == "#stream"
    assert message.tags["msg-id"] == msg_id and message.tags["system-msg"] == system_msg
    assert set(message.tags) == COMMON_TAGS | {f"msg-param-{name}" for name in params}
    got = params_of(message)
    assert {k: v for k, v in got.items() if params[k] != "*"} == {k: v for k, v in params.items() if v != "*"}
    assert all(got[k] for k, v in params.items() if v == "*")
    assert (message.tags["login"], message.tags["user-id"], message.tags["room-id"]) == ("viewer", "2002", "1001")


def test_tags_are_escaped_once_and_the_line_carries_a_message_only_when_there_is_one():
    [plain] = built("sub")
    assert "system-msg=Viewer\\ssubscribed\\sat\\sTier\\s1." in plain.tags
    assert plain.line == ":tmi.twitch.tv USERNOTICE #stream"
    [said] = built("resub", message="still here Kappa")
    assert said.line == ":tmi.twitch.tv USERNOTICE #stream :still here Kappa"
    assert irc(said).tags["emotes"] == "25:11-15" and said.text == "still here Kappa"
    assert (said.id, said.login, said.user_id, said.sent_ms) == ("m-1", "viewer", "2002", 1_700_000_000_000)


# kind → the EventSub events it also is: type → (notice_type, Twitch's detail object) or checks on the event
EVENTSUB = [
    ("sub", {}, {"channel.chat.notification": ("sub", {"sub_tier": "1000", "is_prime": False, "duration_months": 1}),
                 "channel.subscribe": {"user_login": "viewer", "tier": "1000", "is_gift": False}}),
    ("sub", {"tier": "Prime"}, {
        "channel.chat.notification": ("sub", {"sub_tier": "1000", "is_prime": True, "duration_months": 1}),
        "channel.subscribe": {"user_login": "viewer", "tier": "1000", "is_gift": False}}),
    ("resub", {"months": 6}, {"channel.chat.notification": ("resub", {
        "cumulative_months": 6, "duration_months": 1, "streak_months": 6, "sub_tier": "1000", "is_prime": False,
        "is_gift": False, "gifter_is_anonymous": None, "gifter_user_id": None, "gifter_user_name": None,
        "gifter_user_login": None})}),
    ("subgift", {}, {
        "channel.chat.notification": ("sub_gift", {
            "duration_months": 1, "cumulative_total": None, "recipient_user_id": "3003",
            "recipient_user_name": "Lucky", "recipient_user_login": "lucky", "sub_tier": "1000",
            "community_gift_id": None}),
        "channel.subscribe": {"user_login": "lucky", "user_id": "3003", "tier": "1000", "is_gift": True}}),
    ("submysterygift", {"count": 3}, {"channel.chat.notification": ("community_sub_gift", {
        "id": "*", "total": 3, "sub_tier": "1000", "cumulative_total": None})}),
    ("giftpaidupgrade", {}, {"channel.chat.notification": ("gift_paid_upgrade", {
        "gifter_is_anonymous": False, "gifter_user_id": "4004", "gifter_user_name": "Giver",
        "gifter_user_login": "giver"})}),
    ("raid", {"viewers": 42}, {
        "channel.chat.notification": ("raid", {"user_id": "2002", "user_name": "Viewer", "user_login": "viewer",
                                               "viewer_count": 42, "profile_image_url": ""}),
        "channel.raid": {"from_broadcaster_user_login": "viewer", "to_broadcaster_user_id": "1001", "viewers": 42}}),
    ("announcement", {"color": "green", "message": "hi"}, {
        "channel.chat.notification": ("announcement", {"color": "GREEN"})}),
    ("bitsbadgetier", {"bits": 1000}, {"channel.chat.notification": ("bits_badge_tier", {"tier": 1000})}),
    ("viewermilestone", {}, {}),
    ("cheer", {"bits": 250, "message": "gg"}, {
        "channel.chat.message": {"cheer": {"bits": 250}, "message_type": "text", "chatter_user_login": "viewer"},
        "channel.cheer": {"bits": 250, "message": "Cheer250 gg", "is_anonymous": False, "user_id": "2002"}}),
]


@pytest.mark.parametrize(("kind", "options", "expected"), EVENTSUB,
                         ids=[f"{row[0]}-{i}" for i, row in enumerate(EVENTSUB)])
def test_each_kind_is_the_matching_eventsub_events(kind, options, expected):
    events = notified(built(kind, **options)[0])
    assert list(events) == list(expected)
    for type_, wanted in expected.items():
        event = events[type_]
        if type_ == "channel.chat.notification":
            notice_type, detail = wanted
            assert event["notice_type"] == notice_type
            assert set(event[notice_type]) == set(detail)
            assert {k: v for k, v in event[notice_type].items() if detail[k] != "*"} == {
                k: v for k, v in detail.items() if v != "*"}
            same_shape(event, documented_notification(notice_type)["payload"]["event"], kind)
            assert (event["broadcaster_user_id"], event["chatter_user_login"]) == ("1001", "viewer")
            # bitsbadgetier's IRC system-msg is a fixed text; chat shows (and EventSub says) the sentence.
            shown = "Viewer just earned a new 1K Bits badge!" if kind == "bitsbadgetier" else \
                irc(built(kind, **options)[0]).tags["system-msg"]
            assert event["system_message"] == shown
        else:
            assert {k: event[k] for k in wanted} == wanted
            name = type_.replace(".", "_")
            same_shape(event, fixture(f"eventsub_notification_{name}")["payload"]["event"], type_)


def test_a_mystery_gift_is_followed_by_each_gift_naming_it():
    announced, *gifts = built("submysterygift", count=3, tier="2000")
    gift_id = irc(announced).tags["msg-param-community-gift-id"]
    assert [irc(gift).tags["msg-id"] for gift in gifts] == ["subgift"] * 3
    assert [params_of(irc(gift))["recipient-user-name"] for gift in gifts] == ["testgiftee1", "testgiftee2",
                                                                              "testgiftee3"]
    assert {params_of(irc(gift))["community-gift-id"] for gift in gifts} == {gift_id}
    assert {params_of(irc(gift))["sub-plan"] for gift in gifts} == {"2000"}
    assert len({event.id for event in (announced, *gifts)}) == 4  # each its own message id
    assert [event.id for event in built("submysterygift", count=3)] == [announced.id] + [g.id for g in gifts]
    for gift in gifts:
        notes = notified(gift)
        assert notes["channel.chat.notification"]["sub_gift"]["community_gift_id"] == gift_id
        assert notes["channel.subscribe"]["is_gift"] and notes["channel.subscribe"]["user_login"].startswith(
            "testgiftee")
        same_shape(notes["channel.chat.notification"], documented_notification("sub_gift")["payload"]["event"],
                   "sub_gift")


def test_a_raid_also_tells_the_raiders_own_channel_on_eventsub_only():
    seen, source = built("raid", viewers=7)
    assert seen.channel == "#stream" and source.channel == "#viewer"
    assert not source.line and not source.tags and source.id and source.id != seen.id
    assert notified(source) == {"channel.raid": notified(seen)["channel.raid"]}


def test_a_cheer_is_a_privmsg_with_bits_right_after_the_badges_and_a_cheer_word():
    [event] = built("cheer", bits=100, message="nice Kappa")
    message = irc(event)
    assert (message.command, message.source) == ("PRIVMSG", "viewer!viewer@viewer.tmi.twitch.tv")
    assert message.params == ["#stream", "Cheer100 nice Kappa"]
    assert list(message.tags)[:3] == ["badge-info", "badges", "bits"] and message.tags["bits"] == "100"
    assert message.tags["emotes"] == "25:14-18" and "msg-id" not in message.tags
    fragments = notified(event)["channel.chat.message"]["message"]["fragments"]
    assert fragments[0] == {"type": "cheermote", "text": "Cheer100", "cheermote": {"prefix": "cheer", "bits": 100,
                                                                                   "tier": 100},
                            "emote": None, "mention": None}


@pytest.mark.parametrize(("body", "status", "says"), [
    ({"kind": "follow"}, 400, "unknown kind 'follow'"),
    ({"kind": "sub", "tier": "4000"}, 400, "tier must be"),
    ({"kind": "subgift", "tier": "prime"}, 400, "cannot be Prime"),
    ({"kind": "raid", "user": "stream"}, 400, "cannot raid itself"),
    ({"kind": "subgift", "user": "a", "recipient": "a"}, 400, "someone else"),
    ({"kind": "raid", "message": "hi"}, 400, "carries no message"),
    ({"kind": "cheer", "message": "x" * 495}, 400, "at most 491 characters"),
    ({"kind": "announcement", "color": "red"}, 400, "color must be"),
    ({"kind": "sub", "user": "Not A Login"}, 400, "user must be a login"),
])
def test_trigger_requests_are_checked_before_anything_is_built(body, status, says):
    with pytest.raises(ApiError) as refused:
        options_for(TriggerRequest(**body), "#stream")
    assert refused.value.status == status and says in refused.value.message


def test_a_valid_request_keeps_its_options_and_prime_is_spelled_as_twitch_does():
    options = options_for(TriggerRequest(kind="sub", tier="PRIME", message="hi"), "#stream")
    assert (options.tier, options.message) == ("Prime", "hi")


# ---- the whole cluster

async def trigger(cluster, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chatd.cli", "trigger", *args, "--data-dir", str(cluster.data_dir), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), WAIT)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def notifications(ws, count: int) -> list[dict]:
    """The next `count` notifications (keepalives skipped), within one deadline."""
    got: list[dict] = []
    deadline = time.monotonic() + WAIT
    while len(got) < count:
        left = deadline - time.monotonic()
        assert left > 0, f"waited {WAIT}s for {count} notifications, got {[g['metadata'] for g in got]}"
        message = json.loads((await ws.receive(timeout=left)).data)
        if message["metadata"]["message_type"] == "notification":
            got.append(message)
    return got


async def test_chatd_trigger_reaches_tmi_js_irc_on_the_other_edge_and_eventsub_in_one_order(tmp_path):
    async with running_cluster(tmp_path, edges=2) as cluster, aiohttp.ClientSession() as http:
        client_id, secret = client_add(cluster, "triggerbot")
        _, ws_port = cluster.edge_addresses(0)
        owner = await cluster.client("trigroom", edge=1, channels=("#trigroom",))  # plain IRC, the other edge
        raider = await cluster.client("bigraider", edge=1)  # registered: its id comes from its login
        room_id = owner.received("ROOMSTATE")[0].tags["room-id"]
        raider_id = raider.received("GLOBALUSERSTATE")[0].tags["user-id"]
        tmi = await NodeClient.start("tmi_client.js", str(ws_port), "tmiviewer", cluster.token("tmiviewer"),
                                     "#trigroom")
        api = Api(http, f"http://127.0.0.1:{ws_port}", client_id)
        token = (await user_token(api, secret, room_id, "user:read:chat channel:read:subscriptions bits:read"
                                  ))["access_token"]
        try:
            await tmi.expect(lambda e: e["event"] == "joined")
            async with http.ws_connect(f"ws://127.0.0.1:{ws_port}/ws") as ws:
                session_id = json.loads((await ws.receive(timeout=WAIT)).data)["payload"]["session"]["id"]
                chat = {"broadcaster_user_id": room_id, "user_id": room_id}
                for kind, condition in (("channel.raid", {"from_broadcaster_user_id": raider_id}),
                                        ("channel.raid", {"to_broadcaster_user_id": room_id}),
                                        ("channel.subscribe", {"broadcaster_user_id": room_id}),
                                        ("channel.cheer", {"broadcaster_user_id": room_id}),
                                        ("channel.chat.notification", chat), ("channel.chat.message", chat)):
                    status, body, _ = await api.call("POST", "/eventsub/subscriptions", token, json={
                        "type": kind, "version": "1", "condition": condition,
                        "transport": {"method": "websocket", "session_id": session_id}})
                    assert status == 202, body
                # Barrier: the session hears the channel once its last subscription delivers chat.
                await owner.send("PRIVMSG #trigroom :subscriptions are live")
                [ready] = await notifications(ws, 1)
                assert ready["payload"]["event"]["message"]["text"] == "subscriptions are live"

                for args in (("sub",), ("resub", "--months", "6", "--message", "six months Kappa"),
                             ("subgift", "--recipient", "luckyone", "--tier", "2000"),
                             ("raid", "--user", "bigraider", "--viewers", "42"),
                             ("cheer", "--bits", "250", "--message", "take my bits")):
                    code, out, err = await trigger(cluster, args[0], "#trigroom", *args[1:])
                    assert code == 0 and not err, err
                    assert out.startswith(f"sent {args[0]} to #trigroom: ") and out.count("\n") == 1, out
                # 2 (sub) + 1 (resub) + 2 (subgift) + 3 (raid, both channel.raid) + 2 (cheer)
                got = await notifications(ws, 10)

            # tmi.js fires its own events with Twitch's arguments.
            sub = await tmi.expect(lambda e: e["event"] == "subscription")
            assert sub["username"] == "testuser" and sub["methods"] == {"prime": False, "plan": "1000",
                                                                        "planName": "Channel Subscription (trigroom)"}
            resub = await tmi.expect(lambda e: e["event"] == "resub")
            assert (resub["username"], resub["months"], resub["message"]) == ("testuser", 6, "six months Kappa")
            gift = await tmi.expect(lambda e: e["event"] == "subgift")
            assert (gift["username"], gift["recipient"], gift["methods"]["plan"]) == ("testuser", "luckyone", "2000")
            raided = await tmi.expect(lambda e: e["event"] == "raided")
            assert (raided["username"], raided["viewers"]) == ("bigraider", 42)
            cheer = await tmi.expect(lambda e: e["event"] == "cheer")
            assert (cheer["user"], cheer["bits"], cheer["message"]) == ("testuser", "250", "Cheer250 take my bits")
            tmi_order = [event["id"] for event in (sub, resub, gift, raided, cheer)]

            # Plain IRC on the other edge: the same lines, in the same order.
            await owner.wait_for(lambda lines: any(" PRIVMSG #trigroom :Cheer250" in line for line in lines))
            seen = [parse(line) for line in owner.lines if " USERNOTICE #trigroom" in line or "bits=" in line]
            assert [m.tags.get("msg-id", "bits=" + m.tags.get("bits", "")) for m in seen] == [
                "sub", "resub", "subgift", "raid", "bits=250"]
            assert [m.tags["id"] for m in seen] == tmi_order
            assert seen[0].tags["user-id"] == stable_id("testuser")  # made up: its id derives from the login
            assert seen[3].tags["user-id"] == raider_id and seen[3].params == ["#trigroom"]

            by_type: dict[str, list[dict]] = {}
            for message in got:
                by_type.setdefault(message["metadata"]["subscription_type"], []).append(message)
            chat_notes = by_type["channel.chat.notification"]
            assert [n["payload"]["event"]["notice_type"] for n in chat_notes] == ["sub", "resub", "sub_gift", "raid"]
            assert [n["payload"]["event"]["message_id"] for n in chat_notes] == tmi_order[:4]
            for note in chat_notes:
                notice_type = note["payload"]["event"]["notice_type"]
                same_shape(note, documented_notification(notice_type), notice_type)
            sub_note, resub_note, gift_note, raid_note = (n["payload"]["event"] for n in chat_notes)
            assert sub_note["system_message"] == "testuser subscribed at Tier 1."
            assert sub_note["sub"] == {"sub_tier": "1000", "is_prime": False, "duration_months": 1}
            assert resub_note["resub"]["cumulative_months"] == 6 and resub_note["message"]["text"] == \
                "six months Kappa"
            assert gift_note["sub_gift"]["recipient_user_login"] == "luckyone"
            assert raid_note["raid"]["user_id"] == raider_id and raid_note["raid"]["viewer_count"] == 42
            assert raid_note["broadcaster_user_id"] == room_id

            subscribes = [n["payload"]["event"] for n in by_type["channel.subscribe"]]
            for note in by_type["channel.subscribe"]:
                same_shape(note, fixture("eventsub_notification_channel_subscribe"), "channel.subscribe")
            assert [(s["user_login"], s["tier"], s["is_gift"]) for s in subscribes] == [
                ("testuser", "1000", False), ("luckyone", "2000", True)]
            raids = by_type["channel.raid"]
            # One per subscription: by the raided channel (to_…) and by the raider's (from_…).
            assert sorted(key for r in raids for key in r["payload"]["subscription"]["condition"]) == [
                "from_broadcaster_user_id", "to_broadcaster_user_id"]
            for note in raids:
                same_shape(note["payload"]["event"], fixture("eventsub_notification_channel_raid")["payload"]["event"],
                           "channel.raid")
                event = note["payload"]["event"]
                assert (event["from_broadcaster_user_id"], event["to_broadcaster_user_id"], event["viewers"]) == (
                    raider_id, room_id, 42)
            [cheered] = by_type["channel.cheer"]
            same_shape(cheered, fixture("eventsub_notification_channel_cheer"), "channel.cheer")
            assert (cheered["payload"]["event"]["bits"], cheered["payload"]["event"]["message"]) == (
                250, "Cheer250 take my bits")
            [cheer_chat] = by_type["channel.chat.message"]
            assert cheer_chat["payload"]["event"]["cheer"] == {"bits": 250}
        finally:
            await tmi.stop()


async def test_tmi_js_hears_a_mystery_gift_and_then_each_of_its_gifts(tmp_path):
    async with running_cluster(tmp_path) as cluster:
        owner = await cluster.client("giftroom", channels=("#giftroom",))
        _, ws_port = cluster.edge_addresses(0)
        tmi = await NodeClient.start("tmi_client.js", str(ws_port), "giftviewer", cluster.token("giftviewer"),
                                     "#giftroom")
        try:
            await tmi.expect(lambda e: e["event"] == "joined")
            code, out, err = await trigger(cluster, "submysterygift", "#giftroom", "--count", "2", "--tier", "3000")
            assert code == 0 and not err and out.startswith("sent submysterygift to #giftroom: "), err
            mystery = await tmi.expect(lambda e: e["event"] == "submysterygift")
            assert (mystery["username"], mystery["count"], mystery["methods"]["plan"]) == ("testuser", 2, "3000")
            await tmi.expect(lambda e: e["event"] == "subgift" and e["recipient"] == "testgiftee2")
            gifts = [event for event in tmi.events if event["event"] == "subgift"]
            assert [(g["username"], g["recipient"], g["methods"]["plan"]) for g in gifts] == [
                ("testuser", "testgiftee1", "3000"), ("testuser", "testgiftee2", "3000")]
            # Plain IRC: the announcement first, then its gifts, all naming one community gift.
            await owner.wait_for(lambda lines: sum(" USERNOTICE #giftroom" in line for line in lines) == 3)
            seen = [parse(line) for line in owner.lines if " USERNOTICE #giftroom" in line]
            assert [m.tags["msg-id"] for m in seen] == ["submysterygift", "subgift", "subgift"]
            assert len({m.tags["msg-param-community-gift-id"] for m in seen}) == 1
            assert [m.tags["id"] for m in seen] == [mystery["id"], *(g["id"] for g in gifts)]
        finally:
            await tmi.stop()


async def test_only_the_broadcaster_may_trigger_and_bad_requests_get_json_errors(tmp_path):
    async with running_cluster(tmp_path) as cluster, aiohttp.ClientSession() as http:
        _, ws_port = cluster.edge_addresses(0)
        url = f"http://127.0.0.1:{ws_port}/api/v1/channels/errroom/trigger"

        async def post(token: str | None, body: dict) -> tuple[int, dict]:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with http.post(url, json=body, headers=headers) as response:
                return response.status, await response.json()

        status, body = await post(cluster.token("notowner"), {"kind": "sub"})
        assert (status, body["error"], body["status"]) == (403, "Forbidden", 403)
        assert body["message"] == "only the broadcaster may trigger test events in #errroom"
        status, body = await post(cluster.token("errroom"), {"kind": "follow"})
        assert (status, body["error"]) == (400, "Bad Request") and "unknown kind 'follow'" in body["message"]
        status, body = await post(None, {"kind": "sub"})
        assert status == 401 and set(body) == {"error", "status", "message"}

        code, out, err = await trigger(cluster, "follow", "#errroom")
        assert (code, out) == (2, "") and err.count("\n") == 1 and err.startswith("chatd trigger: unknown kind")
        code, out, err = await trigger(cluster, "subgift", "#errroom", "--tier", "prime")
        assert (code, out, err) == (2, "", "chatd trigger: a subgift cannot be Prime\n")
