"""Unit tests for the PROXY protocol header reader (edge/proxy_protocol.py).

Every header is fed whole, byte by byte and split at every point, with and
without client bytes behind it; v2 headers are built with struct from the
spec's field layout, and one is pinned against hand-written bytes.
"""
from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address
from typing import NamedTuple

import pytest

from edge.proxy_protocol import (
    MAX_V1_HEADER_BYTES,
    MAX_V2_HEADER_BYTES,
    V2_SIGNATURE,
    Address,
    ProxyHeaderReader,
    ProxyProtocolError,
    ProxyResult,
)

# --- v2 builders, from the spec's section 2.2 layout ------------------------

LOCAL, PROXY = 0x0, 0x1
AF_UNSPEC, AF_INET, AF_INET6, AF_UNIX = 0x0, 0x1, 0x2, 0x3
UNSPEC, STREAM, DGRAM = 0x0, 0x1, 0x2


def v2(
    body: bytes = b"",
    *,
    command: int = PROXY,
    family: int = AF_INET,
    transport: int = STREAM,
    version: int = 2,
    length: int | None = None,
) -> bytes:
    """A v2 header; `length` overrides the true body length to forge bad ones."""
    size = len(body) if length is None else length
    fixed = struct.pack("!BBH", version << 4 | command, family << 4 | transport, size)
    return V2_SIGNATURE + fixed + body


def inet(src: str, dst: str, sport: int, dport: int) -> bytes:
    return struct.pack("!4s4sHH", IPv4Address(src).packed, IPv4Address(dst).packed, sport, dport)


def inet6(src: str, dst: str, sport: int, dport: int) -> bytes:
    return struct.pack("!16s16sHH", IPv6Address(src).packed, IPv6Address(dst).packed, sport, dport)


def tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!BH", kind, len(value)) + value


TLVS = (
    tlv(0x01, b"h2")  # PP2_TYPE_ALPN
    + tlv(0x02, b"irc.example.net")  # PP2_TYPE_AUTHORITY
    + tlv(0x05, b"\x42" * 64)  # PP2_TYPE_UNIQUE_ID
    + tlv(0x04, b"\x00" * 7)  # PP2_TYPE_NOOP
)
CLIENT4 = ("203.0.113.7", 56324)
EDGE4 = ("192.0.2.1", 6667)
FULL6 = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
INET = inet(CLIENT4[0], EDGE4[0], CLIENT4[1], EDGE4[1])


def test_v2_builder_matches_hand_written_bytes() -> None:
    # Guards against the builder and the reader sharing a misreading of the spec.
    expected = (
        b"\r\n\r\n\x00\r\nQUIT\n"
        b"\x21\x11\x00\x0c"  # v2 PROXY, AF_INET STREAM, 12 bytes
        b"\xcb\x00\x71\x07\xc0\x00\x02\x01"  # 203.0.113.7, 192.0.2.1
        b"\xdc\x04\x1a\x0b"  # 56324, 6667
    )
    assert v2(INET) == expected


# --- valid headers ----------------------------------------------------------


class Valid(NamedTuple):
    id: str
    header: bytes
    version: int
    source: Address | None
    destination: Address | None


CLIENT6, EDGE6 = ("2001:db8::7", 56324), ("2001:db8::1", 443)
INET6 = inet6("2001:db8:0:0:0:0:0:7", EDGE6[0], CLIENT6[1], EDGE6[1])
UNIX = b"/run/haproxy.sock".ljust(108, b"\0") * 2
V1_TCP6_LONG = b"PROXY TCP6 2001:0DB8:0000:0000:0000:0000:0000:0007 2001:db8::1 56324 443\r\n"
V1_LONGEST = f"{FULL6} {FULL6} 65535 65535\r\n".encode()

