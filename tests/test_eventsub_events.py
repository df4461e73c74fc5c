"""EventSub `event` objects against Twitch's documented examples
(tests/fixtures/twitch/eventsub_notification_*.json), field by field."""
from __future__ import annotations

import datetime
import itertools
import json
from pathlib import Path

import msgspec
import pytest

from clue import eventsub_events as es
from clue.emotes import DEFAULT_EMOTES, parse_emote_set
from common import wire

FIXTURES = Path(__file__).parent / "fixtures" / "twitch"
EMOTES = parse_emote_set(DEFAULT_EMOTES)
FRAGMENT_KEYS = {"type", "text", "cheermote", "emote", "mention"}


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"eventsub_notification_{name}.json").read_text())


def documented(name: str, example: str = "example") -> dict:
    """The fixture's `payload.event`."""
    return fixture(name)[example]["payload"]["event"]


def who(event: dict, role: str) -> es.Person:
    prefix = "" if role == "user" else f"{role}_"
    return event[f"{prefix}user_id"], event[f"{prefix}user_login"], event[f"{prefix}user_name"]


def nanos(stamp: str) -> int:
    """An RFC 3339 UTC time with any number of fraction digits, as epoch nanoseconds."""
    whole, _, fraction = stamp.removesuffix("Z").partition(".")
    start = datetime.datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.UTC)
    return int(start.timestamp()) * 1_000_000_000 + int(fraction.ljust(9, "0"))


# ---- exactly the documented event


EXACT = {
    "channel_chat_clear": lambda ev: es.chat_clear(who(ev, "broadcaster")),
    "channel_chat_clear_user_messages": lambda ev: es.chat_clear_user_messages(
        who(ev, "broadcaster"), who(ev, "target")),
    "channel_chat_message_delete": lambda ev: es.chat_message_delete(
        who(ev, "broadcaster"), who(ev, "target"), ev["message_id"]),
    # The example: emote-only on, slow 10 s, followers-only, subscribers-only and unique chat off.
    "channel_chat_settings_update": lambda ev: es.chat_settings_update(
        who(ev, "broadcaster"), {"slow": 10, "emote_only": 1, "subs_only": 0, "r9k": 0, "followers_only": -1}),
    "channel_unban": lambda ev: es.unban(who(ev, "broadcaster"), who(ev, "user"), who(ev, "moderator")),
    "channel_moderator_add": lambda ev: es.moderator_add(who(ev, "broadcaster"), who(ev, "user")),
    "channel_moderator_remove": lambda ev: es.moderator_remove(who(ev, "broadcaster"), who(ev, "user")),
    "user_whisper_message": lambda ev: es.whisper(
        who(ev, "from"), who(ev, "to"), ev["whisper_id"], ev["whisper"]["text"]),
    "channel_subscribe": lambda ev: es.subscribe(who(ev, "broadcaster"), who(ev, "user"), ev["tier"], ev["is_gift"]),
    "channel_raid": lambda ev: es.raid(who(ev, "from_broadcaster"), who(ev, "to_broadcaster"), ev["viewers"]),
    "channel_cheer": lambda ev: es.cheer(who(ev, "broadcaster"), who(ev, "user"), ev["message"], ev["bits"]),
}


@pytest.mark.parametrize("name", sorted(EXACT))
def test_builder_gives_the_documented_event_exactly(name):
    expected = documented(name)
    assert EXACT[name](expected) == expected


# ---- the documented event, where chatd cannot or does not match every value


def test_chat_message_matches_the_docs_but_badge_info_and_adds_the_animation_id():
    expected = documented("channel_chat_message")
    built = es.chat_message(
        who(expected, "broadcaster"), who(expected, "chatter"), expected["message_id"], expected["message"]["text"],
        emotes=EMOTES, color=expected["color"], badges="moderator/1,subscriber/12,sub-gifter/1")
    # channel_points_animation_id: in Twitch's field table and in real payloads
    # (always there, null unless a Power-up), missing from the docs example.
    assert built.pop("channel_points_animation_id") is None
    # Badge `info` comes from IRC's badge-info tag (subscriber months: the
    # example's "16"); chatd's badge-info is always empty, so info is "".
    assert [{**badge, "info": ""} for badge in expected["badges"]] == built["badges"]
    assert all(type(badge["info"]) is str for badge in built["badges"])
    assert {**built, "badges": expected["badges"]} == expected


