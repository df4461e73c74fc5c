"""Sans-I/O reader for the PROXY protocol header, versions 1 and 2.

Behind HAProxy every client connection comes from the balancer's address, so
per-address connection limits, rate limits and logs would all see one peer.
With `send-proxy` or `send-proxy-v2` on HAProxy's server line, each connection
starts with a header naming the real client; this module reads that header and
hands back the bytes after it, which belong to the client protocol (IRC, or the
HTTP upgrade of a WebSocket).

Spec: https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt

The reader holds at most one header's worth of bytes (107 for v1,
MAX_V2_HEADER_BYTES for v2) and refuses a connection as soon as its first bytes
cannot begin either signature. The spec forbids guessing, so a listener that
expects the header never falls back to reading the bytes as a client's.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

__all__ = [
    "MAX_V1_HEADER_BYTES",
    "MAX_V2_HEADER_BYTES",
    "V1_SIGNATURE",
    "V2_SIGNATURE",
    "Address",
    "ProxyHeaderReader",
    "ProxyProtocolError",
    "ProxyResult",
]

V1_SIGNATURE = b"PROXY "
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
# The spec's worst case: "PROXY UNKNOWN" with two full IPv6 addresses and ports, CRLF included.
MAX_V1_HEADER_BYTES = 107
# Signature, version/command, family/transport and the 16-bit length.
V2_FIXED_BYTES = 16
# The length field allows 64 KiB of TLVs, but HAProxy's own (ALPN, authority,
# SSL, unique-id) come to well under 1 KiB; more is a broken or hostile sender.
MAX_V2_HEADER_BYTES = V2_FIXED_BYTES + 4096

Address = tuple[str, int]

_V2_LOCAL, _V2_PROXY = 0x0, 0x1
_AF_UNSPEC, _AF_INET, _AF_INET6, _AF_UNIX = 0x0, 0x1, 0x2, 0x3
# Size of the address block that opens the payload, by family.
_V2_ADDRESS_BYTES = {_AF_UNSPEC: 0, _AF_INET: 12, _AF_INET6: 36, _AF_UNIX: 216}
_V2_TRANSPORTS = frozenset({0x0, 0x1, 0x2})  # UNSPEC, STREAM, DGRAM
# The address block's layout and address type, for the families that name an IP client.
_V2_IP_FAMILIES: dict[int, tuple[struct.Struct, type[IPv4Address | IPv6Address]]] = {
    _AF_INET: (struct.Struct("!4s4sHH"), IPv4Address),
    _AF_INET6: (struct.Struct("!16s16sHH"), IPv6Address),
}
_V2_FIXED = struct.Struct("!BBH")

_V1_FAMILIES: dict[bytes, type[IPv4Address | IPv6Address]] = {
    b"TCP4": IPv4Address,
    b"TCP6": IPv6Address,
}
# ipaddress also takes IPv6 scope ids ("fe80::1%eth0"), which the spec does not.
_V1_ADDRESS_CHARS = frozenset(b"0123456789abcdefABCDEF:.")


class ProxyProtocolError(ValueError):
    """A connection whose first bytes are not a well-formed PROXY header."""


@dataclass(frozen=True, slots=True)
class ProxyResult:
    """A complete header.

    `source` and `destination` are None when the sender vouches for no
    addresses (v1 UNKNOWN, v2 LOCAL, v2 UNSPEC or AF_UNIX): the caller then
    uses the socket's own peer. `rest` is what followed the header in the fed
    bytes; it belongs to the client protocol and must be fed onward.
    """

    version: int
    source: Address | None
    destination: Address | None
    rest: bytes


class ProxyHeaderReader:
    """Reads one PROXY header from the start of a connection, fed in any chunks."""

    __slots__ = ("_buf", "_done", "_max_v2")

    def __init__(self, max_v2_header_bytes: int = MAX_V2_HEADER_BYTES) -> None:
        # Room for the largest address block, and no more than the length field can say.
        lowest, highest = V2_FIXED_BYTES + _V2_ADDRESS_BYTES[_AF_UNIX], V2_FIXED_BYTES + 0xFFFF
        if not lowest <= max_v2_header_bytes <= highest:
            raise ValueError(f"max_v2_header_bytes must be in [{lowest}, {highest}]")
        self._max_v2 = max_v2_header_bytes
        self._buf = bytearray()
        self._done = False

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the rest of the header."""
        return len(self._buf)

    def feed(self, data: bytes) -> ProxyResult | None:
        """None while the header is incomplete; raises ProxyProtocolError once it cannot be one."""
        if self._done:
            raise RuntimeError("the PROXY header was already read or refused")
        self._buf += data
        try:
            result = self._parse()
        except ProxyProtocolError:
            self._done = True
            self._buf.clear()
            raise
        if result is not None:
            self._done = True
            self._buf.clear()
        return result

    def _parse(self) -> ProxyResult | None:
        buf = self._buf
        if not buf:
            return None
        # The signatures differ in their first byte, so one byte picks the version.
        if V2_SIGNATURE.startswith(buf[: len(V2_SIGNATURE)]):
            return self._parse_v2() if len(buf) >= V2_FIXED_BYTES else None
        if V1_SIGNATURE.startswith(buf[: len(V1_SIGNATURE)]):
            return self._parse_v1()
        raise ProxyProtocolError("no PROXY protocol signature")

    def _parse_v1(self) -> ProxyResult | None:
        buf = self._buf
        newline = buf.find(b"\n", 0, MAX_V1_HEADER_BYTES)
        if newline < 0:
            if len(buf) >= MAX_V1_HEADER_BYTES:
                raise ProxyProtocolError(f"v1 header without CRLF in {MAX_V1_HEADER_BYTES} bytes")
            return None
        if buf[newline - 1] != ord("\r"):
            raise ProxyProtocolError("v1 header ends in LF without CR")
        parts = bytes(buf[: newline - 1]).split(b" ")
        rest = bytes(buf[newline + 1 :])
        if len(parts) < 2:
            raise ProxyProtocolError("v1 header without a protocol")
        if parts[1] == b"UNKNOWN":
            # The spec says to ignore whatever follows UNKNOWN on the line.
            return ProxyResult(1, None, None, rest)
        family = _V1_FAMILIES.get(parts[1])
        if family is None:
            raise ProxyProtocolError(f"v1 protocol {parts[1]!r} is not TCP4, TCP6 or UNKNOWN")
        if len(parts) != 6:
            raise ProxyProtocolError("v1 header needs two addresses and two ports")
        _, _, src, dst, sport, dport = parts
        source = (_v1_address(family, src), _v1_port(sport))
        return ProxyResult(1, source, (_v1_address(family, dst), _v1_port(dport)), rest)

    def _parse_v2(self) -> ProxyResult | None:
        buf = self._buf
        ver_cmd, fam_proto, length = _V2_FIXED.unpack_from(buf, len(V2_SIGNATURE))
        if ver_cmd >> 4 != 2:
            raise ProxyProtocolError(f"v2 header with version {ver_cmd >> 4}")
        command, family, transport = ver_cmd & 0xF, fam_proto >> 4, fam_proto & 0xF
        if command not in (_V2_LOCAL, _V2_PROXY):
            raise ProxyProtocolError(f"v2 header with command {command}")
        total = V2_FIXED_BYTES + length
        # Checked before waiting, so an absurd length is refused at byte 16, not buffered.
        if total > self._max_v2:
            raise ProxyProtocolError(f"v2 header of {total} bytes exceeds {self._max_v2}")
        if command == _V2_PROXY:
            # LOCAL (a health check from HAProxy itself) ignores the family byte, as HAProxy does.
            if family not in _V2_ADDRESS_BYTES or transport not in _V2_TRANSPORTS:
                raise ProxyProtocolError(f"v2 header with family/transport byte {fam_proto:#04x}")
            if length < _V2_ADDRESS_BYTES[family]:
                raise ProxyProtocolError(f"v2 length {length} is shorter than its address block")
        if len(buf) < total:
            return None
        rest = bytes(buf[total:])
        # TLVs (anything after the address block) carry nothing the edge uses; skipped.
        if command == _V2_LOCAL or family not in _V2_IP_FAMILIES:
            return ProxyResult(2, None, None, rest)
        layout, ip = _V2_IP_FAMILIES[family]
        src, dst, sport, dport = layout.unpack_from(buf, V2_FIXED_BYTES)
        # str() gives the canonical text, so IPv6 comes back compressed.
        return ProxyResult(2, (str(ip(src)), sport), (str(ip(dst)), dport), rest)


def _v1_address(family: type[IPv4Address | IPv6Address], raw: bytes) -> str:
    if not raw or not _V1_ADDRESS_CHARS.issuperset(raw):
        raise ProxyProtocolError(f"v1 address {raw!r} has characters outside an IP address")
    try:
        # str() gives the canonical text, so IPv6 comes back compressed.
        return str(family(raw.decode("ascii")))
    except ValueError:
        raise ProxyProtocolError(f"v1 address {raw!r} is not an {family.__name__}") from None


def _v1_port(raw: bytes) -> int:
    # isdigit() on bytes is ASCII-only; int() alone would take "+80", " 80" and "8_0".
    # The spec forbids leading zeros so that no port reads as octal.
    leading_zero = len(raw) > 1 and raw.startswith(b"0")
    if not raw.isdigit() or leading_zero or len(raw) > 5 or int(raw) > 65535:
        raise ProxyProtocolError(f"v1 port {raw!r} is not a decimal in [0, 65535]")
    return int(raw)
