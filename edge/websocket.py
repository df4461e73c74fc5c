"""IRC over WebSocket, sans I/O: the opening handshake and RFC 6455 framing as an
edge needs them — masked client frames in, unmasked text frames out.

Why not websockets' `ServerProtocol`: an idle connection keeps about 1.2 KB
of its state (a dict-backed object, a parser generator, a stream reader, a
UUID), and parsing each handshake through its `Request` and `Headers` objects
leaves some 3 KB of short-lived objects per connection behind, whose freed
memory stays fragmented among the long-lived ones. With tens of thousands of
idle viewers per edge that is over half of a WebSocket connection's memory. Here a connection keeps a `FrameReader` of four
slots. websockets still speaks WebSocket everywhere else in chatd (its clients,
the tests, the load generators), and lends this module its C mask function.
"""
from __future__ import annotations

import base64
import binascii
import hashlib

try:
    from websockets.speedups import apply_mask
except ImportError:  # websockets built without its C extension
    from websockets.utils import apply_mask

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
DATA_OPCODES = (OP_CONTINUATION, OP_TEXT, OP_BINARY)
CONTROL_OPCODES = (OP_CLOSE, OP_PING, OP_PONG)
IRC_SUBPROTOCOL = b"irc"
# Close codes (RFC 6455 §7.4.1).
NORMAL, PROTOCOL_ERROR, INVALID_DATA, TOO_BIG = 1000, 1002, 1007, 1009


class HandshakeRefused(Exception):
    """An upgrade request that cannot be accepted: answer with this HTTP status."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class ProtocolError(Exception):
    """A frame that breaks the protocol: close the connection with this code."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


# ---- the opening handshake

def _tokens(value: bytes) -> list[bytes]:
    return [token.strip().lower() for token in value.split(b",")]


def handshake(head: bytes) -> bytes:
    """The `101 Switching Protocols` answer to an upgrade request's head (request
    line and headers, without the blank line that ends them); the `irc`
    subprotocol is chosen when offered (tmi.js insists), and plain clients are
    accepted too. Raises HandshakeRefused."""
    request_line, _, rest = head.partition(b"\r\n")
    method, _, rest_of_line = request_line.partition(b" ")
    _, _, version = rest_of_line.rpartition(b" ")
    if method != b"GET" or version != b"HTTP/1.1":
        raise HandshakeRefused(400, "A WebSocket handshake is a GET over HTTP/1.1")
    headers: dict[bytes, bytes] = {}
    for line in rest.split(b"\r\n") if rest else ():
        name, colon, value = line.partition(b":")
        if not colon or not name.strip():
            raise HandshakeRefused(400, "Malformed header line")
        name = name.strip().lower()
        headers[name] = headers[name] + b"," + value.strip() if name in headers else value.strip()
    if b"websocket" not in _tokens(headers.get(b"upgrade", b"")) or \
            b"upgrade" not in _tokens(headers.get(b"connection", b"")):
        raise HandshakeRefused(426, "This endpoint speaks IRC over WebSocket: send Upgrade: websocket")
    if headers.get(b"sec-websocket-version") != b"13":
        raise HandshakeRefused(426, "Sec-WebSocket-Version must be 13")
    key = headers.get(b"sec-websocket-key", b"")
    try:
        valid_key = len(base64.b64decode(key, validate=True)) == 16
    except binascii.Error:
        valid_key = False
    if not valid_key:
        raise HandshakeRefused(400, "Sec-WebSocket-Key must be 16 bytes in base64")
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    subprotocol = (b"Sec-WebSocket-Protocol: irc\r\n"
                   if IRC_SUBPROTOCOL in _tokens(headers.get(b"sec-websocket-protocol", b"")) else b"")
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n" + subprotocol + b"\r\n")


def refusal(status: int, reason: str) -> bytes:
    """An HTTP answer that turns a handshake away, with its reason as the body."""
    phrases = {400: "Bad Request", 426: "Upgrade Required", 429: "Too Many Requests"}
    body = (reason + "\n").encode()
    extra = b"Sec-WebSocket-Version: 13\r\n" if status == 426 else b""
    return (f"HTTP/1.1 {status} {phrases.get(status, 'Error')}\r\n".encode() + extra +
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: " + str(len(body)).encode() +
            b"\r\nConnection: close\r\n\r\n" + body)