@pytest.mark.parametrize("example", ["example", "example_raid"])
def test_chat_notification_matches_the_docs_plus_null_shared_chat_keys(example):
    expected = documented("channel_chat_notification", example)
    notice = expected["notice_type"]
    built = es.chat_notification(
        who(expected, "broadcaster"), who(expected, "chatter"), notice, system_message=expected["system_message"],
        message_id=expected["message_id"], text=expected["message"]["text"], emotes=EMOTES,
        color=expected["color"], badges="", detail=expected[notice])
    # The shared_chat_* notice keys are in Twitch's current docs example (null
    # unless the notice came from another channel in a shared chat) but not in
    # the fixture's older copy; chatd has no shared chat, so they are null.
    shared = {key: built.pop(key) for key in es.SHARED_CHAT_NOTICE_KEYS}
    assert shared == dict.fromkeys(es.SHARED_CHAT_NOTICE_KEYS)
    assert built == expected


def test_ban_matches_the_docs_to_the_timestamp_digits():
    expected = documented("channel_ban")
    banned_at, ends_at = nanos(expected["banned_at"]) / 1e9, nanos(expected["ends_at"]) / 1e9
    built = es.ban(who(expected, "broadcaster"), who(expected, "user"), who(expected, "moderator"),
                   expected["reason"], banned_at, ends_at)
    # Times come from float seconds (about 0.2 µs apart at today's epoch) and
    # chatd always writes nine fraction digits: the instants agree to the
    # microsecond, the digits not (the docs' "…11.17106713Z" has eight).
    for key in ("banned_at", "ends_at"):
        assert type(built[key]) is str and built[key].endswith("Z")
        assert len(built[key].partition(".")[2]) == len("000000000Z")
        assert abs(nanos(built[key]) - nanos(expected[key])) < 1000, key
    assert {**built, "banned_at": expected["banned_at"], "ends_at": expected["ends_at"]} == expected


def test_permanent_ban_has_no_end():
    built = es.ban(("1", "b", "B"), ("2", "u", "U"), ("3", "m", "M"), "", 0.0, None)
    assert built["is_permanent"] is True and built["ends_at"] is None
    assert built["banned_at"] == "1970-01-01T00:00:00.000000000Z"
    assert built.keys() == documented("channel_ban").keys()


def test_anonymous_cheer_has_null_user_fields():
    built = es.cheer(("1337", "cooler_user", "Cooler_User"), None, "Cheer100", 100)
    assert built["is_anonymous"] is True
    assert (built["user_id"], built["user_login"], built["user_name"]) == (None, None, None)
    assert built.keys() == documented("channel_cheer").keys()


# ---- times


@pytest.mark.parametrize("epoch, stamp", [
    (0.0, "1970-01-01T00:00:00.000000000Z"),
    (0.5, "1970-01-01T00:00:00.500000000Z"),
    (1594836911.0, "2020-07-15T18:15:11.000000000Z"),
    (1594836911.25, "2020-07-15T18:15:11.250000000Z"),
    (0.9999999999, "1970-01-01T00:00:01.000000000Z"),  # rounds up into the next second
])
def test_rfc3339_writes_utc_with_nine_fraction_digits(epoch, stamp):
    assert es.rfc3339(epoch) == stamp


# ---- chat settings


OFF = {"slow": 0, "emote_only": 0, "subs_only": 0, "r9k": 0, "followers_only": -1}


@pytest.mark.parametrize("change, fields", [
    ({}, {"emote_mode": False, "follower_mode": False, "follower_mode_duration_minutes": None, "slow_mode": False,
          "slow_mode_wait_time_seconds": None, "subscriber_mode": False, "unique_chat_mode": False}),
    ({"slow": 30}, {"slow_mode": True, "slow_mode_wait_time_seconds": 30}),
    ({"followers_only": 0}, {"follower_mode": True, "follower_mode_duration_minutes": 0}),
    ({"followers_only": 10080}, {"follower_mode": True, "follower_mode_duration_minutes": 10080}),
    ({"emote_only": 1}, {"emote_mode": True}),
    ({"subs_only": 1}, {"subscriber_mode": True}),
    ({"r9k": 1}, {"unique_chat_mode": True}),
])
def test_chat_settings_map_to_twitch_fields(change, fields):
    built = es.chat_settings_update(("1", "b", "B"), {**OFF, **change})
    assert built.keys() == documented("channel_chat_settings_update").keys()
    assert {key: built[key] for key in fields} == fields
    assert es.chat_settings_update(("1", "b", "B"), change) == built  # missing settings: chatd's defaults (off)


