from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from common.irc import (
    MAX_MESSAGE_BYTES,
    MAX_TAGS_BYTES,
    IRCParseError,
    LineReader,
    LineTooLong,
    Message,
    escape_tag_value,
    parse,
    serialize_tags,
    unescape_tag_value,
)

# --- Conformance vectors (github.com/ircdocs/parser-tests) -----------------

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "conformance" / "irc-parser-tests"


def _load(name: str) -> list[dict[str, Any]]:
    # A missing folder yields no cases here; test_vectors_present then fails loudly.
    path = VECTORS / name
    if not path.is_file():
        return []
    return yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]


SPLIT_CASES = _load("msg-split.yaml")
JOIN_CASES = _load("msg-join.yaml")


def _from_atoms(atoms: dict[str, Any]) -> Message:
    # Absent keys mean "none"; a null tag value means the tag has no value.
    return Message(
        tags={key: value or "" for key, value in (atoms.get("tags") or {}).items()},
        source=atoms.get("source"),
        command=atoms["verb"],
        params=list(atoms.get("params") or []),
    )


def test_vectors_present() -> None:
    assert VECTORS.is_dir(), f"conformance vectors missing at {VECTORS}"
    assert len(SPLIT_CASES) + len(JOIN_CASES) >= 50


@pytest.mark.parametrize("case", SPLIT_CASES, ids=[c["input"] for c in SPLIT_CASES])
def test_conformance_split(case: dict[str, Any]) -> None:
    assert parse(case["input"]) == _from_atoms(case["atoms"])


@pytest.mark.parametrize("case", JOIN_CASES, ids=[c.get("desc", "") for c in JOIN_CASES])
def test_conformance_join(case: dict[str, Any]) -> None:
    message = _from_atoms(case["atoms"])
    # The vectors hold one case ("Tag with no value") that only accepts the
    # bare `k` form for an empty value; the default `k=` form is Twitch's.
    assert message.serialize(bare_empty_tags=True) in case["matches"]
    assert parse(message.serialize()) == message


# --- Twitch-shaped lines ---------------------------------------------------

PRIVMSG_TAGS = {
    "badge-info": "subscriber/8",
    "badges": "subscriber/6,bits/1000",
    "client-nonce": "5f0f4ce3b8a44c0bf4d5c7ff2e4e6e61",
    "color": "#0000FF",
    "display-name": "Ronni;B ot",
    "emotes": "25:0-4,12-16/1902:6-10",
    "first-msg": "0",
    "flags": "",
    "id": "b34ccfc7-4977-403a-8a94-33c6bac34fb8",
    "mod": "0",
    "returning-chatter": "0",
    "room-id": "1337",
    "subscriber": "1",
    "tmi-sent-ts": "1507246572675",
    "turbo": "1",
    "user-id": "1337",
    "user-type": "",
}
PRIVMSG_LINE = (
    "@badge-info=subscriber/8;badges=subscriber/6,bits/1000;"
    "client-nonce=5f0f4ce3b8a44c0bf4d5c7ff2e4e6e61;color=#0000FF;"
    "display-name=Ronni\\:B\\sot;emotes=25:0-4,12-16/1902:6-10;first-msg=0;flags=;"
    "id=b34ccfc7-4977-403a-8a94-33c6bac34fb8;mod=0;returning-chatter=0;room-id=1337;"
    "subscriber=1;tmi-sent-ts=1507246572675;turbo=1;user-id=1337;user-type= "
    ":ronni!ronni@ronni.tmi.twitch.tv PRIVMSG #ronni :Kappa Keepo Kappa"
)
USERNOTICE_LINE = (
    "@badge-info=;badges=staff/1,broadcaster/1;color=#008000;display-name=ronni;emotes=;"
    "login=ronni;msg-id=resub;msg-param-cumulative-months=6;room-id=12345678;"
    "system-msg=ronni\\shas\\ssubscribed\\sfor\\s6\\smonths!;tmi-sent-ts=1507246572675 "
    ":tmi.twitch.tv USERNOTICE #dallas :Great stream -- keep it up!"
)