# ---- frames

def _frame(opcode: int, payload: bytes) -> bytes:
    """A final, unmasked frame (servers never mask)."""
    size = len(payload)
    if size < 126:
        head = bytes((0x80 | opcode, size))
    elif size < 1 << 16:
        head = bytes((0x80 | opcode, 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 127)) + size.to_bytes(8, "big")
    return head + payload


def text_frame(payload: bytes) -> bytes:
    return _frame(OP_TEXT, payload)


def pong_frame(payload: bytes) -> bytes:
    return _frame(OP_PONG, payload)


def close_frame(code: int, reason: str = "") -> bytes:
    return _frame(OP_CLOSE, code.to_bytes(2, "big") + reason.encode()[:120])


def close_code(payload: bytes) -> int:
    """The code a close frame carries (NORMAL when it carries none)."""
    return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else NORMAL


class FrameReader:
    """Masked client frames in; whole messages and control frames out, in order.

    A fragmented message is joined (control frames may come between its
    fragments); text must be UTF-8; a message over `max_size` bytes is refused
    as soon as a frame header announces it."""

    __slots__ = ("_buffer", "_fragments", "_opcode", "max_size")

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buffer = b""  # the start of a frame not yet complete
        self._fragments: list[bytes] | None = None  # a fragmented message in progress
        self._opcode = OP_TEXT

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """(opcode, payload) for each message and control frame completed by `data`.
        Raises ProtocolError; the connection is then to be closed with its code."""
        buffer = self._buffer + data if self._buffer else data
        found: list[tuple[int, bytes]] = []
        position, end_of_data = 0, len(buffer)
        while end_of_data - position >= 2:
            first, second = buffer[position], buffer[position + 1]
            final, opcode, length = first & 0x80, first & 0x0F, second & 0x7F
            if first & 0x70:
                raise ProtocolError(PROTOCOL_ERROR, "reserved bits must be 0")
            if not second & 0x80:
                raise ProtocolError(PROTOCOL_ERROR, "a client's frames must be masked")
            header = 2
            if length == 126:
                header = 4
                if end_of_data - position < header:
                    break
                length = int.from_bytes(buffer[position + 2:position + 4], "big")
            elif length == 127:
                header = 10
                if end_of_data - position < header:
                    break
                length = int.from_bytes(buffer[position + 2:position + 10], "big")
            self._check(opcode, final, length)
            start = position + header + 4
            end = start + length
            if end > end_of_data:
                break
            payload = apply_mask(buffer[start:end], buffer[start - 4:start]) if length else b""
            position = end
            if opcode in CONTROL_OPCODES:
                found.append((opcode, payload))
                continue
            if opcode != OP_CONTINUATION:
                self._opcode, self._fragments = opcode, []
            assert self._fragments is not None
            self._fragments.append(payload)
            if final:
                message = b"".join(self._fragments) if len(self._fragments) > 1 else payload
                self._fragments = None
                if self._opcode == OP_TEXT:
                    try:
                        message.decode()
                    except UnicodeDecodeError:
                        raise ProtocolError(INVALID_DATA, "a text message must be UTF-8") from None
                found.append((self._opcode, message))
        self._buffer = buffer[position:] if position < end_of_data else b""
        return found

    def _check(self, opcode: int, final: int, length: int) -> None:
        if opcode in CONTROL_OPCODES:
            if not final or length > 125:
                raise ProtocolError(PROTOCOL_ERROR, "control frames are final and at most 125 bytes")
            return
        if opcode not in DATA_OPCODES:
            raise ProtocolError(PROTOCOL_ERROR, f"invalid opcode {opcode}")
        if opcode == OP_CONTINUATION and self._fragments is None:
            raise ProtocolError(PROTOCOL_ERROR, "a continuation frame without a message to continue")
        if opcode != OP_CONTINUATION and self._fragments is not None:
            raise ProtocolError(PROTOCOL_ERROR, "a new message before the last one was finished")
        so_far = sum(map(len, self._fragments)) if self._fragments else 0
        if so_far + length > self.max_size:
            raise ProtocolError(TOO_BIG, f"a message over {self.max_size} bytes")
