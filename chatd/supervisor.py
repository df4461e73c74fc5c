"""Supervision for `chatd up`: a component that exits unasked is started again.

Like systemd's `Restart=` with a growing `RestartSec` (common/processes.py holds
the delays); each exit and each return is one log line on the `chatd.cluster` logger,
and a component comes back on the ports it had.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Mapping
from typing import Protocol

from common.processes import CRASH_LOOP_WINDOW, RestartBackoff, exit_status


class Supervised(Protocol):
    """A component as supervision sees it."""

    process: asyncio.subprocess.Process
    addresses: dict[str, str]
    stopping: bool  # the cluster asked it to stop: not an exit to restart


class Restartable(Protocol):
    """What supervision needs from the cluster (chatd.cluster.LocalCluster)."""

    @property
    def components(self) -> Mapping[str, Supervised]: ...
    async def restart(self, name: str) -> Supervised: ...
    def kill(self, name: str) -> None: ...


logger = logging.getLogger("chatd.cluster")


class Supervisor:
    def __init__(self, cluster: Restartable) -> None:
        self.cluster = cluster
        # How often each component was brought back, and a wake-up for `wait_restarted`.
        self.restarts: Counter[str] = Counter()
        self._restarted = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._supervise(), name="chatd supervisor")
        self._task.add_done_callback(_report_supervisor_failure)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])

    async def wait_restarted(self, name: str, count: int = 1) -> Supervised:
        async with self._restarted:
            await self._restarted.wait_for(lambda: self.restarts[name] >= count)
        return self.cluster.components[name]

    async def _supervise(self) -> None:
        """One keeper per component the cluster started; `stop()` cancels them all at once."""
        async with asyncio.TaskGroup() as keepers:
            for name in list(self.cluster.components):
                keepers.create_task(self._keep_running(name), name=f"chatd keeps {name} running")

    async def _keep_running(self, name: str) -> None:
        """Start `name` again each time it exits unasked; returns once it is stopped on purpose."""
        backoff = RestartBackoff()
        component = self.cluster.components[name]
        while True:
            up_since = time.monotonic()
            returncode = await component.process.wait()
            back = await self._bring_back(name, backoff, f"exited ({exit_status(returncode)})", up_since)
            if back is None:
                return
            component = back
            self.restarts[name] += 1
            logger.info("%s is back (pid %d) on %s", name, component.process.pid,
                        " ".join(component.addresses.values()) or "no addresses")
            async with self._restarted:
                self._restarted.notify_all()

    async def _bring_back(self, name: str, backoff: RestartBackoff, why: str, up_since: float) -> Supervised | None:
        """Restart `name` after a growing delay, as often as it takes (one log line a try); None
        once it is stopped on purpose (`stop_component`)."""
        while not self.cluster.components[name].stopping:
            now = time.monotonic()
            delay = backoff.next_delay(now, uptime=now - up_since)
            crash_loop = (f"; crash loop: {len(backoff.exits)} exits in {CRASH_LOOP_WINDOW:g} s"
                          if backoff.crash_looping else "")
            logger.warning("%s %s; restarting in %g s%s", name, " ".join(why.split()), delay, crash_loop)
            await asyncio.sleep(delay)
            if self.cluster.components[name].stopping:
                break
            up_since = time.monotonic()
            try:
                return await self.cluster.restart(name)
            except Exception as exc:  # noqa: BLE001 -- ClusterError, or spawning failed: retry, keep supervising
                why = f"did not start ({exc})"
                self.cluster.kill(name)  # a start that timed out leaves its process running
                await self.cluster.components[name].process.wait()
        return None


def _report_supervisor_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("supervision stopped: %r; components that exit now stay down", task.exception())
