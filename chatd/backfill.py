"""`chatd sessions backfill --day YYYY-MM-DD [--partition i/N] [--workers K]`.

Recomputes the sessions that start on one UTC day from the archive
(common/archive.py) with the live driver's core (analytics.sessions), and
reconciles them with Redis: inserts the missing, corrects the wrong (with a
fresh summary), deletes the invalid (found through the index by start day and
the channels computed). Sessions still open belong to the live driver and are
left alone. Running it again changes nothing.

What a day's sessions depend on reaches past the day: a stream that crosses
midnight started the day before (and whether it is over 24 hours decides where
rule 3 cuts it), one that starts late in the day ends the next. The archive is
read a day and an hour either side of the day first; only the channels whose
day still depends on what was not read get more, an hour at a time, up to a
day and a gap beyond each side (past that, nothing can change the day).

Work is split by channel partition: `--partition i/N` takes the channels whose
id hashes to i (run the N parts on N machines), and `--workers K` splits that
again over K processes on this one (each reads every file of the hours it
needs, keeping its own channels). One backfill per day and partition runs at
a time (a lock in Redis that expires if its holder dies).
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import dataclasses
import json
import multiprocessing
import os
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

from analytics.sessions import DAY, Rules, Session, sessions_of
from analytics.summaries import summarize
from chatd.progress import Progress
from common import archive
from common.config import ConfigError, Env
from common.sessions import SessionSettings, SessionStore, day_start_of, lock_key
from common.wire import SessionRecord

HOUR = archive.HOUR
LOCK_TTL = 60  # seconds; renewed every third of it while the backfill runs
WAIT_POLL = 1.0


@dataclasses.dataclass(frozen=True)
class Job:
    root: Path
    day_start: int
    rules: Rules
    clock: float  # the live driver's watermark: sessions open at it are left to the live driver
    part: int
    parts: int


@dataclasses.dataclass
class Computed:
    sessions: list[tuple[str, str, int, int]]  # (channel id, channel, start, end), closed, starting on the day
    open: list[tuple[str, int]] = dataclasses.field(default_factory=list)  # (channel id, start) still open
    events: int = 0
    channels: int = 0
    hours: int = 0


_progress_queue = None


def _init_worker(queue) -> None:
    global _progress_queue
    _progress_queue = queue


def compute(job: Job) -> Computed:
    """The day's sessions of one partition of channels (runs in a worker process)."""
    d0, d1, gap = job.day_start, job.day_start + DAY, job.rules.gap
    times: defaultdict[bytes, list[int]] = defaultdict(list)
    names: dict[bytes, bytes] = {}
    kept: dict[bytes, bool] = {}

    def mine(channel_id: bytes) -> bool:
        found = kept.get(channel_id)
        if found is None:
            found = kept[channel_id] = archive.partition_of(channel_id.decode(), job.parts) == job.part
        return found

    result = Computed(sessions=[])

    def read(hour: int, keep, into) -> None:
        rows = archive.read_hour(job.root, hour, keep, into, names)
        result.events += rows
        result.hours += 1
        if _progress_queue is not None:
            _progress_queue.put(rows)

    lo, hi = d0 - HOUR, d1 + HOUR
    for hour in range(lo, hi, HOUR):
        read(hour, mine, times)
    left_limit = d0 - DAY - gap - HOUR
    right_limit = min(job.clock, d1 + DAY + gap + HOUR)
    found: dict[bytes, list[Session]] = {}
    changed = set(times)
    for channel_id in changed:
        times[channel_id].sort()
    while True:
        for channel_id in changed:
            found[channel_id] = sessions_of(channel_id.decode(), times[channel_id], job.rules, min(job.clock, hi))
        need_left = {c for c in found if lo > left_limit and _started_earlier(times[c], found[c], lo, d0, gap)}
        need_right = {c for c in found if hi < right_limit and any(s.open and d0 <= s.start < d1 for s in found[c])}
        if not need_left and not need_right:
            break
        more: defaultdict[bytes, list[int]] = defaultdict(list)
        if need_left:
            lo -= HOUR
            read(lo, need_left.__contains__, more)
        if need_right:
            read(hi, need_right.__contains__, more)
            hi += HOUR
        changed = need_left | need_right
        for channel_id, extra in more.items():
            times[channel_id] = sorted(times[channel_id] + extra)
    for channel_id, sessions in found.items():
        channel = names.get(channel_id, b"").decode()
        for session in sessions:
            if d0 <= session.start < d1:
                if session.open:
                    result.open.append((session.channel_id, session.start))
                else:
                    result.sessions.append((session.channel_id, channel, session.start, session.end))
    result.channels = len(found)
    return result


