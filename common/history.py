"""Where a channel's history lives in Redis: written by its exchange (exchange/history.py),
read by clue (clue/history.py)."""
from __future__ import annotations

BUCKET = 100  # lines per bucket; consecutive buckets hash to different shards
# What history keeps (robotty's recent-messages: these, nothing else).
KEPT = frozenset({"PRIVMSG", "USERNOTICE", "NOTICE", "CLEARCHAT", "CLEARMSG", "ROOMSTATE"})


def index_key(channel: str) -> str:
    """The channel's line counter (field `n`)."""
    return f"{{h:{channel}}}"


def bucket_key(channel: str, bucket: int) -> str:
    return f"{{hb:{channel}:{bucket}}}"
