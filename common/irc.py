"""Sans-I/O IRC message parsing, serialization and line framing.

Parsing follows RFC 1459 in allowing several spaces between atoms (real
clients and servers send them). Message tags and their escaping follow
https://ircv3.net/specs/extensions/message-tags.
"""
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "MAX_MESSAGE_BYTES",
    "MAX_TAGS_BYTES",
    "IRCParseError",
    "LineReader",
    "LineTooLong",
    "Message",
    "escape_tag_value",
    "parse",
    "serialize_tags",
    "unescape_tag_value",
]

# The tags section, counting its leading '@' and the space after it.
MAX_TAGS_BYTES = 8191
# Everything after the tags section, counting the CRLF.
MAX_MESSAGE_BYTES = 512

_ESCAPES = str.maketrans({"\\": "\\\\", ";": "\\:", " ": "\\s", "\r": "\\r", "\n": "\\n"})
_UNESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}
_BAD_TAG_KEY_CHARS = frozenset("= ;\r\n\0")


class IRCParseError(ValueError):
    """A line that is not a well-formed IRC message."""


class LineTooLong(IRCParseError):
    """A line over the protocol's length limits; it was discarded unparsed."""


def escape_tag_value(value: str) -> str:
    return value.translate(_ESCAPES)


def unescape_tag_value(value: str) -> str:
    if "\\" not in value:
        return value
    out: list[str] = []
    pos = 0
    while (slash := value.find("\\", pos)) >= 0:
        out.append(value[pos:slash])
        if slash + 1 == len(value):
            # The spec drops a trailing lone backslash.
            return "".join(out)
        char = value[slash + 1]
        # An unknown escape drops the backslash and keeps the character.
        out.append(_UNESCAPES.get(char, char))
        pos = slash + 2
    out.append(value[pos:])
    return "".join(out)


def serialize_tags(tags: dict[str, str], *, bare_empty: bool = False) -> str:
    """Tags as `k=v;k2=v2`, without the leading '@' or the trailing space.

    Empty values are written `k=` by default because that is what Twitch
    sends (`badges=`) and naive Twitch clients split on '='; `bare_empty`
    writes the IRCv3-minimal `k` instead.
    """
    parts: list[str] = []
    for key, value in tags.items():
        if not key or not _BAD_TAG_KEY_CHARS.isdisjoint(key):
            raise ValueError(f"invalid tag key: {key!r}")
        if "\0" in value:
            # Escaping has no form for NUL, so it would reach the wire raw.
            raise ValueError(f"tag {key!r} value contains NUL")
        if bare_empty and not value:
            parts.append(key)
        else:
            parts.append(f"{key}={escape_tag_value(value)}")
    return ";".join(parts)


def _is_valid_command(command: str) -> bool:
    return command.isascii() and (
        command.isalpha() or (len(command) == 3 and command.isdigit())
    )


def _refuse_line_breaks(what: str, value: str) -> None:
    # A raw CR, LF or NUL would let a field smuggle a second line onto the wire.
    if "\r" in value or "\n" in value or "\0" in value:
        raise ValueError(f"{what} contains CR, LF or NUL: {value!r}")


@dataclass(slots=True)
class Message:
    tags: dict[str, str] = field(default_factory=dict)
    source: str | None = None
    command: str = ""
    params: list[str] = field(default_factory=list)

    def serialize(self, *, bare_empty_tags: bool = False) -> str:
        """The wire form without CRLF; raises ValueError if it cannot be framed."""
        body = self.serialize_without_tags()
        if not self.tags:
            return body
        return f"@{serialize_tags(self.tags, bare_empty=bare_empty_tags)} {body}"

    def serialize_without_tags(self, *, trailing: bool = False) -> str:
        """`trailing` always writes the last parameter with its colon, as Twitch
        does (`PRIVMSG #chan :hi`, `CLEARCHAT #chan :user`)."""
        parts: list[str] = []
        if self.source is not None:
            _refuse_line_breaks("source", self.source)
            if not self.source or " " in self.source:
                raise ValueError(f"invalid source: {self.source!r}")
            parts.append(f":{self.source}")
        if not _is_valid_command(self.command):
            raise ValueError(f"invalid command: {self.command!r}")
        parts.append(self.command)
        if self.params:
            *middle, last = self.params
            for param in middle:
                _refuse_line_breaks("param", param)
                if not param or " " in param or param[0] == ":":
                    raise ValueError(f"bad middle param: {param!r} (empty, space or ':')")
                parts.append(param)
            _refuse_line_breaks("param", last)
            if trailing or not last or " " in last or last[0] == ":":
                last = f":{last}"
            parts.append(last)
        return " ".join(parts)


