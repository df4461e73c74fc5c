"""The archive of `minute_broadcast` events: CSV files per UTC day and hour.

    <archive>/2026-03-05/14-<writer>.csv
    time,channel_id,channel,source
    2026-03-05 14:13:00,123456,#somechannel,broadcast

Each exchange appends the events it ordered to its own files (`writer` names
the process), so writers never share a file; a file holds the events whose
time falls in its day and hour, in the order they arrived (a late event goes
to its own hour's file). Any tool reads it: `cat`, `csvkit`, a spreadsheet,
`duckdb -c "select * from 'archive/2026-03-05/*.csv'"`. The backfill
(`chatd sessions backfill`) reads it back: it is the record of what happened,
the sessions in Redis are derived from it.
"""
from __future__ import annotations

import calendar
import re
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

HEADER = "time,channel_id,channel,source\n"
HOUR = 3600


def hour_dir(root: Path, hour_start: int) -> tuple[Path, str]:
    """(the day's directory, the hour's file prefix) for the hour starting at `hour_start`."""
    day, hour = time.strftime("%Y-%m-%d %H", time.gmtime(hour_start)).split()
    return root / day, f"{hour}-"


def hour_files(root: Path, hour_start: int) -> list[Path]:
    directory, prefix = hour_dir(root, hour_start)
    return sorted(directory.glob(f"{prefix}*.csv")) if directory.is_dir() else []


def row(seconds: int, channel_id: str, channel: str, source: str) -> str:
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(seconds))},{channel_id},{channel},{source}\n"


def append(root: Path, writer: str, events: Iterable[tuple[int, str, str, str]]) -> int:
    """Append (time, channel id, channel, source) rows to the writer's files; returns rows written."""
    by_hour: defaultdict[int, list[str]] = defaultdict(list)
    for seconds, channel_id, channel, source in events:
        by_hour[seconds - seconds % HOUR].append(row(seconds, channel_id, channel, source))
    for hour_start, rows in by_hour.items():
        directory, prefix = hour_dir(root, hour_start)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{prefix}{writer}.csv"
        with open(path, "a", encoding="utf-8") as out:
            if out.tell() == 0:
                out.write(HEADER)
            out.write("".join(rows))
    return sum(len(rows) for rows in by_hour.values())


def partition_of(channel_id: str, partitions: int) -> int:
    """Which of `partitions` a channel's backfill belongs to (stable across machines)."""
    return zlib.crc32(channel_id.encode()) % partitions


def read_hour(root: Path, hour_start: int, keep: Callable[[bytes], bool],
              into: defaultdict[bytes, list[int]], names: dict[bytes, bytes]) -> int:
    """Add the times of one hour's events whose channel id `keep` accepts to `into`
    (channel id → times), and their channel names to `names`; returns rows read.
    Rows that do not parse are skipped."""
    times: dict[bytes, int] = {}
    kept: dict[bytes, bool] = {}
    rows = 0
    for path in hour_files(root, hour_start):
        with open(path, "rb") as source:
            data = source.read()
        # The time and channel id of every row, found by the regex engine: the loop below is
        # all the Python a row costs (the backfill reads millions).
        for stamp, channel_id, name in _ROW.findall(data):
            wanted = kept.get(channel_id)
            if wanted is None:
                wanted = kept[channel_id] = keep(channel_id)
                if wanted:
                    names.setdefault(channel_id, name)
            if not wanted:
                continue
            seconds = times.get(stamp)
            if seconds is None:
                try:
                    seconds = times[stamp] = _seconds(stamp)
                except ValueError:
                    continue
            into[channel_id].append(seconds)
            rows += 1
    return rows


_ROW = re.compile(rb"^(.{19}),([^,\n]*),([^,\n]*),", re.MULTILINE)  # time, channel id, channel


def _seconds(stamp: bytes) -> int:
    """`2026-03-05 14:13:00` (UTC) → seconds; ValueError if it is not that."""
    return calendar.timegm(time.strptime(stamp.decode("ascii", "replace"), "%Y-%m-%d %H:%M:%S"))
