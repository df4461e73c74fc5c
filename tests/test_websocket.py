"""edge.websocket, the edge's sans-I/O WebSocket handshake and framing, checked
against websockets' own client protocol (frames it makes are read back whole; frames
made here are read by it) and against hand-made frames that break the rules."""
from __future__ import annotations

import base64
import os

import pytest
from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from edge import websocket
from edge.websocket import FrameReader, HandshakeRefused, ProtocolError

KEY = base64.b64encode(b"0123456789abcdef")


def head(*headers: bytes, request_line: bytes = b"GET / HTTP/1.1") -> bytes:
    return b"\r\n".join((request_line, *headers))


UPGRADE = (b"Host: 127.0.0.1", b"Upgrade: websocket", b"Connection: keep-alive, Upgrade",
           b"Sec-WebSocket-Key: " + KEY, b"Sec-WebSocket-Version: 13")


def opened_client() -> ClientProtocol:
    """websockets' client, through a handshake answered by edge.websocket."""
    client = ClientProtocol(parse_uri("ws://127.0.0.1/"), subprotocols=["irc"])
    request = client.connect()
    client.send_request(request)
    raw_request = b"".join(client.data_to_send())
    answer = websocket.handshake(raw_request.split(b"\r\n\r\n")[0])
    client.receive_data(answer)
    [response] = client.events_received()
    assert isinstance(response, Response) and response.status_code == 101
    assert client.subprotocol == "irc"
    return client


def test_websockets_client_accepts_the_handshake_and_reads_our_frames():
    client = opened_client()
    lines = b":tmi.twitch.tv 001 viewer :Welcome, GLHF!\r\n"
    for payload in (lines, lines * 10, lines * 2000):  # 7-bit, 16-bit and 64-bit lengths
        client.receive_data(websocket.text_frame(payload))
        [frame] = client.events_received()
        assert frame.opcode is Opcode.TEXT and frame.data == payload
    client.receive_data(websocket.close_frame(websocket.NORMAL, "closing"))
    [frame] = client.events_received()
    assert frame.opcode is Opcode.CLOSE


def test_frames_from_websockets_client_are_read_whole_however_they_are_cut():
    client = opened_client()
    client.send_text(b"PRIVMSG #chan :hello\r\n")
    client.send_binary(b"PING :x\r\n")
    client.send_text(b"fragmented ", fin=False)
    client.send_ping(b"are you there")
    client.send_continuation(b"message\r\n", fin=True)
    client.send_text(("é" * 40_000).encode())  # 80,000 bytes: a 64-bit length
    wire = b"".join(client.data_to_send())
    expected = [(websocket.OP_TEXT, b"PRIVMSG #chan :hello\r\n"), (websocket.OP_BINARY, b"PING :x\r\n"),
                (websocket.OP_PING, b"are you there"), (websocket.OP_TEXT, b"fragmented message\r\n"),
                (websocket.OP_TEXT, ("é" * 40_000).encode())]
    for cut in (len(wire), 1, 3, 7, 1000):
        reader = FrameReader(max_size=128 * 1024)
        found = []
        for start in range(0, len(wire), cut):
            found += reader.feed(wire[start:start + cut])
        assert found == expected, cut


def masked(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bool = True) -> bytes:
    """A client frame made by hand, rules or no rules."""
    size = len(payload)
    length = bytes((size,)) if size < 126 else bytes((126,)) + size.to_bytes(2, "big") if size < 65536 \
        else bytes((127,)) + size.to_bytes(8, "big")
    key = b"\x01\x02\x03\x04"
    body = bytes(byte ^ key[i % 4] for i, byte in enumerate(payload)) if mask else payload
    return bytes(((0x80 if fin else 0) | rsv | opcode,)) + bytes((length[0] | (0x80 if mask else 0),)) + \
        length[1:] + (key if mask else b"") + body


@pytest.mark.parametrize(("wire", "code"), [
    (masked(1, b"hi", mask=False), websocket.PROTOCOL_ERROR),  # a client's frames are masked
    (masked(1, b"hi", rsv=0x40), websocket.PROTOCOL_ERROR),  # no extension was agreed
    (masked(3, b"hi"), websocket.PROTOCOL_ERROR),  # no such opcode
    (masked(0, b"hi"), websocket.PROTOCOL_ERROR),  # nothing to continue
    (masked(1, b"a", fin=False) + masked(1, b"b"), websocket.PROTOCOL_ERROR),  # unfinished message
    (masked(9, b"x" * 126), websocket.PROTOCOL_ERROR),  # control frames are short …
    (masked(9, b"x", fin=False), websocket.PROTOCOL_ERROR),  # … and whole
    (masked(1, b"\xff\xfe"), websocket.INVALID_DATA),  # text is UTF-8
    (masked(2, b"x" * 70_000)[:14], websocket.TOO_BIG),  # refused from its header alone
    (masked(1, b"x" * 40_000, fin=False) + masked(0, b"x" * 40_000)[:14], websocket.TOO_BIG),
])
def test_frames_that_break_the_rules_close_with_their_code(wire, code):
    with pytest.raises(ProtocolError) as refused:
        FrameReader(max_size=64 * 1024).feed(wire)
    assert refused.value.code == code


def test_close_frames_carry_their_code():
    [(opcode, payload)] = FrameReader(max_size=1024).feed(masked(8, (1001).to_bytes(2, "big") + b"going away"))
    assert opcode == websocket.OP_CLOSE and websocket.close_code(payload) == 1001
    assert websocket.close_code(b"") == websocket.NORMAL


@pytest.mark.parametrize(("request_head", "status"), [
    (head(*UPGRADE, request_line=b"POST / HTTP/1.1"), 400),
    (head(*UPGRADE, request_line=b"GET / HTTP/1.0"), 400),
    (head(*(h for h in UPGRADE if not h.startswith(b"Upgrade"))), 426),
    (head(*(h for h in UPGRADE if not h.startswith(b"Connection"))), 426),
    (head(*(h for h in UPGRADE if not h.startswith(b"Sec-WebSocket-Version")), b"Sec-WebSocket-Version: 8"), 426),
    (head(*(h for h in UPGRADE if not h.startswith(b"Sec-WebSocket-Key")), b"Sec-WebSocket-Key: short"), 400),
    (head(*UPGRADE, b"no colon here"), 400),
])
def test_bad_handshakes_are_refused_with_a_status(request_head, status):
    with pytest.raises(HandshakeRefused) as refused:
        websocket.handshake(request_head)
    assert refused.value.status == status
    answer = websocket.refusal(refused.value.status, refused.value.reason)
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()) and refused.value.reason.encode() in answer


def test_plain_clients_get_no_subprotocol_and_the_accept_key_is_rfc_6455s():
    # RFC 6455 §1.3's example key and answer.
    answer = websocket.handshake(head(b"Upgrade: WebSocket", b"Connection: Upgrade", b"Sec-WebSocket-Version: 13",
                                      b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="))
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in answer
    assert b"Sec-WebSocket-Protocol" not in answer and answer.endswith(b"\r\n\r\n")


def test_random_chunks_never_lose_or_invent_a_message():
    client = opened_client()
    texts = [os.urandom(n).hex() for n in (0, 1, 60, 125, 126, 4000, 65_535)]
    for text in texts:
        client.send_text(text.encode())
    wire = b"".join(client.data_to_send())
    reader, found, position = FrameReader(max_size=256 * 1024), [], 0
    sizes = os.urandom(len(wire))
    while position < len(wire):
        step = 1 + sizes[position] % 300
        found += reader.feed(wire[position:position + step])
        position += step
    assert [payload.decode() for _, payload in found] == texts
