"""Sliding-window limits on a user's own shard, for what is not chat: commands
count against the user's message rate as on Twitch, and whispers have their
own windows (Twitch: 3 per second, 100 per minute).
"""
from __future__ import annotations

import hashlib

from redis.exceptions import NoScriptError

from common.shards import ShardSet, ShardUnavailable, pipeline_call, user_key

WHISPER_WINDOWS = ((3, 1_000), (100, 60_000))
WHISPER_REFUSALS = ("whisper_limit_per_sec", "whisper_limit_per_min")

# KEYS[1]: a sorted set of the user's recent events. ARGV[1]: this event's id,
# then (limit, window_ms) pairs. Records the event and returns 0, or returns the
# 1-based number of the window that is full (nothing recorded).
WINDOW_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local longest = 0
for i = 2, #ARGV, 2 do
  local limit, window = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  if redis.call('ZCOUNT', KEYS[1], '(' .. (now - window), '+inf') >= limit then return i / 2 end
  if window > longest then longest = window end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - longest)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], longest)
return 0
"""
WINDOW_SHA = hashlib.sha1(WINDOW_SCRIPT.encode()).hexdigest()


async def charge(shards: ShardSet, user_id: str, name: str, event_id: str, windows: tuple[tuple[int, int], ...]
                 ) -> int:
    """Count an event in the user's `name` windows: 0, or which window (1-based)
    is full. Raises ShardUnavailable (the caller refuses: fail closed)."""
    key = user_key(user_id, name)
    shard = shards.for_key(key)
    flat = [value for window in windows for value in window]
    command = ("EVALSHA", WINDOW_SHA, 1, key, event_id, *flat)
    [result] = await pipeline_call(shard, f"limit_{name}", [command])
    if isinstance(result, NoScriptError):
        await shard.call("script_load", lambda client: client.script_load(WINDOW_SCRIPT))
        [result] = await pipeline_call(shard, f"limit_{name}", [command])
    if isinstance(result, Exception):
        raise ShardUnavailable(shard.address, f"limit_{name}", str(result)[:200])
    return int(result)
