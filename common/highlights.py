"""Where a channel's stream highlights live in Redis: written by its exchange
(exchange/highlights.py), read by clue (clue/highlights.py)."""
from __future__ import annotations


def highlights_key(channel: str) -> str:
    """A sorted set of the channel's last highlights (wire.Highlight as JSON), scored by window_start_ms."""
    return f"{{hl:{channel}}}"


def state_key(channel: str) -> str:
    """The detector's state for the channel (wire.HighlightState), beside its highlights."""
    return f"{{hl:{channel}}}:state"
