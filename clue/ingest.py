"""Ingestion of a batch of submissions: validate, check, stamp, publish.

Each submission ends in exactly one outcome the sender is told: accepted (with
its USERSTATE), refused (a NOTICE msg-id), or, when the exchange may have
ordered it without saying so, unknown — the edge then asks again with the same
message id, which every step treats idempotently.
"""
from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from typing import Any

from clue import eventsub_events as es
from clue import limits, stamp
from clue.channels import ChannelCache, ChannelState
from clue.commands import Commands, Role, role_of
from clue.config import ClueSettings
from clue.emotes import emotes_tag
from clue.modlog import ModerationLog, entry_for, is_moderation
from clue.publisher import Exchanges
from clue.validation import Check, now_ms, run_checks
from common import twitch
from common.internal_http import RemoteError
from common.irc import Message, serialize_tags
from common.metrics import Metrics
from common.shards import ShardSet, ShardUnavailable, channel_key, pipeline_call
from common.wire import CLOSED, Event, Identity, Notify, Outcome, Submission

UNAVAILABLE = "msg_service_unavailable"
# What the checks of one batch may take, retries included; well inside the
# edge's HTTP timeout so the edge hears the answer.
MIN_CHECK_BUDGET = 1.0


class Rejected(Exception):
    def __init__(self, msg_id: str, **fill: Any) -> None:
        super().__init__(msg_id)
        self.msg_id = msg_id
        self.fill = fill


@dataclass(slots=True)
class Pending:
    """One message of a batch on its way through the checks."""

    index: int
    submission: Submission
    state: ChannelState
    check: Check
    text: str
    emotes: str
    role: Role
    command: bool


def early_verdict(state: ChannelState, identity: Identity, role: Role, only_emotes: bool) -> str:
    """Refusals decided from cached channel state; the check script reports them
    after bans and timeouts, keeping Twitch's order."""
    settings = state.settings
    if settings["subs_only"] and role < Role.VIP and not identity.subscriber:
        return "msg_subsonly"
    if settings["emote_only"] and role < Role.MODERATOR and not only_emotes:
        return "msg_emoteonly"
    return ""


def refusal(metrics: Metrics, channel: str, msg_id: str, **fill: Any) -> Outcome:
    metrics.incr(f"messages.rejected.{msg_id}")
    return Outcome(ok=False, msg_id=msg_id, text=twitch.notice_text(msg_id, channel=channel, **fill))