def _parse_tags(raw: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in raw.split(";"):
        if not item:
            # Tolerate stray separators such as a trailing ';'.
            continue
        key, _, value = item.partition("=")
        if not key:
            raise IRCParseError(f"tag without a key: {item!r}")
        # Duplicate keys: the spec says the last one wins.
        tags[key] = unescape_tag_value(value)
    return tags


def parse(line: str) -> Message:
    """Parse one line, with or without its trailing CRLF or LF."""
    line = line.removesuffix("\n")
    line = line.removesuffix("\r")
    if "\0" in line or "\r" in line or "\n" in line:
        raise IRCParseError("line contains NUL, CR or LF")
    rest = line.lstrip(" ")
    if not rest:
        raise IRCParseError("empty line")

    tags: dict[str, str] = {}
    if rest[0] == "@":
        raw_tags, _, rest = rest[1:].partition(" ")
        rest = rest.lstrip(" ")
        if not rest:
            raise IRCParseError("tags with no message after them")
        tags = _parse_tags(raw_tags)

    source: str | None = None
    if rest[0] == ":":
        source, _, rest = rest[1:].partition(" ")
        rest = rest.lstrip(" ")
        if not source:
            raise IRCParseError("empty source")
        if not rest:
            raise IRCParseError("source with no command after it")

    space = rest.find(" ")
    command = rest if space < 0 else rest[:space]
    if not _is_valid_command(command):
        raise IRCParseError(f"invalid command: {command!r}")

    params: list[str] = []
    if space >= 0:
        # Each " :" starts a param, so the first one starts the trailing param.
        middle, has_trailing, trailing = rest[space:].partition(" :")
        params = [param for param in middle.split(" ") if param]
        if has_trailing:
            params.append(trailing)
    return Message(tags=tags, source=source, command=command, params=params)


def _check_sections(line: bytes, max_message_bytes: int) -> LineTooLong | None:
    """Enforce the separate tag and message budgets of a line without CRLF."""
    tags_len = 0
    if line.startswith(b"@"):
        space = line.find(b" ")
        tags_len = len(line) if space < 0 else space + 1
    if tags_len > MAX_TAGS_BYTES:
        return LineTooLong(f"tags exceed {MAX_TAGS_BYTES} bytes")
    if len(line) - tags_len > max_message_bytes - 2:
        return LineTooLong(f"message exceeds {max_message_bytes} bytes")
    return None


class LineReader:
    """Frames a byte stream into decoded lines, refusing over-long ones.

    `max_message_bytes` is the budget after the tags section, counting the
    CRLF; a whole line may use MAX_TAGS_BYTES more. A line
    that outgrows it is reported once and discarded as it arrives, so the
    buffer stays bounded whatever the peer sends.
    """

    __slots__ = ("_buf", "_discarding", "_max", "_max_message")

    def __init__(self, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        if max_message_bytes < 3:
            raise ValueError("max_message_bytes must leave room for a command")
        self._max = MAX_TAGS_BYTES + max_message_bytes
        self._max_message = max_message_bytes
        self._buf = bytearray()
        self._discarding = False

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the end of the current line."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[str | LineTooLong]:
        out: list[str | LineTooLong] = []
        start = 0
        while (newline := data.find(b"\n", start)) >= 0:
            chunk = data[start:newline]
            start = newline + 1
            if self._discarding:
                # The overflow was reported when it happened; resync here.
                self._discarding = False
                continue
            if self._buf:
                chunk = bytes(self._buf) + chunk
                self._buf.clear()
            self._complete(chunk, out)
        tail = data[start:]
        if tail and not self._discarding:
            if len(self._buf) + len(tail) + 1 > self._max:
                self._buf.clear()
                self._discarding = True
                out.append(self._too_long())
            else:
                self._buf += tail
        return out

    def feed_text(self, text: str) -> list[str | LineTooLong]:
        """Split one WebSocket text frame into lines.

        A frame is self-contained, so a final line without a terminator is
        complete rather than held for the next frame as feed() would do.
        """
        out: list[str | LineTooLong] = []
        for piece in text.split("\n"):
            self._complete(piece.encode("utf-8", errors="replace"), out)
        return out

    def _too_long(self) -> LineTooLong:
        return LineTooLong(f"line exceeds {self._max} bytes")

    def _complete(self, line: bytes, out: list[str | LineTooLong]) -> None:
        """Handle one whole line given without its LF."""
        if len(line) + 1 > self._max:
            out.append(self._too_long())
            return
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            return
        error = _check_sections(line, self._max_message)
        out.append(error if error is not None else line.decode("utf-8", errors="replace"))