VALID = [
    Valid("v1-tcp4", b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 6667\r\n", 1, CLIENT4, EDGE4),
    Valid("v1-tcp4-port-bounds", b"PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n", 1,
          ("0.0.0.0", 0), ("255.255.255.255", 65535)),
    Valid("v1-tcp6-compressed", V1_TCP6_LONG, 1, CLIENT6, EDGE6),
    Valid("v1-tcp6-longest", b"PROXY TCP6 " + V1_LONGEST, 1, (FULL6, 65535), (FULL6, 65535)),
    Valid("v1-unknown", b"PROXY UNKNOWN\r\n", 1, None, None),
    # Exactly 107 bytes, the spec's worst case; the rest of an UNKNOWN line is ignored.
    Valid("v1-unknown-longest", b"PROXY UNKNOWN " + V1_LONGEST, 1, None, None),
    Valid("v2-proxy-inet", v2(INET), 2, CLIENT4, EDGE4),
    Valid("v2-proxy-inet-dgram", v2(INET, transport=DGRAM), 2, CLIENT4, EDGE4),
    Valid("v2-proxy-inet6", v2(INET6, family=AF_INET6), 2, CLIENT6, EDGE6),
    Valid("v2-proxy-inet-tlvs", v2(INET + TLVS), 2, CLIENT4, EDGE4),
    Valid("v2-proxy-inet6-tlvs", v2(INET6 + TLVS, family=AF_INET6), 2, CLIENT6, EDGE6),
    Valid("v2-local", v2(command=LOCAL, family=AF_UNSPEC, transport=UNSPEC), 2, None, None),
    # LOCAL means "use the socket's endpoints" whatever address block follows.
    Valid("v2-local-with-inet", v2(INET + TLVS, command=LOCAL), 2, None, None),
    # The spec has LOCAL discard the protocol block, family byte included.
    Valid("v2-local-ignores-family", v2(command=LOCAL, family=0xF, transport=0xF), 2, None, None),
    Valid("v2-proxy-unspec", v2(TLVS, family=AF_UNSPEC, transport=UNSPEC), 2, None, None),
    Valid("v2-proxy-unix", v2(UNIX + TLVS, family=AF_UNIX), 2, None, None),
]

TRAILERS = {
    "none": b"",
    "irc": b"NICK justinfan1\r\nCAP REQ :twitch.tv/tags\r\n",
    "ws-upgrade": (
        b"GET / HTTP/1.1\r\nHost: irc-ws.chat.example\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    ),
    # A second header-like run is client data, not re-read as a header.
    "header-lookalike": b"PROXY TCP4 1.1.1.1 2.2.2.2 1 2\r\n" + V2_SIGNATURE,
    # Far past either bound: a large first read must not be mistaken for a long header.
    "large": b"PRIVMSG #c :" + b"x" * 100_000 + b"\r\n",
}


def bound(wire: bytes) -> int:
    return MAX_V1_HEADER_BYTES if wire.startswith(b"P") else MAX_V2_HEADER_BYTES


def check(result: ProxyResult | None, case: Valid, rest: bytes) -> None:
    assert result == ProxyResult(case.version, case.source, case.destination, rest)


@pytest.mark.parametrize("trailer", TRAILERS.values(), ids=TRAILERS.keys())
@pytest.mark.parametrize("case", VALID, ids=[c.id for c in VALID])
def test_valid_whole_returns_trailing_bytes_in_rest(case: Valid, trailer: bytes) -> None:
    reader = ProxyHeaderReader()
    check(reader.feed(case.header + trailer), case, trailer)
    assert reader.buffered == 0


@pytest.mark.parametrize("case", VALID, ids=[c.id for c in VALID])
def test_valid_byte_by_byte_stays_within_bound(case: Valid) -> None:
    reader = ProxyHeaderReader()
    for byte in case.header[:-1]:
        assert reader.feed(bytes([byte])) is None
        assert reader.buffered <= bound(case.header)
    check(reader.feed(case.header[-1:]), case, b"")
    assert reader.buffered == 0


@pytest.mark.parametrize("case", VALID, ids=[c.id for c in VALID])
def test_valid_split_at_every_point_keeps_client_bytes(case: Valid) -> None:
    trailer = TRAILERS["irc"]
    wire = case.header + trailer
    for split in range(len(wire) + 1):
        reader = ProxyHeaderReader()
        first = reader.feed(wire[:split])
        if split < len(case.header):
            assert first is None
            check(reader.feed(wire[split:]), case, trailer)
        else:
            # Complete in the first chunk: the caller forwards the second chunk itself.
            check(first, case, wire[len(case.header):split])


def test_v1_longest_cases_are_at_the_spec_bounds() -> None:
    # The table's "longest" rows really probe the limits they claim to.
    by_id = {c.id: c for c in VALID}
    assert len(by_id["v1-unknown-longest"].header) == MAX_V1_HEADER_BYTES == 107
    assert len(by_id["v1-tcp6-longest"].header) == 104
    assert len(next(c for c in MALFORMED if c.id == "v1-crlf-at-byte-108").wire) == 108


def test_v2_large_tlvs_need_a_raised_bound() -> None:
    header = v2(INET + tlv(0x04, b"\0" * 8000))
    with pytest.raises(ProxyProtocolError, match="exceeds"):
        ProxyHeaderReader().feed(header)
    reader = ProxyHeaderReader(max_v2_header_bytes=16 + 0xFFFF)
    assert reader.feed(header + b"PING\r\n") == ProxyResult(2, CLIENT4, EDGE4, b"PING\r\n")


@pytest.mark.parametrize("bad", [16 + 215, 16 + 0x10000])
def test_v2_bound_must_fit_addresses_and_length_field(bad: int) -> None:
    with pytest.raises(ValueError, match="max_v2_header_bytes"):
        ProxyHeaderReader(max_v2_header_bytes=bad)


def test_empty_feed_waits() -> None:
    reader = ProxyHeaderReader()
    assert reader.feed(b"") is None
    assert reader.buffered == 0


def test_feed_after_result_or_error_is_refused() -> None:
    done = ProxyHeaderReader()
    assert done.feed(b"PROXY UNKNOWN\r\n") is not None
    failed = ProxyHeaderReader()
    with pytest.raises(ProxyProtocolError):
        failed.feed(b"NICK justinfan1\r\n")
    for reader in (done, failed):
        with pytest.raises(RuntimeError):
            reader.feed(b"NICK justinfan1\r\n")


# --- malformed headers ------------------------------------------------------


class Malformed(NamedTuple):
    id: str
    wire: bytes
    fails_at: int  # fed byte by byte, the byte count at which it must be refused
    reason: str  # a fragment of the error message


def _whole(id: str, wire: bytes, reason: str) -> Malformed:
    # Refused only once the CRLF is in: v1 fields are judged on the whole line.
    return Malformed(id, wire, len(wire), reason)


def _v1(id: str, fields: str, reason: str) -> Malformed:
    return _whole(f"v1-{id}", f"PROXY {fields}\r\n".encode(), reason)


V1_BAD_LINES = [
    _v1("empty-protocol", "", "protocol"),
    _v1("tcp5", "TCP5 203.0.113.7 192.0.2.1 56324 6667", "protocol"),
    _v1("lowercase-tcp4", "tcp4 203.0.113.7 192.0.2.1 56324 6667", "protocol"),
    _v1("missing-port", "TCP4 203.0.113.7 192.0.2.1 56324", "two addresses"),
    _v1("extra-field", "TCP4 203.0.113.7 192.0.2.1 56324 6667 7", "two addresses"),
    _v1("double-space", "TCP4 203.0.113.7  192.0.2.1 56324 6667", "two addresses"),
    _v1("trailing-space", "TCP4 203.0.113.7 192.0.2.1 56324 6667 ", "two addresses"),
    _v1("octet-256", "TCP4 256.0.113.7 192.0.2.1 56324 6667", "address"),
    _v1("three-octets", "TCP4 203.0.113 192.0.2.1 56324 6667", "address"),
    _v1("octet-leading-zero", "TCP4 203.0.113.07 192.0.2.1 56324 6667", "address"),
    _v1("tcp4-with-ipv6", "TCP4 2001:db8::7 192.0.2.1 56324 6667", "address"),
    _v1("tcp6-with-ipv4", "TCP6 203.0.113.7 2001:db8::1 56324 6667", "address"),
    _v1("two-double-colons", "TCP6 2001:db8::7 2001:db8::1::2 56324 6667", "address"),
    _v1("ipv6-scope-id", "TCP6 fe80::1%eth0 2001:db8::1 56324 6667", "address"),
    _v1("non-ascii-digit", "TCP4 203.0.113.\u0667 192.0.2.1 56324 6667", "address"),
    _v1("port-65536", "TCP4 203.0.113.7 192.0.2.1 65536 6667", "port"),
    _v1("port-six-digits", "TCP4 203.0.113.7 192.0.2.1 056324 6667", "port"),
    _v1("port-leading-zero", "TCP4 203.0.113.7 192.0.2.1 08 6667", "port"),
    _v1("port-plus-sign", "TCP4 203.0.113.7 192.0.2.1 +80 6667", "port"),
    _v1("port-underscore", "TCP4 203.0.113.7 192.0.2.1 5_6 6667", "port"),
    _v1("port-negative", "TCP4 203.0.113.7 192.0.2.1 -1 6667", "port"),
    _v1("port-hex", "TCP4 203.0.113.7 192.0.2.1 56324 0x1a", "port"),
    _v1("cr-cr-lf", "TCP4 203.0.113.7 192.0.2.1 56324 6667\r", "port"),
]

MALFORMED = [
    Malformed("irc-without-header", b"NICK justinfan1\r\n", 1, "signature"),
    Malformed("http-without-header", b"GET / HTTP/1.1\r\n\r\n", 1, "signature"),
    Malformed("tls-client-hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 1, "signature"),
    Malformed("v1-signature-typo", b"PROXX TCP4 203.0.113.7 192.0.2.1 1 2\r\n", 5, "signature"),
    Malformed("v1-lowercase", b"proxy TCP4 203.0.113.7 192.0.2.1 1 2\r\n", 1, "signature"),
    Malformed("v2-signature-typo", V2_SIGNATURE[:11] + b"X" + v2(INET)[12:], 12, "signature"),
    Malformed("v1-no-crlf-in-107", b"PROXY UNKNOWN " + b"a" * 500 + b"\r\n", 107, "107"),
    # One byte past the worst case: the LF is the 108th byte.
    Malformed("v1-crlf-at-byte-108", b"PROXY UNKNOWN 0" + V1_LONGEST, 107, "107"),
    _whole("v1-lf-without-cr", b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 6667\n", "without CR"),
    Malformed("v1-no-space-after-proxy", b"PROXY\r\n", 6, "signature"),
    *V1_BAD_LINES,
    Malformed("v2-version-1", v2(INET, version=1), 16, "version"),
    Malformed("v2-version-3", v2(INET, version=3), 16, "version"),
    Malformed("v2-command-2", v2(INET, command=2), 16, "command"),
    Malformed("v2-family-5", v2(INET, family=5), 16, "family"),
    Malformed("v2-transport-3", v2(INET, transport=3), 16, "family"),
    Malformed("v2-inet-short", v2(INET[:8]), 16, "shorter"),
    Malformed("v2-inet6-with-inet-block", v2(INET, family=AF_INET6), 16, "shorter"),
    Malformed("v2-unix-short", v2(INET, family=AF_UNIX), 16, "shorter"),
    Malformed("v2-absurd-length", v2(INET, length=0xFFFF), 16, "exceeds"),
    Malformed("v2-one-past-bound", v2(INET, length=MAX_V2_HEADER_BYTES - 15), 16, "exceeds"),
]


@pytest.mark.parametrize("case", MALFORMED, ids=[c.id for c in MALFORMED])
def test_malformed_whole_is_refused(case: Malformed) -> None:
    reader = ProxyHeaderReader()
    with pytest.raises(ProxyProtocolError, match=case.reason):
        reader.feed(case.wire + TRAILERS["irc"])
    assert reader.buffered == 0


@pytest.mark.parametrize("case", MALFORMED, ids=[c.id for c in MALFORMED])
def test_malformed_byte_by_byte_is_refused_early_within_bound(case: Malformed) -> None:
    reader = ProxyHeaderReader()
    wire = case.wire + TRAILERS["irc"]
    for byte in wire[: case.fails_at - 1]:
        assert reader.feed(bytes([byte])) is None
        assert reader.buffered <= bound(case.wire)
    with pytest.raises(ProxyProtocolError, match=case.reason):
        reader.feed(wire[case.fails_at - 1 : case.fails_at])
    assert reader.buffered == 0


def test_flood_without_crlf_is_refused_in_the_first_chunk() -> None:
    reader = ProxyHeaderReader()
    with pytest.raises(ProxyProtocolError, match="107"):
        reader.feed(b"PROXY " + b"A" * 4096)
    assert reader.buffered == 0