def _started_earlier(times: list[int], sessions: list[Session], lo: int, d0: int, gap: int) -> bool:
    """Could the channel's first session reach back before `lo`, and would that change the day?
    Only if an event just before `lo` would join it, it reaches the day and rule 3 has not
    cut it yet (a stream that started earlier could be over 24 hours, and cut at midnight)."""
    if not times or times[0] - (lo - 1) >= gap or not sessions:
        return False
    first = sessions[0]
    cut = len(sessions) > 1 and sessions[1].start == first.end
    return not cut and first.end > d0


@dataclasses.dataclass
class Outcome:
    day: str
    partition: str
    computed: int = 0
    inserted: int = 0
    corrected: int = 0
    deleted: int = 0
    unchanged: int = 0
    open: int = 0
    events: int = 0
    channels: int = 0
    hours: int = 0
    seconds: float = 0.0
    compute_seconds: float = 0.0  # reading the archive and running the core; the rest is Redis

    def line(self) -> str:
        return (f"{self.day} partition {self.partition}: {self.computed:,} sessions ({self.inserted:,} inserted, "
                f"{self.corrected:,} corrected, {self.deleted:,} deleted, {self.unchanged:,} unchanged; "
                f"{self.open:,} open, left to the live driver) from {self.events:,} events in {self.seconds:.1f} s")


class Busy(Exception):
    """Another backfill of the same day and partition holds the lock."""


async def backfill(store: SessionStore, root: Path, day: str, settings: SessionSettings, part: int = 0,
                   parts: int = 1, workers: int = 1, wait: bool = False, now: float | None = None,
                   progress: Progress | None = None) -> Outcome:
    started = time.perf_counter()
    d0 = day_start_of(day)
    partition = f"{part}/{parts}"
    key, token = lock_key(day, partition), uuid.uuid4().hex
    while not await store.lock(key, token, LOCK_TTL):
        if not wait:
            raise Busy(f"{day} partition {partition} is being backfilled by another run (lock {key}); "
                       "try again when it is done, or pass --wait")
        await asyncio.sleep(WAIT_POLL)
    renewing = asyncio.get_running_loop().create_task(_renew(store, key, token))
    try:
        now = time.time() if now is None else now
        rules = Rules(gap=settings.gap, minute=settings.minute)
        jobs = [Job(root, d0, rules, now - settings.lateness, part + parts * k, parts * workers)
                for k in range(workers)]
        computed = await _compute_all(jobs, progress)
        compute_seconds = time.perf_counter() - started
        outcome = Outcome(day, partition, compute_seconds=compute_seconds, events=sum(c.events for c in computed),
                          channels=sum(c.channels for c in computed), hours=max(c.hours for c in computed))
        desired = {(cid, start): SessionRecord(cid, channel, start, end)
                   for c in computed for cid, channel, start, end in c.sessions}
        outcome.computed = len(desired)
        if progress is not None:
            progress.note(f"{outcome.computed:,} sessions computed from {outcome.events:,} events; reconciling")
        still_open = {key for c in computed for key in c.open}
        await _reconcile(store, day, d0, desired, still_open, part, parts, settings.minute, outcome)
    finally:
        renewing.cancel()
        await asyncio.gather(renewing, return_exceptions=True)
        await store.unlock(key, token)
    outcome.seconds = time.perf_counter() - started
    return outcome


async def _renew(store: SessionStore, key: str, token: str) -> None:
    while True:
        await asyncio.sleep(LOCK_TTL / 3)
        await store.renew(key, token, LOCK_TTL)


async def _compute_all(jobs: list[Job], progress: Progress | None) -> list[Computed]:
    if len(jobs) == 1 and progress is None:
        return [await asyncio.to_thread(compute, jobs[0])]
    context = multiprocessing.get_context("fork")
    queue = context.SimpleQueue()
    loop = asyncio.get_running_loop()
    with concurrent.futures.ProcessPoolExecutor(len(jobs), mp_context=context, initializer=_init_worker,
                                                initargs=(queue,)) as pool:
        futures = [loop.run_in_executor(pool, compute, job) for job in jobs]
        pending = asyncio.gather(*futures)
        while not pending.done():
            await asyncio.wait([pending], timeout=0.2)
            while not queue.empty():
                rows = queue.get()
                if progress is not None:
                    progress.advance(rows)
        return await pending


