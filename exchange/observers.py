"""What looks at each channel's events in the exchange that orders them, besides
the edges: the channel's history, and analytics (highlights, stream sessions).

The exchange is the one place that sees a channel's events in their one order,
so work that needs that order runs here, partitioned by channel like chat. An
observer sees every event once, right after it is ordered: `observe` must be
cheap (it runs on the publish path; queue anything slow for a task of its own)
and must not raise.
"""
from __future__ import annotations

from typing import Protocol

from common.wire import Event


class Observer(Protocol):
    def start(self) -> None: ...

    async def stop(self) -> None: ...

    def observe(self, event: Event) -> None: ...
