"""Supervision for `chatd up`: a component that exits unasked is started again.

Like systemd's `Restart=` with a growing `RestartSec`: the delay doubles from
RESTART_FIRST_DELAY to RESTART_MAX_DELAY while a component keeps dying and
starts over after a long run; each exit and each return is one log line on the
`chatd.cluster` logger, and a component comes back on the ports it had.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


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

RESTART_FIRST_DELAY = 0.5  # s before a restart (systemd's RestartSec); doubles after each exit...
RESTART_MAX_DELAY = 10.0  # ...up to this
RESTART_RESET_AFTER = 10.0  # a run this long starts the delay over
CRASH_LOOP_EXITS = 5  # this many exits within CRASH_LOOP_WINDOW s: restart at the cap, and say so
CRASH_LOOP_WINDOW = 60.0

logger = logging.getLogger("chatd.cluster")


def exit_status(returncode: int) -> str:
    """`status 1` or `killed by SIGKILL`, as a log line tells it."""
    if returncode >= 0:
        return f"status {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


@dataclass
class RestartBackoff:
    """How long to wait before starting a component that exited again (pure: no clock, no I/O)."""

    delay: float = 0.0
    exits: list[float] = field(default_factory=list)  # when it exited, within the last CRASH_LOOP_WINDOW s

    def next_delay(self, now: float, uptime: float) -> float:
        """The delay after an exit at `now` of a run that lasted `uptime` seconds."""
        self.exits = [at for at in self.exits if now - at < CRASH_LOOP_WINDOW] + [now]
        if uptime >= RESTART_RESET_AFTER:
            self.delay = 0.0
        if self.crash_looping:
            self.delay = RESTART_MAX_DELAY
        else:
            self.delay = min(self.delay * 2, RESTART_MAX_DELAY) if self.delay else RESTART_FIRST_DELAY
        return self.delay

    @property
    def crash_looping(self) -> bool:
        return len(self.exits) >= CRASH_LOOP_EXITS


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
