"""Per-message checks against a user's own Redis shard, in one round trip.

Everything a PRIVMSG is checked against that changes per message (ban or
timeout, slow mode, duplicates, the rate limit, first message) sits under the
sender's hash tag, so one Lua script on one shard decides it. Messages of a
batch that land on the same shard share a single pipelined round trip.
Channel-wide state comes from the in-process cache, not from Redis.
"""
from __future__ import annotations

import asyncio
import hashlib
from collections import defaultdict
from dataclasses import dataclass

from redis.exceptions import NoScriptError

from clue.shards import Shard, ShardSet, ShardUnavailable, pipeline_call, user_key

DUPLICATE_WINDOW_MS = 30_000

# KEYS: ban, rate, last, chatted, color.
# ARGV: channel, limit, window_ms, digest, duplicate_window_ms (0 = exempt),
# slow_ms (0 = off or exempt), member id, verdict decided before Redis ("" if
# none: subscribers-only and emote-only come after bans in Twitch's order).
# Returns {verdict, number, color}: {"ok", first_msg, color} or {msg-id, remaining_ms, color}.
CHECK_SCRIPT = """
local color = redis.call('GET', KEYS[5]) or ''
local ban = redis.call('PTTL', KEYS[1])
if ban == -1 then return {'msg_banned', 0, color} end
if ban > 0 then return {'msg_timedout', ban, color} end
if ARGV[8] ~= '' then return {ARGV[8], 0, color} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit, window = tonumber(ARGV[2]), tonumber(ARGV[3])
local dup_window, slow = tonumber(ARGV[5]), tonumber(ARGV[6])
local last = redis.call('HMGET', KEYS[3], 'digest', 'at')
local last_at = tonumber(last[2])
if last_at and slow > 0 and now - last_at < slow then
  return {'msg_slowmode', slow - (now - last_at), color}
end
if last_at and dup_window > 0 and last[1] == ARGV[4] and now - last_at < dup_window then
  return {'msg_duplicate', 0, color}
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
if redis.call('ZCARD', KEYS[2]) >= limit then return {'msg_ratelimit', 0, color} end
redis.call('ZADD', KEYS[2], now, ARGV[7])
redis.call('PEXPIRE', KEYS[2], window)
redis.call('HSET', KEYS[3], 'digest', ARGV[4], 'at', now)
redis.call('PEXPIRE', KEYS[3], math.max(dup_window, slow, 30000))
local first = redis.call('SADD', KEYS[4], ARGV[1])
return {'ok', first, color}
"""
CHECK_SHA = hashlib.sha1(CHECK_SCRIPT.encode()).hexdigest()


@dataclass(slots=True)
class Check:
    """One message's per-user check; `verdict` is filled in by `run_checks`."""

    user_id: str
    channel: str
    text: str
    member: str  # unique per message: its id
    rate_limit: int
    rate_window_ms: int
    duplicate_window_ms: int = DUPLICATE_WINDOW_MS
    slow_ms: int = 0
    early_verdict: str = ""
    verdict: str = ""
    number: int = 0
    color: str = ""

    def command(self) -> tuple:
        digest = hashlib.blake2b(self.text.strip().encode(), digest_size=12).hexdigest()
        return (
            "EVALSHA", CHECK_SHA, 5,
            user_key(self.user_id, f"ban:{self.channel}"),
            user_key(self.user_id, "rate"),
            user_key(self.user_id, f"last:{self.channel}"),
            user_key(self.user_id, "chatted"),
            user_key(self.user_id, "color"),
            self.channel, self.rate_limit, self.rate_window_ms, digest,
            self.duplicate_window_ms, self.slow_ms, self.member, self.early_verdict,
        )


async def run_checks(shards: ShardSet, checks: list[Check]) -> None:
    """Fill in every check's verdict; a shard that fails marks its checks
    `msg_service_unavailable` (the documented fail-closed policy)."""
    by_shard: defaultdict[Shard, list[Check]] = defaultdict(list)
    for check in checks:
        by_shard[shards.for_key(user_key(check.user_id, "rate"))].append(check)
    await asyncio.gather(*(_run_on_shard(shard, group) for shard, group in by_shard.items()))


async def _run_on_shard(shard: Shard, checks: list[Check]) -> None:
    try:
        results = await pipeline_call(shard, "check", [check.command() for check in checks])
        if any(isinstance(result, NoScriptError) for result in results):
            # A restarted shard forgot the script: load it and ask once more.
            await shard.call("script_load", lambda client: client.script_load(CHECK_SCRIPT))
            results = await pipeline_call(shard, "check", [check.command() for check in checks])
    except ShardUnavailable:
        for check in checks:
            check.verdict = "msg_service_unavailable"
        return
    for check, result in zip(checks, results, strict=True):
        if isinstance(result, Exception):
            check.verdict = "msg_service_unavailable"
            continue
        check.verdict = result[0].decode()
        check.number = int(result[1])
        check.color = result[2].decode()


async def load_scripts(shards: ShardSet) -> None:
    for shard in shards:
        try:
            await shard.call("script_load", lambda client: client.script_load(CHECK_SCRIPT))
        except ShardUnavailable:
            pass  # loaded on first use once the shard answers
