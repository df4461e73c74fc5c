"""Thin I/O shells around `Session`: IRC over TCP and IRC over WebSocket.

Both are plain asyncio protocols (no task per connection) that frame bytes
into lines, hand them to the service, and write whatever bytes the service
gives them. The WebSocket one drives websockets' sans-I/O server protocol.
"""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from websockets.frames import Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from common.irc import LineReader, LineTooLong
from edge.session import Session

if TYPE_CHECKING:
    from edge.service import EdgeService

IRC_SUBPROTOCOL = Subprotocol("irc")
# Large enough for one maximal IRC line per frame plus slack for several lines.
MAX_WS_MESSAGE = 64 * 1024


class ClientConnection(asyncio.Protocol):
    kind = "tcp"
    __slots__ = ("service", "conn_id", "session", "reader", "transport", "peer", "open", "opened_at", "last_input")

    def __init__(self, service: EdgeService) -> None:
        self.service = service
        self.conn_id = service.next_conn_id()
        self.session = Session(service.settings.common.server_name, service.settings.max_channels)
        self.reader = LineReader(service.max_message_bytes)
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.open = False
        self.opened_at = self.last_input = time.monotonic()

    # ---- asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else ""
        self.on_open()

    def on_open(self) -> None:
        self.open = True
        self.service.connection_opened(self)

    def data_received(self, data: bytes) -> None:
        self.last_input = time.monotonic()
        self.handle_lines(self.reader.feed(data))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.open:
            self.open = False
            self.service.connection_closed(self)

    # ---- used by the service
    def handle_lines(self, items: list[str | LineTooLong]) -> None:
        if items:
            self.service.handle_input(self, items)

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(data)
        if transport.get_write_buffer_size() > self.service.settings.send_buffer:
            self.service.slow_consumer(self)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection now: close() would wait for a reader that never comes."""
        if self.transport is not None:
            self.transport.abort()


class WebSocketConnection(ClientConnection):
    kind = "ws"
    __slots__ = ("ws", "_fragments")

    def __init__(self, service: EdgeService) -> None:
        super().__init__(service)
        self.ws = ServerProtocol(
            select_subprotocol=_select_subprotocol,
            max_size=MAX_WS_MESSAGE,
        )
        self._fragments: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not open for chat until the handshake completes.
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else ""

    def data_received(self, data: bytes) -> None:
        self.last_input = time.monotonic()
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Request):
                self._handshake(event)
            elif event.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT) and self.open:
                self._fragments.append(event.data)
                if event.fin:
                    frame = b"".join(self._fragments)
                    self._fragments.clear()
                    # A frame is self-contained: end its last line if it is open.
                    items = self.reader.feed(frame if frame.endswith(b"\n") else frame + b"\n")
                    self.handle_lines(items)
        self._flush()

    def _handshake(self, request: Request) -> None:
        response = self.ws.accept(request)
        self.ws.send_response(response)
        if response.status_code == 101:
            self.on_open()

    def _flush(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        for chunk in self.ws.data_to_send():
            if chunk:
                transport.write(chunk)
            else:  # websockets asks for the TCP connection to be half-closed
                transport.close()
                return
        if self.ws.close_expected():
            transport.close()

    def write(self, data: bytes) -> None:
        if not self.open or self.transport is None or self.transport.is_closing():
            return
        self.ws.send_text(data)
        self._flush()
        if self.transport.get_write_buffer_size() > self.service.settings.send_buffer:
            self.service.slow_consumer(self)

    def close(self) -> None:
        if self.open and self.transport is not None and not self.transport.is_closing():
            try:
                self.ws.send_close(1000, "closing")
            except Exception:  # already closing on the WebSocket level
                pass
            self._flush()
        super().close()


def _select_subprotocol(protocol: ServerProtocol, offered: list[Subprotocol]) -> Subprotocol | None:
    """Echo `irc` when offered (tmi.js aborts otherwise); accept plain clients too."""
    return IRC_SUBPROTOCOL if IRC_SUBPROTOCOL in offered else None

