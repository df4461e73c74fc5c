"""Per-message checks against a user's own Redis shard, in one round trip.

Everything a PRIVMSG is checked against that changes per message (ban or
timeout, slow mode and the channel's floor, duplicates, the two rate buckets of
clue.limits, first message) sits under the sender's hash tag, so one Lua script
on one shard decides it. Messages that land on the same shard share pipelined
round trips of at most CHUNK checks, so a slow call delays a chunk, not a whole
batch.

The check and its deadline agree inside Redis: the script refuses to charge
anything (rate buckets, duplicate window, slow mode) once its deadline has passed,
so a message refused for a timeout never counts against its sender. A chunk
whose answer did not arrive is settled after its deadline by asking which of
its messages were charged (only those can have been accepted); the rest are
checked again while the batch's budget lasts. Only a shard that cannot answer
at all gets its messages refused. The script is also idempotent by message id:
a submission retried after a failover is accepted once.
"""
from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections import defaultdict
from dataclasses import dataclass

from redis.exceptions import NoScriptError

from clue import limits
from common.shards import (
    Script,
    Shard,
    ShardSet,
    ShardUnavailable,
    pipeline_call,
    user_key,
)

SPACES = re.compile(" {2,}")
# Checks per pipelined round trip.
CHUNK = 128
UNAVAILABLE = "msg_service_unavailable"
EXPIRED = "expired"