# ---- fragments


def message(text: str, bits: int = 0) -> list[dict]:
    return es.chat_message(("1", "b", "B"), ("2", "c", "C"), "id", text, emotes=EMOTES, color="", badges="",
                           bits=bits)["message"]["fragments"]


def text(run: str) -> dict:
    return {"type": "text", "text": run, "cheermote": None, "emote": None, "mention": None}


def emote(name: str) -> dict:
    return {"type": "emote", "text": name, "cheermote": None, "mention": None,
            "emote": {"id": EMOTES[name], "emote_set_id": "0", "owner_id": "0", "format": ["static"]}}


def cheermote(word: str, prefix: str, bits: int, tier: int) -> dict:
    return {"type": "cheermote", "text": word, "emote": None, "mention": None,
            "cheermote": {"prefix": prefix, "bits": bits, "tier": tier}}


@pytest.mark.parametrize("line, bits", [
    ("", 0), (" ", 0), ("  ", 0), ("Hi chat", 0), (" leading", 0), ("trailing ", 0), ("double  space", 0),
    ("Kappa", 0), ("Kappa Kappa", 0), ("Kappa  PogChamp ", 0), ("  Kappa  ", 0), ("hi Kappa", 0),
    ("héllo wörld 🐸 Kappa ünï 日本語", 0), ("@someone Kappa", 0), ("Cheer100 Kappa  Cheer1 hi ", 250),
    ("Kappa\tKappa", 0),
])
def test_fragment_texts_join_back_to_the_message(line, bits):
    parts = message(line, bits)
    assert "".join(part["text"] for part in parts) == line
    assert all(part.keys() == FRAGMENT_KEYS and part["text"] for part in parts)
    kinds = [part["type"] for part in parts]
    assert all(a != "text" or b != "text" for a, b in itertools.pairwise(kinds)), "text runs are merged"


@pytest.mark.parametrize("line, bits, expected", [
    ("Hi chat", 0, [text("Hi chat")]),
    ("", 0, []),
    ("Kappa", 0, [emote("Kappa")]),
    ("hi Kappa there", 0, [text("hi "), emote("Kappa"), text(" there")]),
    ("Kappa PogChamp", 0, [emote("Kappa"), text(" "), emote("PogChamp")]),
    ("look at this Kappa", 0, [text("look at this "), emote("Kappa")]),
    (" Kappa  ", 0, [text(" "), emote("Kappa"), text("  ")]),
    ("kappa KappaKappa Kappa,", 0, [text("kappa KappaKappa Kappa,")]),  # whole words, case-sensitive
    ("@viewer32 hi", 0, [text("@viewer32 hi")]),  # mentions stay text
    ("Cheer100", 0, [text("Cheer100")]),  # no bits: not a cheer
    ("Cheer100 well done", 100, [cheermote("Cheer100", "cheer", 100, 100), text(" well done")]),
    ("BibleThump5 Kappa", 5, [cheermote("BibleThump5", "biblethump", 5, 1), text(" "), emote("Kappa")]),
    ("4Head1000", 1000, [cheermote("4Head1000", "4head", 1000, 1000)]),
    ("Cheer0 Cheer 100 Cheer01", 1, [text("Cheer0 Cheer 100 Cheer01")]),  # not a name followed by a count
])
def test_fragments_split_like_twitch(line, bits, expected):
    assert message(line, bits) == expected


@pytest.mark.parametrize("bits, tier", [
    (1, 1), (99, 1), (100, 100), (999, 100), (1000, 1000), (4999, 1000), (5000, 5000), (9999, 5000),
    (10000, 10000), (250000, 10000),
])
def test_cheermote_tier_is_the_largest_not_above_its_bits(bits, tier):
    assert message(f"Cheer{bits}", bits) == [cheermote(f"Cheer{bits}", "cheer", bits, tier)]


def test_cheer_object_only_when_bits_were_sent():
    base = (("1", "b", "B"), ("2", "c", "C"), "id")
    assert es.chat_message(*base, "Cheer5", emotes=EMOTES, color="", badges="", bits=5)["cheer"] == {"bits": 5}
    assert es.chat_message(*base, "hi", emotes=EMOTES, color="", badges="")["cheer"] is None


