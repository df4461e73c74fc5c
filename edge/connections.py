"""Thin I/O shells around `Session`: IRC over TCP and IRC over WebSocket.

Both are plain asyncio protocols (no task per connection) that frame bytes
into lines, hand them to their host (the edge service, through the small
`ConnectionHost` interface), and write whatever bytes the host gives them. The
WebSocket one drives edge.websocket's sans-I/O handshake and framing. Behind a proxy that
speaks the PROXY protocol, the first bytes name the real client.
"""
from __future__ import annotations

import asyncio
import time
from typing import Protocol

import structlog

from common.irc import LineReader, LineTooLong
from edge import websocket
from edge.proxy_protocol import ProxyHeaderReader, ProxyProtocolError
from edge.session import Session

log = structlog.get_logger()

# Large enough for one maximal IRC line per frame plus slack for several lines.
MAX_WS_MESSAGE = 64 * 1024
# The first request's head on the WebSocket port, read before deciding who serves it.
MAX_HEADER_LINE = 8190  # aiohttp's limit on one request or header line
MAX_REQUEST_HEAD = 16 * 1024


class ConnectionHost(Protocol):
    """What a connection needs from the service that holds it."""

    server_name: str
    max_channels: int
    join_limit: int
    trusted_proxies: frozenset[str]
    max_message_bytes: int
    send_buffer: int

    def next_conn_id(self) -> int: ...
    def connection_made(self, conn: ClientConnection) -> None: ...
    def admit(self, conn: ClientConnection) -> str | None: ...
    def connection_opened(self, conn: ClientConnection) -> None: ...
    def connection_closed(self, conn: ClientConnection) -> None: ...
    def handle_input(self, conn: ClientConnection, items: list[str | LineTooLong]) -> None: ...
    def slow_consumer(self, conn: ClientConnection) -> None: ...
    def hand_off(self, conn: ClientConnection, data: bytes) -> None: ...