class Ingest:
    def __init__(self, settings: ClueSettings, metrics: Metrics, shards: ShardSet, channels: ChannelCache,
                 exchanges: Exchanges, commands: Commands, modlog: ModerationLog) -> None:
        self.settings = settings
        self.metrics = metrics
        self.shards = shards
        self.channels = channels
        self.exchanges = exchanges
        self.commands = commands
        self.modlog = modlog
        self.check_budget = min(max(MIN_CHECK_BUDGET, 4 * settings.cache_timeout),
                                0.6 * settings.common.http_timeout)

    async def run(self, submissions: list[Submission]) -> list[Outcome]:
        """Validate, stamp and publish a batch; one outcome per submission, in order."""
        self.metrics.incr("messages.received", len(submissions))
        results: list[Outcome | None] = [None] * len(submissions)
        pending: list[Pending] = []
        for index, submission in enumerate(submissions):
            try:
                prepared = await self._prepare(index, submission)
            except Rejected as rejected:
                results[index] = refusal(self.metrics, submission.channel, rejected.msg_id, **rejected.fill)
                continue
            if prepared.command and self.settings.strict:
                name = prepared.text[1:].split(" ", 1)[0]
                results[index] = refusal(self.metrics, submission.channel, "unrecognized_cmd", command=name)
            elif prepared.command:
                results[index] = await self.run_command(submission.identity, prepared.state, prepared.text,
                                                        submission.id)
            else:
                pending.append(prepared)

        await run_checks(self.shards, [entry.check for entry in pending], self.check_budget)
        await self._check_unique(pending)

        publishing: list[tuple[Pending, asyncio.Future[int]]] = []
        for entry in pending:
            check = entry.check
            if check.verdict != "ok":
                seconds = max(1, round(check.number / 1000)) if check.number else ""
                results[entry.index] = refusal(self.metrics, entry.state.name, check.verdict, seconds=seconds)
                continue
            publishing.append((entry, self.exchanges.publish(self._stamp(entry))))

        for entry, future in publishing:
            results[entry.index] = await self._published(entry, future)
        return results  # type: ignore[return-value]

    async def _published(self, entry: Pending, future: asyncio.Future[int]) -> Outcome:
        channel = entry.state.name
        try:
            seq = await future
        except RemoteError as exc:
            if exc.refused:  # the exchange never got it
                return refusal(self.metrics, channel, UNAVAILABLE)
            # It may have been ordered: the edge settles it with the same id.
            self.metrics.incr("messages.unknown")
            return Outcome(ok=False, msg_id=UNAVAILABLE, unknown=True)
        if seq == CLOSED:  # settled as refused while this attempt was under way
            return refusal(self.metrics, channel, UNAVAILABLE)
        self.metrics.incr("messages.accepted")
        identity = entry.submission.identity
        user_state = stamp.user_state_tags(identity, entry.state, entry.submission.id, color=entry.check.color)
        return Outcome(ok=True, user_state=user_state)

    async def _prepare(self, index: int, submission: Submission) -> Pending:
        channel, text, identity = submission.channel, submission.text, submission.identity
        if not twitch.is_valid_channel(channel):
            raise Rejected("msg_channel_suspended")
        if len(text) > twitch.MAX_MESSAGE_CHARS:
            raise Rejected("msg_too_long")
        if not text.strip() or any(char in text for char in "\r\n\0"):
            raise Rejected("msg_bad_request")
        try:
            state = await self.channels.get(channel)
        except ShardUnavailable:
            raise Rejected(UNAVAILABLE) from None
        role = role_of(identity.login, state)
        command = twitch.is_command(text)
        if twitch.is_action(text):
            text = f"\x01ACTION {text.partition(' ')[2]}\x01"
            command = False
        emotes, only_emotes = emotes_tag(text, self.settings.emotes)
        settings = self.settings
        moderator_limit, user_limit = limits.rate_buckets(settings, identity.bot, role >= Role.VIP)
        check = Check(
            user_id=identity.user_id,
            channel=channel,
            text=text,
            member=submission.id,
            moderator_limit=moderator_limit,
            user_limit=user_limit,
            rate_window_ms=int(settings.rate_window * 1000),
            # Twitch's exemptions: VIPs skip slow and subscribers-only mode and,
            # with moderators and the broadcaster, the duplicate check and the
            # channel's 1 s floor (verified bots skip the floor too);
            # moderators and the broadcaster skip every mode.
            duplicate_window_ms=0 if role >= Role.VIP else int(settings.duplicate_window * 1000),
            slow_ms=state.settings["slow"] * 1000 if role < Role.VIP else 0,
            floor_ms=0 if role >= Role.VIP or identity.bot == "verified" else int(settings.channel_floor * 1000),
            early_verdict=early_verdict(state, identity, role, only_emotes),
        )
        return Pending(index, submission, state, check, text, emotes, role, command)

    async def run_command(self, identity: Identity, state: ChannelState, text: str, event_id: str) -> Outcome:
        self.metrics.incr("commands.received")
        try:
            refused = await self._command_limits(identity, state, text, event_id)
            if refused:
                return refusal(self.metrics, state.name, refused)
            outcome = await self.commands.run(identity, state, text)
            for event in outcome.broadcasts:
                await self.exchanges.publish(event)
        except (ShardUnavailable, RemoteError):
            return refusal(self.metrics, state.name, UNAVAILABLE)
        if outcome.ok and is_moderation(text):
            await self.modlog.record(entry_for(identity, state.name, text, now_ms()))
        self.metrics.incr(f"commands.{'done' if outcome.ok else 'refused'}")
        return outcome.answer(state.name)

    async def _command_limits(self, identity: Identity, state: ChannelState, text: str, event_id: str) -> str:
        """A command counts as a message against the sender's rate buckets, as on
        Twitch (whispers have their own windows besides: clue.commands.whisper).
        The refusal's msg-id, or ""."""
        privileged = role_of(identity.login, state) >= Role.VIP
        buckets = limits.rate_buckets(self.settings, identity.bot, privileged)
        window_ms = int(self.settings.rate_window * 1000)
        if await limits.charge_buckets(self.shards, identity.user_id, event_id, buckets, window_ms):
            return "msg_ratelimit"
        return ""

    async def _check_unique(self, pending: list[Pending]) -> None:
        """Unique-chat mode: a message must not repeat one sent in the channel
        in the last hour. This costs a second round trip, to the channel's
        shard, and only while the mode is on."""
        for entry in pending:
            if entry.check.verdict != "ok" or not entry.state.settings["r9k"] or entry.role >= Role.MODERATOR:
                continue
            digest = hashlib.blake2b(entry.text.strip().lower().encode(), digest_size=12).hexdigest()
            key = channel_key(entry.state.name, f"r9k:{digest}")
            try:
                [fresh] = await pipeline_call(self.shards.for_key(key), "r9k", [("SET", key, "1", "NX", "EX", 3600)])
            except ShardUnavailable:
                entry.check.verdict = UNAVAILABLE
                continue
            if not fresh:
                entry.check.verdict = "msg_r9k"

    def _stamp(self, entry: Pending) -> Event:
        """The accepted message as every edge will write it: formatted here, once."""
        submission, state = entry.submission, entry.state
        identity = submission.identity
        sent_ms = now_ms()
        tags = stamp.privmsg_tags(
            identity,
            state,
            message_id=submission.id,
            sent_ms=sent_ms,
            first_msg=entry.check.number == 1,
            client_tags=submission.client_tags,
            color=entry.check.color,
            emotes=entry.emotes,
        )
        line = Message(
            source=twitch.user_source(identity.login), command="PRIVMSG", params=[state.name, entry.text]
        ).serialize_without_tags(trailing=True)
        event = Event(channel=state.name, command="PRIVMSG", line=line, tags=serialize_tags(tags),
                      id=submission.id, login=identity.login, user_id=identity.user_id, text=entry.text,
                      sent_ms=sent_ms, origin=submission.origin)
        if "channel.chat.message" in state.eventsub:  # built only when someone listens
            event.notify = [self._chat_message_event(entry, tags)]
        return event

    def _chat_message_event(self, entry: Pending, tags: dict[str, str]) -> Notify:
        identity = entry.submission.identity
        text = entry.text
        message_type = "text"
        if text.startswith("\x01ACTION ") and text.endswith("\x01"):
            text = text[len("\x01ACTION "):-1]  # /me: EventSub shows the words; IRC the CTCP ACTION
        reply = None
        parent = entry.submission.client_tags.get("reply-parent-msg-id")
        if parent:
            reply = {"parent_message_id": parent, "parent_message_body": "", "parent_user_id": "",
                     "parent_user_name": "", "parent_user_login": "", "thread_message_id": parent,
                     "thread_user_id": "", "thread_user_name": "", "thread_user_login": ""}
        return es.notify("channel.chat.message", es.chat_message(
            entry.state.broadcaster, (identity.user_id, identity.login, identity.display_name),
            entry.submission.id, text, emotes=self.settings.emotes, color=tags["color"], badges=tags["badges"],
            message_type=message_type, reply=reply))