def test_chat_message_passes_type_and_reply_through():
    reply = {"parent_message_id": "p", "parent_message_body": "hi", "parent_user_id": "3",
             "parent_user_name": "P", "parent_user_login": "p", "thread_message_id": "p",
             "thread_user_id": "3", "thread_user_name": "P", "thread_user_login": "p"}
    built = es.chat_message(("1", "b", "B"), ("2", "c", "C"), "id", "hi", emotes=EMOTES, color="#FF0000",
                            badges="", message_type="user_intro", reply=reply)
    assert (built["message_type"], built["reply"], built["color"]) == ("user_intro", reply, "#FF0000")


# ---- badges


@pytest.mark.parametrize("tag, badges", [
    ("", []),
    ("broadcaster/1", [{"set_id": "broadcaster", "id": "1", "info": ""}]),
    ("broadcaster/1,subscriber/0", [{"set_id": "broadcaster", "id": "1", "info": ""},
                                    {"set_id": "subscriber", "id": "0", "info": ""}]),
    ("subscriber/3012,bits/100,sub-gifter/1", [{"set_id": "subscriber", "id": "3012", "info": ""},
                                              {"set_id": "bits", "id": "100", "info": ""},
                                              {"set_id": "sub-gifter", "id": "1", "info": ""}]),
])
def test_badges_tag_parses_into_eventsub_badges(tag, badges):
    assert es.parse_badges(tag) == badges
    assert es.chat_notification(("1", "b", "B"), None, "unraid", system_message="", message_id="m",
                                badges=tag)["badges"] == badges


# ---- chat notifications


@pytest.mark.parametrize("notice_type", es.NOTICE_TYPES)
def test_only_the_named_notice_key_is_filled(notice_type):
    detail = {"color": "PRIMARY"} if notice_type == "announcement" else {"marker": notice_type}
    built = es.chat_notification(("1", "b", "B"), ("2", "c", "C"), notice_type, system_message="s",
                                 message_id="m", text="hi Kappa", detail=detail, emotes=EMOTES)
    assert built.keys() - es.SHARED_CHAT_NOTICE_KEYS == documented("channel_chat_notification").keys()
    assert {kind: built[kind] for kind in es.NOTICE_TYPES} == {
        kind: detail if kind == notice_type else None for kind in es.NOTICE_TYPES}
    assert built["notice_type"] == notice_type
    assert built["message"] == {"text": "hi Kappa", "fragments": [text("hi "), emote("Kappa")]}


def test_unraid_detail_defaults_to_an_empty_object_and_others_need_one():
    built = es.chat_notification(("1", "b", "B"), ("2", "c", "C"), "unraid", system_message="", message_id="m")
    assert built["unraid"] == {}
    with pytest.raises(ValueError):
        es.chat_notification(("1", "b", "B"), ("2", "c", "C"), "sub", system_message="", message_id="m")
    with pytest.raises(ValueError):
        es.chat_notification(("1", "b", "B"), ("2", "c", "C"), "shared_chat_sub", system_message="",
                             message_id="m", detail={})


def test_anonymous_notification_names_the_anonymous_gifter():
    built = es.chat_notification(("1", "b", "B"), None, "community_sub_gift", system_message="An anonymous user…",
                                 message_id="m", detail={"id": "g", "total": 5, "sub_tier": "1000",
                                                         "cumulative_total": None})
    assert built["chatter_is_anonymous"] is True
    assert who(built, "chatter") == ("274598607", "ananonymousgifter", "AnAnonymousGifter")
    assert not es.chat_notification(("1", "b", "B"), ("2", "c", "C"), "unraid", system_message="",
                                    message_id="m")["chatter_is_anonymous"]


# ---- onto the wire


@pytest.mark.parametrize("type_, name", [
    ("channel.chat.message", "channel_chat_message"),
    ("channel.chat.notification", "channel_chat_notification"),
    ("channel.ban", "channel_ban"),
    ("user.whisper.message", "user_whisper_message"),
])
def test_notify_encodes_the_event_once_and_it_decodes_back(type_, name):
    event = documented(name)
    note = es.notify(type_, event)
    assert isinstance(note, wire.Notify) and note.type == type_
    assert isinstance(note.event, msgspec.Raw)
    assert json.loads(bytes(note.event)) == event
    again = wire.decode(wire.encode(wire.Event(channel="#c", command="PRIVMSG", line="x", notify=[note])),
                        wire.Event)
    assert [(n.type, json.loads(bytes(n.event))) for n in again.notify] == [(type_, event)]