TABLE: list[tuple[str, Message]] = [
    (PRIVMSG_LINE, Message(
        tags=PRIVMSG_TAGS,
        source="ronni!ronni@ronni.tmi.twitch.tv",
        command="PRIVMSG",
        params=["#ronni", "Kappa Keepo Kappa"],
    )),
    (USERNOTICE_LINE, Message(
        tags={
            "badge-info": "",
            "badges": "staff/1,broadcaster/1",
            "color": "#008000",
            "display-name": "ronni",
            "emotes": "",
            "login": "ronni",
            "msg-id": "resub",
            "msg-param-cumulative-months": "6",
            "room-id": "12345678",
            "system-msg": "ronni has subscribed for 6 months!",
            "tmi-sent-ts": "1507246572675",
        },
        source="tmi.twitch.tv",
        command="USERNOTICE",
        params=["#dallas", "Great stream -- keep it up!"],
    )),
    ("CAP REQ :twitch.tv/membership twitch.tv/tags twitch.tv/commands", Message(
        command="CAP", params=["REQ", "twitch.tv/membership twitch.tv/tags twitch.tv/commands"],
    )),
    (":tmi.twitch.tv CAP * ACK :twitch.tv/tags", Message(
        source="tmi.twitch.tv", command="CAP", params=["*", "ACK", "twitch.tv/tags"],
    )),
    ("PASS oauth:abc123", Message(command="PASS", params=["oauth:abc123"])),
    ("NICK justinfan12345", Message(command="NICK", params=["justinfan12345"])),
    ("PING :tmi.twitch.tv", Message(command="PING", params=["tmi.twitch.tv"])),
    (":tmi.twitch.tv PONG tmi.twitch.tv :tmi.twitch.tv", Message(
        source="tmi.twitch.tv", command="PONG", params=["tmi.twitch.tv", "tmi.twitch.tv"],
    )),
    (":tmi.twitch.tv 001 justinfan12345 :Welcome, GLHF!", Message(
        source="tmi.twitch.tv", command="001", params=["justinfan12345", "Welcome, GLHF!"],
    )),
    (":justinfan12345.tmi.twitch.tv 353 justinfan12345 = #dallas :ronni fred", Message(
        source="justinfan12345.tmi.twitch.tv",
        command="353",
        params=["justinfan12345", "=", "#dallas", "ronni fred"],
    )),
    (":tmi.twitch.tv 421 ronni WHO :Unknown command", Message(
        source="tmi.twitch.tv", command="421", params=["ronni", "WHO", "Unknown command"],
    )),
    ("JOIN #a,#b", Message(command="JOIN", params=["#a,#b"])),
    (":ronni!ronni@ronni.tmi.twitch.tv JOIN #dallas", Message(
        source="ronni!ronni@ronni.tmi.twitch.tv", command="JOIN", params=["#dallas"],
    )),
    ("@ban-duration=350;room-id=1337;target-user-id=42 :tmi.twitch.tv CLEARCHAT #dallas :ronni",
     Message(
        tags={"ban-duration": "350", "room-id": "1337", "target-user-id": "42"},
        source="tmi.twitch.tv",
        command="CLEARCHAT",
        params=["#dallas", "ronni"],
    )),
    ("@msg-id=msg_ratelimit :tmi.twitch.tv NOTICE #dallas :Your message was not sent.", Message(
        tags={"msg-id": "msg_ratelimit"},
        source="tmi.twitch.tv",
        command="NOTICE",
        params=["#dallas", "Your message was not sent."],
    )),
    ("privmsg #dallas :héllo 世界 🎉", Message(
        command="privmsg", params=["#dallas", "héllo 世界 🎉"],
    )),
]
TABLE_IDS = [line[:60] for line, _ in TABLE]


@pytest.mark.parametrize(("line", "expected"), TABLE, ids=TABLE_IDS)
def test_parse_table(line: str, expected: Message) -> None:
    assert parse(line) == expected
    assert parse(line + "\r\n") == expected
    assert parse(line + "\n") == expected


@pytest.mark.parametrize(("line", "expected"), TABLE, ids=TABLE_IDS)
def test_reader_byte_at_a_time(line: str, expected: Message) -> None:
    reader = LineReader()
    results: list[str | LineTooLong] = []
    for byte in (line + "\r\n").encode():
        results.extend(reader.feed(bytes([byte])))
    assert results == [line]
    assert parse(line) == expected
    assert reader.buffered == 0


@pytest.mark.parametrize(("line", "expected"), TABLE, ids=TABLE_IDS)
def test_reader_keeps_partial_line(line: str, expected: Message) -> None:
    reader = LineReader()
    assert reader.feed((line + "\r\nPING :x\r\nPART").encode()) == [line, "PING :x"]
    assert reader.buffered == len("PART")
    assert reader.feed(b"\r\n") == ["PART"]
    assert reader.buffered == 0


@pytest.mark.parametrize(("line", "expected"), TABLE, ids=TABLE_IDS)
def test_round_trip(line: str, expected: Message) -> None:
    assert parse(expected.serialize()) == expected