# KEYS: ban, moderator bucket, user bucket, last, chatted, color.
# ARGV: channel, moderator_limit, user_limit (0 = the user bucket is left alone),
# window_ms, digest, duplicate_window_ms (0 = exempt), slow_ms (0 = off or exempt),
# floor_ms (the channel's minimum slow mode; 0 = off or exempt), member (the
# message id), verdict decided before Redis ("" if none: subscribers-only and
# emote-only come after bans in Twitch's order), deadline (ms since the epoch;
# later, nothing is charged).
# Returns {verdict, number, color}: {"ok", first_msg, color}, {msg-id, remaining_ms, color}
# or {"expired", 0, color}. Only an accepted message is charged (both buckets and
# the channel's last message at once), so "charged" means "accepted": a retry of
# the same id is "ok", and a check whose answer was lost is settled by asking.
CHECK_SCRIPT = Script(limits.BUCKETS_LUA + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local color = redis.call('GET', KEYS[6]) or ''
if redis.call('ZSCORE', KEYS[2], ARGV[9]) then return {'ok', 0, color} end
if now > tonumber(ARGV[11]) then return {'expired', 0, color} end
local ban = redis.call('PTTL', KEYS[1])
if ban == -1 then return {'msg_banned', 0, color} end
if ban > 0 then return {'msg_timedout', ban, color} end
if ARGV[10] ~= '' then return {ARGV[10], 0, color} end
local buckets, sizes, window = {KEYS[2], KEYS[3]}, {tonumber(ARGV[2]), tonumber(ARGV[3])}, tonumber(ARGV[4])
local dup_window, slow, floor = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local last = redis.call('HMGET', KEYS[4], 'digest', 'at')
local last_at = tonumber(last[2])
if last_at and slow > 0 and now - last_at < slow then
  return {'msg_slowmode', slow - (now - last_at), color}
end
if last_at and floor > 0 and now - last_at < floor then return {'msg_ratelimit', 0, color} end
if last_at and dup_window > 0 and last[1] == ARGV[5] and now - last_at < dup_window then
  return {'msg_duplicate', 0, color}
end
if drained(buckets, sizes, window, now) > 0 then return {'msg_ratelimit', 0, color} end
take(buckets, sizes, window, now, ARGV[9])
redis.call('HSET', KEYS[4], 'digest', ARGV[5], 'at', now)
redis.call('PEXPIRE', KEYS[4], math.max(dup_window, slow, floor, 30000))
local first = redis.call('SADD', KEYS[5], ARGV[1])
return {'ok', first, color}
""")


def duplicate_digest(text: str) -> str:
    """What the duplicate rule compares: the text as Twitch would show it, trimmed
    and with runs of spaces made one. Anything else counts, so appending a space
    and U+E0000 (Twitch's accepted bypass: not whitespace) makes a new message."""
    normalized = SPACES.sub(" ", text.strip())
    return hashlib.blake2b(normalized.encode(), digest_size=12).hexdigest()


@dataclass(slots=True)
class Check:
    """One message's per-user check; `verdict` is filled in by `run_checks`."""

    user_id: str
    channel: str
    text: str
    member: str  # the message id
    moderator_limit: int  # the buckets' sizes (clue.limits.rate_buckets)
    user_limit: int  # 0: the user bucket is left alone
    rate_window_ms: int
    duplicate_window_ms: int  # 0: exempt
    slow_ms: int = 0
    floor_ms: int = 0
    early_verdict: str = ""
    verdict: str = ""
    number: int = 0
    color: str = ""

    @property
    def rate_key(self) -> str:
        """The moderator bucket: every accepted message is in it."""
        return user_key(self.user_id, limits.MODERATOR_BUCKET)

    def command(self, deadline_ms: int) -> tuple:
        return (
            "EVALSHA", CHECK_SCRIPT.sha, 6,
            user_key(self.user_id, f"ban:{self.channel}"),
            self.rate_key,
            user_key(self.user_id, limits.USER_BUCKET),
            user_key(self.user_id, f"last:{self.channel}"),
            user_key(self.user_id, "chatted"),
            user_key(self.user_id, "color"),
            self.channel, self.moderator_limit, self.user_limit, self.rate_window_ms,
            duplicate_digest(self.text), self.duplicate_window_ms, self.slow_ms, self.floor_ms, self.member,
            self.early_verdict, deadline_ms,
        )


def now_ms() -> int:
    return int(time.time() * 1000)


async def run_checks(shards: ShardSet, checks: list[Check], budget: float) -> None:
    """Fill in every check's verdict within `budget` seconds; what a shard
    cannot answer for is `msg_service_unavailable` (the documented fail-closed policy)."""
    by_shard: defaultdict[Shard, list[Check]] = defaultdict(list)
    for check in checks:
        by_shard[shards.for_key(check.rate_key)].append(check)
    until = time.monotonic() + budget
    await asyncio.gather(*(_run_on_shard(shard, group, until) for shard, group in by_shard.items()))


async def _run_on_shard(shard: Shard, checks: list[Check], until: float) -> None:
    # Chunks of one shard go one after another: a user's messages keep their order.
    for start in range(0, len(checks), CHUNK):
        await _run_chunk(shard, checks[start:start + CHUNK], until)


async def _run_chunk(shard: Shard, checks: list[Check], until: float) -> None:
    todo = checks
    while todo:
        deadline_ms = now_ms() + round(shard.timeout * 1000)
        try:
            results = await _evaluate(shard, todo, deadline_ms)
        except ShardUnavailable as exc:
            todo = [] if exc.refused else await _settle(shard, todo, deadline_ms)
        else:
            for check, result in zip(todo, results, strict=True):
                if isinstance(result, Exception):
                    check.verdict = UNAVAILABLE
                else:
                    check.verdict, check.number, check.color = result[0].decode(), int(result[1]), result[2].decode()
            todo = [check for check in todo if check.verdict == EXPIRED]
        if todo and time.monotonic() > until:
            break
    for check in todo:
        check.verdict = UNAVAILABLE
    for check in checks:
        if not check.verdict:
            check.verdict = UNAVAILABLE


async def _evaluate(shard: Shard, checks: list[Check], deadline_ms: int) -> list:
    # The answer is what Redis decided, even if it comes after the deadline:
    # wait for it a while longer than the deadline itself.
    commands = [check.command(deadline_ms) for check in checks]
    results = await pipeline_call(shard, "check", commands, timeout=2 * shard.timeout)
    if any(isinstance(result, NoScriptError) for result in results):
        # A restarted shard forgot the script: load it and ask once more.
        await shard.call("script_load", lambda client: client.script_load(CHECK_SCRIPT.source))
        results = await pipeline_call(shard, "check", commands, timeout=2 * shard.timeout)
    return results


async def _settle(shard: Shard, checks: list[Check], deadline_ms: int) -> list[Check]:
    """No answer: once the deadline has passed nothing more can be charged, so
    the charged messages are the accepted ones. Returns those to check again;
    an unreachable shard settles them all as unavailable."""
    wait = (deadline_ms - now_ms()) / 1000 + 0.005
    if wait > 0:
        await asyncio.sleep(wait)
    try:
        scores = await pipeline_call(shard, "check_settle", [("ZSCORE", c.rate_key, c.member) for c in checks])
    except ShardUnavailable:
        for check in checks:
            check.verdict = UNAVAILABLE
        return []
    again = []
    for check, score in zip(checks, scores, strict=True):
        if score is not None and not isinstance(score, Exception):
            check.verdict = "ok"
        else:
            check.verdict = ""
            again.append(check)
    return again


async def load_scripts(shards: ShardSet) -> None:
    for shard in shards:
        try:
            await shard.call("script_load", lambda client: client.script_load(CHECK_SCRIPT.source))
        except ShardUnavailable:
            pass  # loaded on first use once the shard answers
