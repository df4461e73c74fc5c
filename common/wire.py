"""Every message that crosses a process boundary between chatd services.

One typed definition per message (msgspec Structs) and one codec. A chat event
is formatted once, by the clue that accepts it: `line` is the IRC line without
tags and `tags` Twitch's tag string, already escaped, so an edge writes
`@{tags} {line}` or `{line}` without re-serializing anything, and the exchange
reads sender, text and time as fields instead of parsing lines back.

    edge → clue        LoginRequest → LoginReply, JoinRequest → JoinReply,
                       SubmitBatch → SubmitResults, TailRequest → EventRange,
                       SessionRequest → SessionSubscriptions (EventSub sessions),
                       HistoryRequest → HistoryReply (CHATHISTORY), PresenceBatch (who is in a channel)
    exchange → Redis   HistoryEntry (history, read back by clue), Highlight and HighlightState
                       (stream highlights, read back by clue and by the exchange after a restart),
                       WebhookDelivery (the webhooks' outbox)
                       SessionRecord, MinuteStats, LiveState (stream sessions, read back by
                       clue and `chatd sessions`)
    exchange → webhook Highlight (also what `chatd highlights watch` prints and posts)
    clue → exchange    PublishBatch → PublishReply, MoveRequest, LookupRequest → LookupReply
    edge → exchange    SubscribeRequest / SyncRequest / HeartbeatRequest → SubscriptionReply,
                       RangeRequest → EventRange, OutcomeRequest → OutcomeReply
    exchange → edge    DeliverBatch → DeliverReply
    any service → edge MetricsReply (its last minutes of metrics), and from clue ShardsReply,
                       RouteList (RouteChange moves a channel), ModerationLog (the operator console)
    clue → Redis       ModerationEntry (a channel's moderation log)
"""
from __future__ import annotations

from typing import Any, TypeVar

import msgspec

T = TypeVar("T")

DecodeError = (msgspec.DecodeError, msgspec.ValidationError)