def test_serialize_twitch_privmsg_exactly() -> None:
    # Twitch-style `k=` for empty values, in insertion order.
    assert parse(PRIVMSG_LINE).serialize() == PRIVMSG_LINE


# --- Malformed input -------------------------------------------------------

@pytest.mark.parametrize("line", [
    "",
    "   ",
    "\r\n",
    "@a=b",
    "@a=b ",
    "@a=b    ",
    ":src",
    ":src   ",
    "@a=b :src",
    ": PING",
    "@=x PING",
    "PRIV-MSG #a",
    "PRIVMSG1 #a",
    "12 foo",
    "1234 foo",
    "٣٣٣ foo",
    "PRIVMSG #a :hi\0there",
    "PRIVMSG #a :hi\rthere",
    "PRIVMSG #a :hi\nthere",
])
def test_parse_rejects(line: str) -> None:
    with pytest.raises(IRCParseError):
        parse(line)


def test_parse_error_is_value_error() -> None:
    assert issubclass(IRCParseError, ValueError)
    assert issubclass(LineTooLong, IRCParseError)


def test_parse_keeps_command_case_and_last_duplicate_tag() -> None:
    message = parse("@a=1;b=2;a=3 PrivMsg #x :y")
    assert message.command == "PrivMsg"
    assert message.tags == {"a": "3", "b": "2"}


@pytest.mark.parametrize("message", [
    Message(command="PRIVMSG", params=["#a", "hi\r\nPRIVMSG #b :pwned"]),
    Message(command="PRIVMSG", params=["#a\n", "hi"]),
    Message(command="PRIVMSG", params=["#a", "nul\0"]),
    Message(source="evil\r\nQUIT", command="PRIVMSG", params=["#a", "x"]),
    Message(source="a b", command="PRIVMSG", params=["#a", "x"]),
    Message(source="", command="PRIVMSG", params=["#a", "x"]),
    Message(command="PRIVMSG\r\nQUIT"),
    Message(command="PRIV MSG"),
    Message(command=""),
    Message(command="PRIVMSG", params=["", "x"]),
    Message(command="PRIVMSG", params=["#a b", "x"]),
    Message(command="PRIVMSG", params=[":a", "x"]),
    Message(tags={"": "x"}, command="PING"),
    Message(tags={"a=b": "x"}, command="PING"),
    Message(tags={"a;b": "x"}, command="PING"),
    Message(tags={"a b": "x"}, command="PING"),
    Message(tags={"a\r\n": "x"}, command="PING"),
    Message(tags={"a\0": "x"}, command="PING"),
    Message(tags={"a": "x\0"}, command="PING"),
])
def test_serialize_refuses(message: Message) -> None:
    with pytest.raises(ValueError):
        message.serialize()


def test_serialize_last_param_forms() -> None:
    assert Message(command="PING", params=["x"]).serialize() == "PING x"
    assert Message(command="PING", params=[""]).serialize() == "PING :"
    assert Message(command="PING", params=[":x"]).serialize() == "PING ::x"
    assert Message(command="PING", params=["a b"]).serialize() == "PING :a b"
    assert Message(source="s", command="AWAY").serialize() == ":s AWAY"


def test_serialize_tags_forms() -> None:
    tags = {"b": "", "a": "x y", "c": "1"}
    assert serialize_tags(tags) == "b=;a=x\\sy;c=1"
    assert serialize_tags(tags, bare_empty=True) == "b;a=x\\sy;c=1"
    message = Message(tags=tags, source="s", command="PING", params=["z"])
    assert message.serialize() == "@b=;a=x\\sy;c=1 :s PING z"
    assert message.serialize_without_tags() == ":s PING z"


# --- Line framing limits ---------------------------------------------------

def test_over_long_line_reported_once_then_recovers() -> None:
    reader = LineReader()
    results: list[str | LineTooLong] = []
    payload = b"PRIVMSG #a :" + b"x" * 20_000
    for i in range(0, len(payload), 1000):
        results.extend(reader.feed(payload[i:i + 1000]))
        assert reader.buffered <= MAX_TAGS_BYTES + MAX_MESSAGE_BYTES
    results.extend(reader.feed(b"\r\nPING :ok\r\n"))
    assert len(results) == 2
    assert isinstance(results[0], LineTooLong)
    assert results[1] == "PING :ok"
    assert parse(results[1]) == Message(command="PING", params=["ok"])


def test_over_long_line_in_one_chunk() -> None:
    reader = LineReader()
    results = reader.feed(b"PING :" + b"x" * 9000 + b"\r\nPING :ok\r\n")
    assert len(results) == 2
    assert isinstance(results[0], LineTooLong)
    assert results[1] == "PING :ok"