class ClientConnection(asyncio.Protocol):
    """IRC over TCP. Lifecycle: made → (PROXY header) → admitted → open → closed."""

    kind = "tcp"
    __slots__ = (
        "_proxy",
        "admitted",
        "conn_id",
        "host",
        "inflight",
        "last_input",
        "open",
        "opened_at",
        "paused",
        "peer",
        "reader",
        "session",
        "transport",
    )

    def __init__(self, host: ConnectionHost, proxy_protocol: bool = False) -> None:
        self.host = host
        self.conn_id = host.next_conn_id()
        self.session = Session(host.server_name, host.max_channels, host.join_limit)
        self.reader = LineReader(host.max_message_bytes)
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.admitted = False  # counted against its address, watched by the registration timeout
        self.open = False  # ready for chat
        self.opened_at = self.last_input = time.monotonic()
        self.inflight = 0  # submissions waiting for their outcome
        self.paused = False
        self._proxy = ProxyHeaderReader() if proxy_protocol else None

    # ---- asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else ""
        self.host.connection_made(self)
        if self._proxy is None:
            self._admit()
        elif self.peer not in self.host.trusted_proxies:
            # Only a trusted proxy may say who the client is.
            log.warning("proxy_untrusted", peer=self.peer)
            self.abort()

    def _admit(self) -> None:
        refusal = self.host.admit(self)
        self.admitted = refusal is None
        if refusal is None:
            self.on_admitted()
        else:
            self.refuse(refusal)

    def on_admitted(self) -> None:
        self.on_open()

    def refuse(self, reason: str) -> None:
        """Turned away at the door: say why (a NOTICE), then close."""
        self.write(f":{self.host.server_name} NOTICE * :{reason}\r\n".encode())
        self.close()

    def on_open(self) -> None:
        self.open = True
        self.host.connection_opened(self)

    def data_received(self, data: bytes) -> None:
        self.last_input = time.monotonic()
        if self._proxy is not None:
            data = self._read_proxy_header(data)
            if not data:
                return
        self.received(data)

    def received(self, data: bytes) -> None:
        self.handle_lines(self.reader.feed(data))

    def _read_proxy_header(self, data: bytes) -> bytes:
        """Bytes after the PROXY header once it is complete (b"" until then)."""
        assert self._proxy is not None
        try:
            header = self._proxy.feed(data)
        except ProxyProtocolError as exc:
            log.warning("proxy_header_refused", peer=self.peer, reason=str(exc))
            self.abort()
            return b""
        if header is None:
            return b""
        self._proxy = None
        if header.source is not None:
            self.peer = header.source[0]
        self._admit()
        return header.rest if self.admitted or self.kind == "ws" else b""

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        self.host.connection_closed(self)

    # ---- used by the service
    def handle_lines(self, items: list[str | LineTooLong]) -> None:
        if items:
            self.host.handle_input(self, items)

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(data)
        if transport.get_write_buffer_size() > self.host.send_buffer:
            self.host.slow_consumer(self)

    def pause(self, paused: bool) -> None:
        """Stop (or resume) reading from the client: backpressure on input."""
        if paused == self.paused or self.transport is None or self.transport.is_closing():
            return
        self.paused = paused
        if paused:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection now: close() would wait for a reader that never comes."""
        if self.transport is not None:
            self.transport.abort()


class WebSocketConnection(ClientConnection):
    """IRC over WebSocket: open for chat once the handshake is done (edge.websocket)."""

    kind = "ws"
    __slots__ = ("_frames", "_head", "_refusal")

    def __init__(self, host: ConnectionHost, proxy_protocol: bool = False) -> None:
        super().__init__(host, proxy_protocol)
        self._frames: websocket.FrameReader | None = None  # once open
        self._refusal: str | None = None
        self._head: bytes | None = b""  # until the first request's head is read (None after)

    def on_admitted(self) -> None:
        pass  # not open for chat until the handshake completes

    def refuse(self, reason: str) -> None:
        # Said as the HTTP answer to its handshake, which is still to come.
        self._refusal = reason

    def received(self, data: bytes) -> None:
        if self._head is not None:
            if self._head:  # a head that came in pieces (most come whole, in one read)
                data = self._head + data
            end = data.find(b"\r\n\r\n")
            if end < 0:
                if len(data) > MAX_REQUEST_HEAD:
                    self.abort()
                else:
                    self._head = data
                return
            self._head = None
            head, data = data[:end], data[end + 4:]
            if self._refusal is None and not is_irc_upgrade(head):
                # Not IRC over WebSocket: the edge's HTTP surface (API, EventSub, the page) serves it,
                # unless a header line is longer than its parser takes (it would log a traceback).
                if max(len(line) for line in head.split(b"\r\n")) > MAX_HEADER_LINE:
                    self._answer_and_close(websocket.refusal(431, "A request header line is too long"))
                else:
                    self.host.hand_off(self, head + b"\r\n\r\n" + data)
                return
            if not self._handshake(head):
                return
        if self._frames is None:
            return  # closing
        try:
            messages = self._frames.feed(data)
        except websocket.ProtocolError as exc:
            log.warning("websocket_protocol_error", conn=self.conn_id, peer=self.peer, reason=exc.reason)
            self._close_with(exc.code, exc.reason)
            return
        for opcode, payload in messages:
            if opcode in (websocket.OP_TEXT, websocket.OP_BINARY):
                if self.open:
                    # A message is self-contained: end its last line if it is open.
                    self.handle_lines(self.reader.feed(payload if payload.endswith(b"\n") else payload + b"\n"))
            elif opcode == websocket.OP_PING:
                self._send(websocket.pong_frame(payload))
            elif opcode == websocket.OP_CLOSE:
                self._close_with(websocket.close_code(payload))  # the closing handshake's answer
                return

    def _handshake(self, head: bytes) -> bool:
        """Answer the upgrade request; whether the connection is now open."""
        if self._refusal is not None:
            self._answer_and_close(websocket.refusal(429, self._refusal))
            return False
        try:
            response = websocket.handshake(head)
        except websocket.HandshakeRefused as exc:
            self._answer_and_close(websocket.refusal(exc.status, exc.reason))
            return False
        self._send(response)
        self._frames = websocket.FrameReader(MAX_WS_MESSAGE)
        self.on_open()
        return True

    def _answer_and_close(self, response: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(response)
            self.transport.close()

    def _send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _close_with(self, code: int, reason: str = "") -> None:
        """Send a close frame and end the connection (nothing more is read or written)."""
        self.open = False
        self._frames = None
        self._answer_and_close(websocket.close_frame(code, reason))

    def write(self, data: bytes) -> None:
        if not self.open or self.transport is None or self.transport.is_closing():
            return
        self.transport.write(websocket.text_frame(data))
        if self.transport.get_write_buffer_size() > self.host.send_buffer:
            self.host.slow_consumer(self)

    def close(self) -> None:
        if self.open:
            self._close_with(websocket.NORMAL, "closing")
        super().close()


def is_irc_upgrade(head: bytes) -> bool:
    """A WebSocket upgrade of `/`: IRC over WebSocket (anything else is for the HTTP app)."""
    request_line, _, headers = head.partition(b"\r\n")
    parts = request_line.split(b" ")
    if len(parts) != 3 or parts[0] != b"GET" or parts[1].split(b"?", 1)[0] != b"/":
        return False
    for header in headers.split(b"\r\n"):
        name, _, value = header.partition(b":")
        if name.strip().lower() == b"upgrade" and value.strip().lower() == b"websocket":
            return True
    return False
