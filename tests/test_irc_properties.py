"""Property tests: the IRC core round-trips what it can frame and never raises
anything but its own error on what it cannot."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from common.irc import (
    MAX_MESSAGE_BYTES,
    MAX_TAGS_BYTES,
    IRCParseError,
    LineReader,
    LineTooLong,
    Message,
    parse,
)

FORBIDDEN = "\r\n\0"
text = st.text(st.characters(blacklist_characters=FORBIDDEN, blacklist_categories=("Cs",)), max_size=40)
word = text.filter(lambda s: s and " " not in s and not s.startswith(":"))
tag_key = st.from_regex(r"\A[a-z][a-z0-9-]{0,14}\Z")
command = st.one_of(st.from_regex(r"\A[A-Za-z]{1,12}\Z"), st.from_regex(r"\A[0-9]{3}\Z"))


@st.composite
def messages(draw) -> Message:
    middle = draw(st.lists(word, max_size=4))
    params = middle + ([draw(text)] if draw(st.booleans()) else [])
    source = draw(st.one_of(st.none(), word))
    return Message(tags=draw(st.dictionaries(tag_key, text, max_size=5)), source=source,
                   command=draw(command), params=params)


@given(messages())
@settings(max_examples=400)
def test_serialize_then_parse_gives_the_message_back(message: Message) -> None:
    assert parse(message.serialize()) == message


@given(st.text(max_size=200))
@settings(max_examples=400)
def test_parse_raises_only_its_own_error(line: str) -> None:
    try:
        message = parse(line)
    except IRCParseError:
        return
    # Whatever parses can be written out again without line breaks or NULs.
    assert not any(char in message.serialize() for char in FORBIDDEN)


@given(st.lists(st.binary(max_size=3000), max_size=20))
@settings(max_examples=200)
def test_line_reader_never_raises_and_stays_bounded(chunks: list[bytes]) -> None:
    reader = LineReader()
    for chunk in chunks:
        for item in reader.feed(chunk):
            assert isinstance(item, (str, LineTooLong))
        assert reader.buffered < MAX_TAGS_BYTES + MAX_MESSAGE_BYTES