def test_buffer_bounded_for_a_megabyte_without_newline() -> None:
    reader = LineReader()
    results: list[str | LineTooLong] = []
    chunk = b"A" * 65536
    for _ in range(16):
        results.extend(reader.feed(chunk))
        assert reader.buffered <= MAX_TAGS_BYTES + MAX_MESSAGE_BYTES
    assert len(results) == 1
    assert isinstance(results[0], LineTooLong)
    assert reader.feed(b"tail\nPING\n") == ["PING"]


def test_message_budget_counts_terminator() -> None:
    reader = LineReader(max_message_bytes=10)
    assert reader.feed(b"PING :ab\r\n") == ["PING :ab"]
    assert reader.feed(b"PING :ab\n") == ["PING :ab"]
    [error] = reader.feed(b"PING :abc\r\n")
    assert isinstance(error, LineTooLong)
    # A larger budget (the edge's, for 500 multi-byte characters) lets it through.
    assert LineReader(max_message_bytes=2048).feed(("PRIVMSG #a :" + "é" * 500 + "\r\n").encode())


def test_tags_section_limit() -> None:
    # The budget counts the '@' and the space that ends the tags section.
    section = "@a=" + "x" * (MAX_TAGS_BYTES - len("@a= ")) + " "
    assert len(section.encode()) == MAX_TAGS_BYTES
    assert LineReader().feed(section.encode() + b"PING\r\n") == [section + "PING"]
    [error] = LineReader().feed(b"@x" + section.encode() + b"PING\r\n")
    assert isinstance(error, LineTooLong)
    [error] = LineReader().feed(b"@a=" + b"x" * 9000 + b" PING\r\n")
    assert isinstance(error, LineTooLong)


def test_message_section_limit() -> None:
    prefix = "@a=b PRIVMSG #a :"
    body = MAX_MESSAGE_BYTES - 2 - len("PRIVMSG #a :")
    fits = prefix + "x" * body
    assert LineReader().feed(fits.encode() + b"\r\n") == [fits]
    [error] = LineReader().feed(fits.encode() + b"x\r\n")
    assert isinstance(error, LineTooLong)


def test_invalid_utf8_is_replaced() -> None:
    reader = LineReader()
    [line] = reader.feed(b"PRIVMSG #a :\xff\xfe hi\r\n")
    assert line == "PRIVMSG #a :\ufffd\ufffd hi"
    assert parse(line).params == ["#a", "\ufffd\ufffd hi"]


def test_reader_drops_empty_lines_and_accepts_bare_lf() -> None:
    assert LineReader().feed(b"\r\n\n\r\nPING\nPONG\r\n\n") == ["PING", "PONG"]


def test_feed_text_frames() -> None:
    reader = LineReader()
    assert reader.feed_text("PING :a\r\nPING :b\nPING :c") == ["PING :a", "PING :b", "PING :c"]
    assert reader.feed_text("PING :d\r\n") == ["PING :d"]
    assert reader.feed_text("") == []
    assert reader.buffered == 0
    [error, line] = reader.feed_text("PRIVMSG #a :" + "é" * 300 + "\r\nPING")
    assert isinstance(error, LineTooLong)
    assert line == "PING"


# --- Tag value escaping ----------------------------------------------------

@pytest.mark.parametrize("value", [
    "",
    ";",
    " ",
    "\\",
    "\r",
    "\n",
    "trailing\\",
    "a;b c\\d\re\nf",
    "\\s\\:\\\\",
    "héllo 世界 🎉",
    ";;  \\\\ \r\n\r\n",
])
def test_escape_round_trip(value: str) -> None:
    escaped = escape_tag_value(value)
    assert not any(char in escaped for char in "; \r\n")
    assert unescape_tag_value(escaped) == value
    message = Message(tags={"k": value}, command="PING")
    assert parse(message.serialize()) == message


@pytest.mark.parametrize(("raw", "value"), [
    ("a\\:b", "a;b"),
    ("a\\sb", "a b"),
    ("a\\\\b", "a\\b"),
    ("a\\rb\\n", "a\rb\n"),
    ("a\\xb", "axb"),
    ("trailing\\", "trailing"),
    ("\\", ""),
    ("value\\\\ntest", "value\\ntest"),
])
def test_unescape(raw: str, value: str) -> None:
    assert unescape_tag_value(raw) == value


def test_escape_exact() -> None:
    assert escape_tag_value("a;b c\\d\re\nf") == "a\\:b\\sc\\\\d\\re\\nf"
