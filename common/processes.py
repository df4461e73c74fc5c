"""Child processes: tied to their parent's life, and started again when they exit unasked.

Like systemd's `Restart=` with a growing `RestartSec`: the delay doubles from
RESTART_FIRST_DELAY to RESTART_MAX_DELAY while a process keeps dying and starts
over after a long run. `chatd up` restarts components this way
(chatd/supervisor.py), and an edge's parent its workers (edge/workers.py).
"""
from __future__ import annotations

import ctypes
import signal
from dataclasses import dataclass, field

RESTART_FIRST_DELAY = 0.5  # s before a restart (systemd's RestartSec); doubles after each exit...
RESTART_MAX_DELAY = 10.0  # ...up to this
RESTART_RESET_AFTER = 10.0  # a run this long starts the delay over
CRASH_LOOP_EXITS = 5  # this many exits within CRASH_LOOP_WINDOW s: restart at the cap, and say so
CRASH_LOOP_WINDOW = 60.0


def die_with_parent() -> None:
    """In a child before exec: SIGTERM it when its parent dies (PR_SET_PDEATHSIG),
    so even a killed parent leaves no process behind."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)


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
    """How long to wait before starting a process that exited again (pure: no clock, no I/O)."""

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