async def _reconcile(store: SessionStore, day: str, d0: int, desired: dict[tuple[str, int], SessionRecord],
                     still_open: set[tuple[str, int]], part: int, parts: int, minute: int, outcome: Outcome) -> None:
    indexed = {c for c in await store.day_channels(day) if archive.partition_of(c, parts) == part}
    channels = sorted(indexed | {cid for cid, _ in desired})
    existing = await store.between(channels, d0, d0 + DAY)
    writes: list[SessionRecord] = []
    deletes: list[tuple[str, int]] = []
    seen: set[tuple[str, int]] = set()
    for records in existing.values():
        for record in records:
            key = (record.channel_id, record.start)
            seen.add(key)
            wanted = desired.get(key)
            if record.open or key in still_open:  # the live driver's, whatever the archive says so far
                still_open.add(key)
                continue
            if wanted is None:
                deletes.append(key)
            elif (wanted.end, wanted.channel) != (record.end, record.channel) or record.summary is None:
                writes.append(wanted)
                outcome.corrected += 1
            else:
                outcome.unchanged += 1
    for key, wanted in desired.items():
        if key not in seen:
            writes.append(wanted)
            outcome.inserted += 1
    for record, (minutes, highlights) in zip(writes, await store.summary_inputs(writes, minute), strict=True):
        record.summary = summarize(minutes, highlights, record.start, record.end, minute)
    await store.put(writes)
    await store.delete(deletes)
    outcome.deleted = len(deletes)
    outcome.open = len(still_open)


# ---- the command line

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--day", required=True, help="the UTC day whose sessions to recompute, YYYY-MM-DD")
    parser.add_argument("--partition", default="0/1", help="i/N: only the channels of partition i of N")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes on this machine (default: one per core)")
    parser.add_argument("--archive", help="the archive directory (default: $SESSION_ARCHIVE, else the data dir's)")
    parser.add_argument("--wait", action="store_true", help="wait for a backfill of the same day to finish")
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")
    parser.add_argument("--data-dir", help="a `chatd up` data dir: Redis and the archive (default .chatd)")


def fail(text: str, code: int = 2) -> int:
    print(f"chatd sessions backfill: {text}", file=sys.stderr)
    return code


def run(args: argparse.Namespace, data_dir: Path) -> int:
    from chatd.admin import NoCluster, cache_servers
    from common.metrics import Metrics
    from common.shards import ShardSet, ShardUnavailable

    try:
        day_start_of(args.day)
    except ValueError:
        return fail(f"--day must be a date like 2026-03-05, got {args.day!r}")
    try:
        part, parts = (int(n) for n in args.partition.split("/"))
        if not 0 <= part < parts:
            raise ValueError
    except ValueError:
        return fail(f"--partition must be i/N with 0 <= i < N, got {args.partition!r}")
    if args.workers < 1:
        return fail("--workers must be at least 1")
    try:
        settings = SessionSettings.from_env(Env())
        servers = cache_servers(data_dir)
    except (ConfigError, NoCluster) as exc:
        return fail(str(exc))
    root = Path(args.archive or os.environ.get("SESSION_ARCHIVE") or data_dir / "archive")
    if not root.is_dir():
        return fail(f"no archive at {root}")

    async def go() -> Outcome:
        shards = ShardSet(servers, 4, 10.0, Metrics("127.0.0.1", 8125, "chatd", "backfill"))
        try:
            with Progress(None, f"backfill {args.day} {args.partition}", unit="events") as progress:
                return await backfill(SessionStore(shards, timeout=30.0), root, args.day, settings, part, parts,
                                      args.workers, args.wait, progress=progress)
        finally:
            await shards.close()

    try:
        outcome = asyncio.run(go())
    except Busy as exc:
        return fail(str(exc), 1)
    except (ShardUnavailable, OSError) as exc:
        return fail(str(exc), 1)
    print(json.dumps(dataclasses.asdict(outcome)) if args.json else outcome.line())
    return 0
