"""Twitch's rate profiles, and sliding-window limits on a user's own shard.

Messages (pajbot/tmi-rate-limits, the community's reference): every user has two
buckets of the same window (30 s). Every message takes a token from the
*moderator bucket*; a message to a channel where the sender is not broadcaster,
moderator or VIP also takes one from the *user bucket*, and either being drained
refuses it (`msg_ratelimit`). Their sizes depend on the account's bot status
(the token's `bot` claim): ordinary 100 and 20, known bot 50 and 50 (less than an
ordinary moderator's, as on Twitch), verified bot 7500 and 7500. Chat counts
against them in clue.validation's check script, commands here; both share
BUCKETS_LUA and the keys, so a command and a message drain the same buckets.

Whispers have their own windows (Twitch: 3 per second, 100 per minute).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from common.shards import Script, ShardSet, user_key

if TYPE_CHECKING:
    from clue.config import ClueSettings
    from common.wire import Identity

WHISPER_WINDOWS = ((3, 1_000), (100, 60_000))
WHISPER_REFUSALS = ("whisper_limit_per_sec", "whisper_limit_per_min")

# The two message buckets, under the user's hash tag. Every accepted message is
# in the moderator bucket: its id there is what makes the check idempotent.
MODERATOR_BUCKET, USER_BUCKET = "rate", "rate:user"


def rate_buckets(settings: ClueSettings, bot: str, privileged: bool) -> tuple[int, int]:
    """The (moderator bucket, user bucket) sizes a message draws on; a user
    bucket of 0 is left alone (the sender has a role in the channel)."""
    if bot == "verified":
        moderator = user = settings.rate_limit_verified
    elif bot == "known":
        moderator = user = settings.rate_limit_known
    else:
        # Never smaller than the user bucket: RATE_LIMIT raised past RATE_LIMIT_PRIVILEGED
        # still means that many messages for an ordinary user.
        user = settings.rate_limit
        moderator = max(settings.rate_limit_privileged, user)
    return moderator, 0 if privileged else user


def join_limit(settings: ClueSettings, identity: Identity | None) -> int:
    """JOINs per user per 10 s: Twitch's 20, a verified bot's 2000."""
    if identity is not None and identity.bot == "verified":
        return settings.join_limit_verified
    return settings.join_limit


# Lua shared by the scripts that use the buckets. Each is a sorted set of
# accepted message ids scored by time, a sliding window of `window` ms (never
# more than the limit in any window: what a client's limiter must assume, as it
# cannot know when Twitch refills). A limit of 0 leaves its bucket out.
BUCKETS_LUA = """
local function drained(keys, limits, window, now)
  for i = 1, #keys do
    if limits[i] > 0 then
      redis.call('ZREMRANGEBYSCORE', keys[i], '-inf', now - window)
      if redis.call('ZCARD', keys[i]) >= limits[i] then return i end
    end
  end
  return 0
end
local function take(keys, limits, window, now, member)
  for i = 1, #keys do
    if limits[i] > 0 then
      redis.call('ZADD', keys[i], now, member)
      redis.call('PEXPIRE', keys[i], window)
    end
  end
end
"""

# KEYS: the moderator bucket, the user bucket. ARGV: the event id, window_ms, the
# two limits. Takes a token from each used bucket and returns 0, or returns the
# 1-based number of a drained bucket (nothing taken). An id already taken is 0.
BUCKETS_SCRIPT = Script(BUCKETS_LUA + """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
local limits, window = {tonumber(ARGV[3]), tonumber(ARGV[4])}, tonumber(ARGV[2])
local full = drained(KEYS, limits, window, now)
if full > 0 then return full end
take(KEYS, limits, window, now, ARGV[1])
return 0
""")

# KEYS[1]: a sorted set of the user's recent events. ARGV[1]: this event's id,
# then (limit, window_ms) pairs. Records the event and returns 0, or returns the
# 1-based number of the window that is full (nothing recorded).
WINDOW_SCRIPT = Script("""
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
""")


async def charge(shards: ShardSet, user_id: str, name: str, event_id: str, windows: tuple[tuple[int, int], ...]
                 ) -> int:
    """Count an event in the user's `name` windows: 0, or which window (1-based)
    is full. Raises ShardUnavailable (the caller refuses: fail closed)."""
    flat = [value for window in windows for value in window]
    return int(await WINDOW_SCRIPT.run(shards, f"limit_{name}", [user_key(user_id, name)], [event_id, *flat]))


async def charge_buckets(shards: ShardSet, user_id: str, event_id: str, buckets: tuple[int, int],
                         window_ms: int) -> int:
    """Take a token for an event (a command) from the user's message buckets
    (`rate_buckets`): 0, or which bucket (1-based) is drained. Raises
    ShardUnavailable (the caller refuses: fail closed)."""
    keys = [user_key(user_id, MODERATOR_BUCKET), user_key(user_id, USER_BUCKET)]
    return int(await BUCKETS_SCRIPT.run(shards, "limit_rate", keys, [event_id, window_ms, *buckets]))