class Identity(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """Who a logged-in connection is, as its token says."""

    login: str
    user_id: str
    display_name: str
    color: str = ""
    subscriber: bool = False
    bot: str = ""  # "", "known" or "verified": Twitch's bot status, which sets the rate profile


class Notify(msgspec.Struct, array_like=True, gc=False):
    """An EventSub event an Event also is: its type and its `event` object, encoded once."""

    type: str
    event: msgspec.Raw


class Subscription(msgspec.Struct, omit_defaults=True):
    """An EventSub subscription as an edge delivers it."""

    id: str
    type: str
    version: str
    condition: dict[str, str]
    transport: dict[str, str]  # as Helix shows it: method and session_id (or conduit_id)
    created_at: str
    channel: str  # the stream its events come through: a chat channel, or a user's whisper inbox
    shard: int = 0  # conduits: this session serves events whose channel hashes to this shard
    shards: int = 1
    created_ms: int = 0  # when it was made: its first notifications are of what was said since


class Control(msgspec.Struct, omit_defaults=True):
    """For the edge holding an EventSub session: add, remove or revoke a
    subscription, or `shard`: the session now serves a conduit's shard (it is in
    use, with or without subscriptions)."""

    op: str
    subscription: Subscription | None = None
    status: str = ""  # a revocation's reason (authorization_revoked, user_removed, …)


class Broadcast(msgspec.Struct, array_like=True, gc=False):
    """A `minute_broadcast`: channel `channel_id` was live at `time` (seconds since the
    epoch, UTC) — from the broadcaster's software, or (`source` "chat") a minute with chat."""

    channel_id: str
    time: int
    source: str = "broadcast"


class Event(msgspec.Struct, omit_defaults=True, gc=False):
    """One thing that happened in a channel, in its one order: an IRC line
    (PRIVMSG, CLEARCHAT, ROOMSTATE, WHISPER, …), the EventSub events it also is,
    or a control message for an EventSub session."""

    channel: str
    command: str
    line: str  # the IRC line without tags
    tags: str = ""  # Twitch's tags, escaped: the tagged line is "@" + tags + " " + line
    id: str = ""  # message id (chat, whispers): idempotent publishing, /delete
    login: str = ""  # the sender of chat
    user_id: str = ""  # … and its user id
    target: str = ""  # whom moderation aims at: CLEARCHAT's user id, CLEARMSG's message id
    text: str = ""
    sent_ms: int = 0
    origin: str = ""  # "<edge id>/<connection id>" that sent it: not echoed back there
    seq: int = 0  # the channel's sequence number, given by the exchange
    gen: int = 0  # the exchange's generation of the channel's stream (state evicted → new one)
    rv: int = 0  # the route version the publishing clue knew (live moves)
    notify: list[Notify] = []  # EventSub events, built by clue only for types someone subscribed to
    control: Control | None = None
    broadcast: Broadcast | None = None  # a minute_broadcast (no IRC line: edges skip it)


class Moved(msgspec.Struct, gc=False):
    """Everything ordered for `channel` before this marker has been sent; it lives in `cluster` now."""

    channel: str
    cluster: str
    version: int


class Position(msgspec.Struct, array_like=True, gc=False):
    """How far an edge has delivered a channel's stream."""

    boot: str
    gen: int
    seq: int


# ---- edge → clue


class LoginRequest(msgspec.Struct):
    token: str


class LoginReply(msgspec.Struct):
    identity: Identity


class JoinRequest(msgspec.Struct):
    channel: str
    identity: Identity | None = None
    names: bool = False  # the connection takes twitch.tv/membership: list who is there


class JoinReply(msgspec.Struct, omit_defaults=True):
    ok: bool
    msg_id: str = ""
    room_state: dict[str, str] = {}
    user_state: dict[str, str] = {}
    cluster: str = "main"
    names: list[str] = []  # logins present (NAMES), when asked for and the channel is small enough


class JoinBatch(msgspec.Struct):
    """The JOINs an edge has for one clue in a loop tick: one request however many
    clients join at once (a JOIN storm is thousands)."""

    joins: list[JoinRequest]


class JoinResults(msgspec.Struct):
    results: list[JoinReply]  # one per JOIN, in order


class PresenceChange(msgspec.Struct, array_like=True, gc=False):
    """A logged-in user came into (or left) a channel on an edge."""

    channel: str
    login: str
    user_id: str
    present: bool


class PresenceBatch(msgspec.Struct):
    """An edge's presence changes of one tick; `refresh`: members it still has, re-asserted."""

    changes: list[PresenceChange]
    refresh: bool = False


class Submission(msgspec.Struct, omit_defaults=True, gc=False):
    """A chat line a user sent; `id` is chosen by the edge and stays the same on every retry."""

    id: str
    channel: str
    text: str
    identity: Identity
    origin: str = ""
    client_tags: dict[str, str] = {}


class SubmitBatch(msgspec.Struct):
    messages: list[Submission]


class Outcome(msgspec.Struct, omit_defaults=True, gc=False):
    """What happened to a submission: accepted chat carries the sender's USERSTATE
    tags; a refusal or a command's answer carries a NOTICE msg-id and text.
    `unknown`: it may or may not have been published; ask again with the same id."""

    ok: bool
    msg_id: str = ""
    text: str = ""
    user_state: dict[str, str] | None = None
    unknown: bool = False


class SubmitResults(msgspec.Struct):
    results: list[Outcome]


class TailRequest(msgspec.Struct):
    """What this clue published to `exchange` during its boot `boot`, per channel
    after the sequence number given."""

    exchange: str
    boot: str
    after: dict[str, int]


class Handover(msgspec.Struct):
    """Where a draining edge stopped delivering a session's channels, before it told the client to
    reconnect: the edge that takes the session over goes on from there (nothing twice, nothing missed)."""

    parked_ms: int  # when it stopped
    positions: dict[str, Position] = {}  # by channel; a channel not here is caught up from parked_ms


class SessionRequest(msgspec.Struct):
    """An edge opens, closes, parks (`handover`, when draining) or takes over (after a reconnect)
    an EventSub WebSocket session. `owner` names the connection holding it: a close from a
    connection that no longer does (the session moved on) changes nothing."""

    session_id: str
    owner: str
    handover: Handover | None = None


class SessionSubscriptions(msgspec.Struct):
    subscriptions: list[Subscription]
    handover: Handover | None = None  # a take: where the draining edge stopped


class HistoryEntry(msgspec.Struct, omit_defaults=True, gc=False):
    """One line of a channel's history as it is kept in Redis (the exchange writes
    it in the channel's order; clue reads it for recent-messages and CHATHISTORY)."""

    ts: int  # when the exchange ordered it, ms since the epoch (`rm-received-ts`)
    command: str
    line: str  # the tagged line as clients received it
    id: str = ""
    user_id: str = ""
    target: str = ""
    sent_ms: int = 0  # tmi-sent-ts: IRCv3 `time`


class Highlight(msgspec.Struct, gc=False):
    """A moment a channel's chat rate jumped (analytics/highlights.py). The id is
    the channel and the window's start, so a redelivery or a restart keeps it.
    Stored under `{hl:<#chan>}` (a sorted set scored by window_start_ms), listed by
    `GET /api/v1/channels/{c}/highlights`, and the body of every webhook delivery."""

    id: str
    channel: str
    window_start_ms: int
    window_end_ms: int
    rate: float  # messages per second in the window
    baseline: float  # the moving average of the rate before it
    score: float  # how far the rate jumped, in baselines (the comparison the detector is set to)
    messages: int  # messages in the window
    message_ids: list[str]  # the "chat clip": the window's message ids, in the channel's order (capped)


class HighlightState(msgspec.Struct, array_like=True, gc=False):
    """What the detector keeps of a channel across a restart of its exchange:
    the counts of the last closed windows (-1: a window it did not see whole)."""

    window_ms: int
    closed: int  # index of the last closed window (start = index × window_ms)
    counts: list[int]  # windows closed-len+1 … closed
    last: int  # window of the last highlight


class WebhookDelivery(msgspec.Struct, gc=False):
    """One highlight owed to one webhook, in the outbox until it is delivered."""

    url: str
    body: msgspec.Raw  # the Highlight, encoded once
    attempts: int = 0
    queued_ms: int = 0
class EmoteCount(msgspec.Struct, array_like=True, gc=False):
    id: str
    name: str
    count: int


class SessionSummary(msgspec.Struct, gc=False):
    """What happened in a stream session's chat (analytics.summaries)."""

    messages: int = 0
    unique_chatters: int = 0
    first_time_chatters: int = 0  # messages tagged first-msg=1: each a chatter's first in the channel
    peak_messages_per_minute: int = 0
    highlights: int = 0  # highlights whose window starts inside the session
    top_highlights: list[str] = []  # their ids, best score first (at most five)
    top_emotes: list[EmoteCount] = []


class SessionRecord(msgspec.Struct, omit_defaults=True, gc=False):
    """One stream session as stored (`{ss:<channel id>}`), the seed's record plus its summary."""

    channel_id: str
    channel: str  # the channel's name, where its chat and highlights are kept
    start: int  # seconds since the epoch, UTC
    end: int  # an open session: the end of its last live minute so far
    open: bool = False
    summary: SessionSummary | None = None


class MinuteStats(msgspec.Struct, omit_defaults=True, gc=False):
    """A channel's chat in one minute, as an exchange counted it (summaries fold these)."""

    minute: int  # its start, seconds since the epoch
    messages: int = 0
    first_time: int = 0
    chatters: list[str] = []  # user ids
    emotes: dict[str, int] = {}  # emote id → uses
    names: dict[str, str] = {}  # emote id → its text
    writer: str = ""  # which exchange boot, and its flush: two flushes of a minute both count


class LiveState(msgspec.Struct, gc=False):
    """What an exchange holds of a channel's live session, kept across its restarts:
    the open run ([start, last event, piece start, next cut], analytics.sessions) and
    the events still waiting out the lateness."""

    channel: str
    run: list[int] | None = None
    pending: list[int] = []


class HistoryRequest(msgspec.Struct):
    """An edge's CHATHISTORY: what the channel said around a reference."""

    channel: str
    subcommand: str  # LATEST, BEFORE, AFTER, AROUND, BETWEEN
    references: list[str]  # `*`, `msgid=…` or `timestamp=…`, as the client sent them
    limit: int


class HistoryReply(msgspec.Struct):
    entries: list[HistoryEntry]


# ---- clue → exchange

# PublishReply.seqs: a sequence number, or one of these.
FORWARDED = 0  # the channel moved: handed to its new exchange, which orders it
CLOSED = -1  # the id was settled as never published (OutcomeRequest): refused


class PublishBatch(msgspec.Struct):
    events: list[Event]


class PublishReply(msgspec.Struct):
    boot: str
    seqs: list[int]


class MoveRequest(msgspec.Struct):
    channel: str
    cluster: str
    version: int
    to: str


class LookupRequest(msgspec.Struct):
    channel: str
    id: str


class LookupReply(msgspec.Struct):
    login: str
    text: str
    sent_ms: int


# ---- edge → exchange


class SubscribeOp(msgspec.Struct, omit_defaults=True, gc=False):
    channel: str
    add: bool = True
    replay_from_version: int = 0  # after a live move: what was ordered since this route version


class RecentRequest(msgspec.Struct):
    """What a channel's stream ordered in the last `seconds` (an EventSub session
    taken over from a draining edge catches up with it)."""

    channel: str
    seconds: float


class SubscribeRequest(msgspec.Struct):
    edge: str
    ops: list[SubscribeOp]


class SyncRequest(msgspec.Struct):
    """Replace everything the exchange holds for this edge; replay what each
    channel's stream has ordered since the edge's position (none: no replay)."""

    edge: str
    channels: dict[str, Position | None]


class HeartbeatRequest(msgspec.Struct):
    edge: str
    count: int


class SubscriptionReply(msgspec.Struct, omit_defaults=True):
    boot: str
    count: int
    # Channels just added: where their stream stands, so the edge can tell a gap.
    streams: dict[str, Position] = {}


class RangeRequest(msgspec.Struct):
    channel: str
    boot: str
    gen: int
    after: int
    before: int


class EventRange(msgspec.Struct):
    events: list[Event]
    complete: bool


class OutcomeRequest(msgspec.Struct):
    """Settle submissions whose fate is unknown: were they ordered? Those that
    were not can never be from now on."""

    channel: str
    ids: list[str]


class OutcomeReply(msgspec.Struct):
    seqs: list[int]  # a sequence number, or CLOSED


# ---- exchange → edge


class DeliverBatch(msgspec.Struct):
    boot: str
    events: list[Event]
    moves: list[Moved] = []


class DeliverReply(msgspec.Struct):
    delivered: int


# ---- what the operator console reads (edge/console.py asks every service)


class TimerSummary(msgspec.Struct, array_like=True, gc=False):
    count: int
    p50: float  # milliseconds
    p99: float
    max: float


class MetricsSample(msgspec.Struct, gc=False):
    """One flush of a process's metrics (common.metrics), kept in process beside the statsd export."""

    t: int  # when it was flushed, ms since the epoch
    seconds: float  # the interval it covers
    counters: dict[str, int]
    gauges: dict[str, float]
    timers: dict[str, TimerSummary]
    top: dict[str, dict[str, int]] = {}  # per-key counts (messages per channel): the busiest few


class MetricsReply(msgspec.Struct):
    service: str  # edge, clue or exchange
    samples: list[MetricsSample]


class ShardStatus(msgspec.Struct, omit_defaults=True):
    """A Redis shard as `INFO` shows it (counts since the server started), or why it did not answer."""

    address: str
    ok: bool
    commands: int = 0
    clients: int = 0
    memory: int = 0  # bytes
    error: str = ""


class ShardsReply(msgspec.Struct):
    shards: list[ShardStatus]


class RouteEntry(msgspec.Struct):
    channel: str
    cluster: str
    version: int


class RouteList(msgspec.Struct):
    clusters: list[str]  # every cluster a channel may be moved to
    routes: list[RouteEntry]  # channels routed away from main (or back), by name


class RouteChange(msgspec.Struct):
    channel: str
    cluster: str


class ModerationEntry(msgspec.Struct, omit_defaults=True):
    """A moderation action that was carried out (clue.modlog)."""

    ts: int  # ms since the epoch
    channel: str
    moderator: str  # login
    action: str  # the command's name: ban, timeout, delete, slow, mod, …
    target: str = ""  # a login, or a message id for delete
    detail: str = ""  # what else the command said: a duration, a reason


class ModerationLog(msgspec.Struct):
    entries: list[ModerationEntry]  # newest first


# ---- one codec

_encoder = msgspec.json.Encoder()
_decoders: dict[Any, msgspec.json.Decoder] = {}


def encode(message: Any) -> bytes:
    return _encoder.encode(message)


def decode(data: bytes | str, kind: type[T]) -> T:
    """Raises one of `DecodeError` for malformed JSON or a wrong shape."""
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.json.Decoder(kind)
    return decoder.decode(data)


def encode_list(prefix: bytes, items: list[bytes], suffix: bytes) -> bytes:
    """A JSON array of already-encoded items between two fixed parts: how a
    message encoded once is reused in every batch it travels in."""
    return prefix + b"[" + b",".join(items) + b"]" + suffix
