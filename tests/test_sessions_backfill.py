"""The backfill against the live driver on the same events: streams of minutes to two
days, run through the exchange's session driver on a simulated clock (real Redis,
real archive files), then `chatd sessions backfill` day by day — it finds nothing
to change, its sessions are the core's on all the events, partitions add up to
the whole, and a day broken by hand is repaired."""
from __future__ import annotations

import dataclasses

import msgspec
from support import redis_shards

from analytics.sessions import DAY, Rules, format_time, parse_time, sessions_of
from chatd.backfill import backfill
from common.metrics import Metrics
from common.sessions import SessionSettings, SessionStore, day_of
from common.shards import ShardSet
from common.wire import Broadcast, Event, SessionRecord
from exchange.sessions import SessionDriver

SETTINGS = SessionSettings(gap=900, minute=60, lateness=120.0)
RULES = Rules(gap=900, minute=60)
TICK = 300  # simulated seconds between the driver's ticks


def at(text: str) -> int:
    return parse_time(text)


def every(first: str, last: str, step: int = 60) -> list[int]:
    return list(range(at(first), at(last) + 1, step))


# channel id → its events: streams that the backfill of one day can only get right by
# reading the days around it.
STREAMS = {
    "1001": every("2026-03-04 10:00:00", "2026-03-05 10:59:00"),  # 25 hours over one midnight
    "1002": every("2026-03-04 00:30:00", "2026-03-06 01:29:00"),  # 49 hours over two
    "1003": every("2026-03-05 20:00:00", "2026-03-06 05:59:00")  # under 24 hours over one
    + every("2026-03-06 06:15:00", "2026-03-06 07:00:00"),  # then a 16-minute break, and again
    "1004": every("2026-03-03 23:50:00", "2026-03-05 00:02:00"),  # started two days before the 5th
    "1005": every("2026-03-04 00:10:00", "2026-03-05 00:02:00"),  # as long, but not over 24 hours
    "1006": every("2026-03-05 23:50:00", "2026-03-06 23:55:00"),  # starts late, over 24 hours the next day
    "1007": [at("2026-03-05 12:00:00"), at("2026-03-05 12:14:59"), at("2026-03-05 12:29:59")],  # 14:59 apart
    "1008": [at("2026-03-05 12:00:00"), at("2026-03-05 12:15:00")],  # exactly 15:00 apart
}
DAYS = ["2026-03-03", "2026-03-04", "2026-03-05", "2026-03-06"]
END = at("2026-03-07 06:00:00")  # when the backfills run: every day is over


async def run_live(shards: ShardSet, archive_dir) -> None:
    """Every stream through the exchange's driver, events arriving a second after their
    minute, the driver ticking every five (simulated) minutes."""
    driver = SessionDriver(shards, dataclasses.replace(SETTINGS, archive=str(archive_dir)), Metrics(
        "127.0.0.1", 8125, "chatd", "test"))
    events = sorted((t, channel_id) for channel_id, times in STREAMS.items() for t in times)
    now = events[0][0] - events[0][0] % TICK
    while events or driver.names:
        now += TICK
        while events and events[0][0] + 1 <= now:
            t, channel_id = events.pop(0)
            driver.observe(Event(channel=f"#c{channel_id}", command="BROADCAST", line="",
                                 broadcast=Broadcast(channel_id, t)))
            driver._broadcasts[-1] = (*driver._broadcasts[-1][:2], t + 1)  # arrived a second late
        await driver.tick(now)
    assert now < END


def truth(day: str) -> dict[tuple[str, int], int]:
    """The core on every event: each session starting on `day`, closed, with its end."""
    return {(c, s.start): s.end for c, times in STREAMS.items() for s in sessions_of(c, times, RULES)
            if day_of(s.start) == day}


async def stored(store: SessionStore, day: str) -> dict[tuple[str, int], SessionRecord]:
    d0 = at(f"{day} 00:00:00")
    found = await store.between(sorted(STREAMS), d0, d0 + DAY)
    return {(r.channel_id, r.start): r for records in found.values() for r in records}


async def test_backfill_of_each_day_finds_what_the_live_driver_wrote_and_the_core_on_all_events(tmp_path):
    async with redis_shards(tmp_path) as shards:
        store = SessionStore(shards)
        await run_live(shards, tmp_path / "archive")
        for day in DAYS:
            live = await stored(store, day)
            assert {key: r.end for key, r in live.items()} == truth(day), day
            assert all(not r.open and r.summary is not None for r in live.values())
            outcome = await backfill(store, tmp_path / "archive", day, SETTINGS, workers=2, now=END)
            assert (outcome.inserted, outcome.corrected, outcome.deleted, outcome.open) == (0, 0, 0, 0), day
            assert outcome.unchanged == len(truth(day))
            assert await stored(store, day) == live
        # What rule 3 makes of the long ones, as the README reads it.
        shown = {(format_time(start), format_time(end)) for (c, start), end in truth("2026-03-05").items()
                 if c in ("1001", "1004", "1006")}
        assert shown == {("2026-03-05 00:00:00", "2026-03-05 11:00:00"),
                         ("2026-03-05 00:00:00", "2026-03-05 00:03:00"),
                         ("2026-03-05 23:50:00", "2026-03-06 00:00:00")}


async def test_partitions_add_up_to_the_whole_day_and_a_second_run_changes_nothing(tmp_path):
    async with redis_shards(tmp_path) as shards:
        store = SessionStore(shards)
        await run_live(shards, tmp_path / "archive")
        day = "2026-03-05"
        before = await stored(store, day)
        await store.delete(list(before))
        parts = [await backfill(store, tmp_path / "archive", day, SETTINGS, part, 3, now=END) for part in range(3)]
        assert sum(p.inserted for p in parts) == len(before) and sum(p.computed for p in parts) == len(before)
        assert await stored(store, day) == before  # summaries included
        again = await backfill(store, tmp_path / "archive", day, SETTINGS, now=END)
        assert (again.inserted, again.corrected, again.deleted, again.unchanged) == (0, 0, 0, len(before))


async def test_a_day_corrupted_deleted_and_added_to_by_hand_is_repaired(tmp_path):
    async with redis_shards(tmp_path) as shards:
        store = SessionStore(shards)
        await run_live(shards, tmp_path / "archive")
        day = "2026-03-05"
        good = await stored(store, day)
        (_, wrong), (gone_key, _) = sorted(good.items())[:2]
        await store.put([msgspec.structs.replace(wrong, end=wrong.end + 600),  # overlapping what follows
                         SessionRecord("1003", "#c1003", at("2026-03-05 08:00:00"), at("2026-03-05 09:00:00")),
                         SessionRecord("4242", "#c4242", at("2026-03-05 01:00:00"), at("2026-03-05 02:00:00"))])
        await store.delete([gone_key])
        outcome = await backfill(store, tmp_path / "archive", day, SETTINGS, now=END)
        assert (outcome.inserted, outcome.corrected, outcome.deleted) == (1, 1, 2)
        assert await stored(store, day) == good
        assert "4242" not in await store.day_channels(day)


async def test_sessions_still_open_are_left_to_the_live_driver(tmp_path):
    day = "2026-03-05"
    async with redis_shards(tmp_path) as shards:
        store = SessionStore(shards)
        await run_live(shards, tmp_path / "archive")
        # Backfill at a time when 1003's and 1006's streams (from 20:00 and 23:50) were still going.
        outcome = await backfill(store, tmp_path / "archive", day, SETTINGS, now=at("2026-03-06 01:00:00"))
        assert (outcome.open, outcome.deleted, outcome.inserted, outcome.corrected) == (2, 0, 0, 0)
