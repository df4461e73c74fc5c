"""The stream session core (analytics.sessions) from the seed's three rules, fed by
hand, and what the live driver adds to it (lateness, restarts); the summaries
of a session's chat (analytics.summaries)."""
from __future__ import annotations

import json

import pytest

from analytics.sessions import (
    CLOSED,
    COVERED,
    FED,
    LATE,
    OPENED,
    PENDING,
    LiveSessions,
    Rules,
    Session,
    SessionCore,
    format_time,
    parse_time,
    sessions_of,
)
from analytics.summaries import ChatMinutes, emote_uses, summarize, tag_value

RULES = Rules()  # 15-minute gap, one-minute events, cut past 24 hours
MIN = 60


def at(text: str) -> int:
    return parse_time(text)


def every(first: str, last: str, step: int = MIN) -> list[int]:
    """Events from `first` to `last` (both included), `step` seconds apart."""
    return list(range(at(first), at(last) + 1, step))


def shown(sessions: list[Session]) -> list[tuple[str, str]]:
    return [(format_time(s.start), format_time(s.end)) for s in sessions]


# name, event times, sessions as (start, end)
CASES = [
    ("one minute", [at("2026-03-05 14:13:00")], [("2026-03-05 14:13:00", "2026-03-05 14:14:00")]),
    ("the seed's record", every("2026-03-05 14:13:00", "2026-03-05 18:19:00"),
     [("2026-03-05 14:13:00", "2026-03-05 18:20:00")]),
    ("a gap of exactly 15 minutes ends the session",
     [at("2026-03-05 10:00:00"), at("2026-03-05 10:15:00")],
     [("2026-03-05 10:00:00", "2026-03-05 10:01:00"), ("2026-03-05 10:15:00", "2026-03-05 10:16:00")]),
    ("a gap of 14:59 does not",
     [at("2026-03-05 10:00:00"), at("2026-03-05 10:14:59")],
     [("2026-03-05 10:00:00", "2026-03-05 10:15:59")]),
    ("events ten minutes apart are one session", every("2026-03-05 10:00:00", "2026-03-05 12:00:00", 600),
     [("2026-03-05 10:00:00", "2026-03-05 12:01:00")]),
    ("the stream restarts after a break of an hour",
     every("2026-03-05 10:00:00", "2026-03-05 11:00:00") + every("2026-03-05 12:00:00", "2026-03-05 12:30:00"),
     [("2026-03-05 10:00:00", "2026-03-05 11:01:00"), ("2026-03-05 12:00:00", "2026-03-05 12:31:00")]),
    ("crossing one UTC midnight in under 24 hours: not cut",
     every("2026-03-05 20:00:00", "2026-03-06 05:59:00"), [("2026-03-05 20:00:00", "2026-03-06 06:00:00")]),
    ("exactly 24 hours: not cut", every("2026-03-05 10:00:00", "2026-03-06 09:59:00"),
     [("2026-03-05 10:00:00", "2026-03-06 10:00:00")]),
    ("25 hours crossing one midnight: cut there",
     every("2026-03-05 10:00:00", "2026-03-06 10:59:00"),
     [("2026-03-05 10:00:00", "2026-03-06 00:00:00"), ("2026-03-06 00:00:00", "2026-03-06 11:00:00")]),
    ("49 hours crossing two midnights: cut at both",
     every("2026-03-05 00:30:00", "2026-03-07 01:29:00"),
     [("2026-03-05 00:30:00", "2026-03-06 00:00:00"), ("2026-03-06 00:00:00", "2026-03-07 00:00:00"),
      ("2026-03-07 00:00:00", "2026-03-07 01:30:00")]),
    ("49 hours crossing three midnights",
     every("2026-03-05 23:30:00", "2026-03-08 00:29:00"),
     [("2026-03-05 23:30:00", "2026-03-06 00:00:00"), ("2026-03-06 00:00:00", "2026-03-07 00:00:00"),
      ("2026-03-07 00:00:00", "2026-03-08 00:00:00"), ("2026-03-08 00:00:00", "2026-03-08 00:30:00")]),
    ("starting at midnight, 24 hours and a minute",
     every("2026-03-05 00:00:00", "2026-03-06 00:00:00"),
     [("2026-03-05 00:00:00", "2026-03-06 00:00:00"), ("2026-03-06 00:00:00", "2026-03-06 00:01:00")]),
    ("the 24-hour mark passed two midnights after the start: both cut at once",
     every("2026-03-05 23:55:00", "2026-03-06 23:45:00", 600) + [at("2026-03-06 23:54:00")]
     + every("2026-03-07 00:00:00", "2026-03-07 00:05:00"),
     [("2026-03-05 23:55:00", "2026-03-06 00:00:00"), ("2026-03-06 00:00:00", "2026-03-07 00:00:00"),
      ("2026-03-07 00:00:00", "2026-03-07 00:06:00")]),
    ("a session cut at midnight that ends right after it",
     every("2026-03-05 10:00:00", "2026-03-06 11:00:00") + [at("2026-03-06 11:20:00")],
     [("2026-03-05 10:00:00", "2026-03-06 00:00:00"), ("2026-03-06 00:00:00", "2026-03-06 11:01:00"),
      ("2026-03-06 11:20:00", "2026-03-06 11:21:00")]),
    ("a 40-hour stream after a short one the same day",
     every("2026-03-05 01:00:00", "2026-03-05 02:00:00") + every("2026-03-05 08:00:00", "2026-03-06 23:59:00"),
     [("2026-03-05 01:00:00", "2026-03-05 02:01:00"), ("2026-03-05 08:00:00", "2026-03-06 00:00:00"),
      ("2026-03-06 00:00:00", "2026-03-07 00:00:00")]),
]


@pytest.mark.parametrize("name, times, expected", CASES, ids=[case[0] for case in CASES])
def test_sessions_follow_the_seeds_three_rules(name, times, expected):
    assert shown(sessions_of("123456", times, RULES)) == expected


@pytest.mark.parametrize("name, times, expected", CASES, ids=[case[0] for case in CASES])
def test_fed_one_event_at_a_time_with_the_clock_the_core_closes_each_session_as_it_ends(name, times, expected):
    core = SessionCore(RULES)
    closed, opened = [], []
    for t in times:
        for kind, session in core.advance(t) + core.feed("123456", [t]):
            (closed if kind == CLOSED else opened).append(session)
        current = core.current("123456")
        assert current is not None and current.open and current.end == min(t + MIN, current.end)
    for kind, session in core.advance(times[-1] + RULES.gap):
        closed.append(session)
    assert shown(closed) == expected
    # Every session was announced open before it closed, with the same start (its id).
    assert [s.start for s in opened] == [s.start for s in closed]
    assert core.runs == {}


def test_a_session_is_closed_exactly_gap_after_its_last_event():
    core = SessionCore(RULES)
    core.feed("1", [at("2026-03-05 10:00:00")])
    assert core.advance(at("2026-03-05 10:14:59")) == []
    [(kind, session)] = core.advance(at("2026-03-05 10:15:00"))
    assert kind == CLOSED and shown([session]) == [("2026-03-05 10:00:00", "2026-03-05 10:01:00")]


def test_duplicated_and_already_covered_events_change_nothing():
    times = every("2026-03-05 10:00:00", "2026-03-05 11:00:00")
    doubled = sorted(times + times + [at("2026-03-05 10:30:30")])
    assert sessions_of("1", doubled, RULES) == sessions_of("1", times, RULES)


def test_channels_are_independent():
    core = SessionCore(RULES)
    core.feed("a", [at("2026-03-05 10:00:00")])
    core.feed("b", [at("2026-03-05 10:10:00")])
    assert [s.channel_id for _, s in core.advance(at("2026-03-05 10:20:00"))] == ["a"]


def test_the_id_is_the_channel_and_start_as_in_the_seed():
    [session] = sessions_of("123456", [at("2026-03-05 14:13:00")], RULES)
    assert session.id == "123456:2026-03-05 14:13:00"


def test_times_read_in_the_seeds_form_and_iso_8601():
    assert at("2021-03-05 14:13:00") == at("2021-03-05T14:13:00Z") == at("2021-03-05T15:13:00+01:00") == 1614953580
    with pytest.raises(ValueError):
        parse_time("yesterday")


# ---- the live driver's half: events as they arrive


def live(arrivals: list[tuple[int, int]], lateness: int = 120, rules: Rules = RULES,
         restart_at: int | None = None) -> tuple[list[Session], list[str]]:
    """Feed (arrival time, event time) pairs to LiveSessions, ticking every second of
    arrival; `restart_at`: carry the state into a new one there, as an exchange restart does."""
    driver = LiveSessions(rules, lateness)
    closed: list[Session] = []
    verdicts = []
    arrivals = sorted(arrivals)
    now = arrivals[0][0]
    end = arrivals[-1][0] + rules.gap + lateness + 2
    queue = list(arrivals)
    while now <= end:
        if restart_at is not None and now == restart_at:
            states = {c: driver.state(c) for c in set(driver.core.runs) | set(driver.pending)}
            driver = LiveSessions(rules, lateness)
            for channel_id, (run, pending) in states.items():
                driver.restore(channel_id, run, pending)
        while queue and queue[0][0] <= now:
            _, t = queue.pop(0)
            verdict, changes = driver.offer("1", t, now)
            verdicts.append(verdict)
            closed += [s for kind, s in changes if kind == CLOSED]
        closed += [s for kind, s in driver.tick(now) if kind == CLOSED]
        now += 1
    return closed, verdicts


@pytest.mark.parametrize("name, times, expected", CASES[:9], ids=[case[0] for case in CASES[:9]])
def test_live_events_arriving_on_time_give_the_cores_sessions(name, times, expected):
    closed, verdicts = live([(t + 5, t) for t in times])
    assert shown(closed) == expected
    assert set(verdicts) == {PENDING}


def test_out_of_order_events_within_the_lateness_count_as_if_on_time():
    times = every("2026-03-05 10:00:00", "2026-03-05 11:00:00")
    # Every other pair arrives swapped, the first one of the stream last of its minute pair.
    arrivals = [(times[i ^ 1] + 50, times[i]) for i in range(len(times) - 1)] + [(times[-1] + 50, times[-1])]
    closed, _ = live(arrivals)
    assert shown(closed) == [("2026-03-05 10:00:00", "2026-03-05 11:01:00")]


def test_a_late_event_within_the_lateness_that_bridges_a_gap_makes_one_session():
    first, bridge, second = at("2026-03-05 10:00:00"), at("2026-03-05 10:10:00"), at("2026-03-05 10:20:00")
    closed, _ = live([(first + 1, first), (second + 1, second)])
    assert len(closed) == 2
    closed, verdicts = live([(first + 1, first), (bridge + 90, bridge), (second + 1, second)])
    assert shown(closed) == [("2026-03-05 10:00:00", "2026-03-05 10:21:00")]
    assert verdicts == [PENDING, PENDING, PENDING]


def test_duplicated_events_as_they_arrive_change_nothing():
    times = every("2026-03-05 10:00:00", "2026-03-05 10:30:00")
    closed, verdicts = live([(t + 1, t) for t in times] + [(t + 30, t) for t in times])
    assert shown(closed) == [("2026-03-05 10:00:00", "2026-03-05 10:31:00")]
    assert verdicts.count(COVERED) == len(times)


def test_an_event_later_than_the_lateness_that_continues_the_open_session_is_fed_at_once():
    times = every("2026-03-05 10:00:00", "2026-03-05 10:30:00")
    late = at("2026-03-05 10:35:00")
    closed, verdicts = live([(t + 1, t) for t in times] + [(late + 300, late)])
    assert shown(closed) == [("2026-03-05 10:00:00", "2026-03-05 10:36:00")]
    assert verdicts[-1] == FED


def test_an_event_too_late_for_a_session_already_closed_is_left_to_the_backfill():
    times = every("2026-03-05 10:00:00", "2026-03-05 10:30:00")
    late = at("2026-03-05 10:40:00")
    closed, verdicts = live([(t + 1, t) for t in times] + [(late + 3600, late)])
    assert shown(closed) == [("2026-03-05 10:00:00", "2026-03-05 10:31:00")]
    assert verdicts[-1] == LATE
    # The backfill, with every event, makes them one session.
    assert shown(sessions_of("1", times + [late], RULES)) == [("2026-03-05 10:00:00", "2026-03-05 10:41:00")]


def test_a_stream_whose_every_event_comes_minutes_late_is_followed_live():
    times = every("2026-03-05 10:00:00", "2026-03-05 11:00:00")
    closed, verdicts = live([(t + 300, t) for t in times], lateness=45)
    assert shown(closed) == [("2026-03-05 10:00:00", "2026-03-05 11:01:00")]
    assert set(verdicts) == {FED}


def test_a_late_event_that_a_session_closed_lately_could_have_held_is_left_to_the_backfill():
    times = every("2026-03-05 10:00:00", "2026-03-05 10:30:00")
    late = at("2026-03-05 10:40:00")  # 10 minutes after the last: it would have continued the session
    closed, verdicts = live([(t + 1, t) for t in times] + [(late + 900, late)], lateness=45)
    assert shown(closed) == [("2026-03-05 10:00:00", "2026-03-05 10:31:00")]
    assert verdicts[-1] == LATE


@pytest.mark.parametrize("restart", ["2026-03-05 10:30:30", "2026-03-05 23:59:30", "2026-03-06 00:00:30",
                                     "2026-03-06 10:59:30"])
def test_a_restart_carrying_the_state_changes_no_session(restart):
    times = every("2026-03-05 10:00:00", "2026-03-06 10:59:00")  # 25 hours: cut at midnight
    closed, _ = live([(t + 5, t) for t in times], restart_at=at(restart))
    assert shown(closed) == [("2026-03-05 10:00:00", "2026-03-06 00:00:00"), ("2026-03-06 00:00:00", "2026-03-06 11:00:00")]


def test_the_deadline_is_when_no_event_can_change_the_channel_any_more():
    driver = LiveSessions(RULES, 120)
    t = at("2026-03-05 10:00:00")
    driver.offer("1", t, t)
    assert driver.deadline("1") == t + RULES.gap + 120
    assert driver.deadline("other") is None
    assert [kind for kind, _ in driver.tick(t + 120)] == [OPENED]
    assert [kind for kind, _ in driver.tick(t + RULES.gap + 120)] == [CLOSED]


# ---- summaries


def test_tags_and_emotes_are_read_as_twitch_sends_them():
    tags = "badge-info=;emotes=25:0-4,12-16/88:6-10;first-msg=1;room-id=42"
    assert tag_value(tags, "first-msg") == "1" and tag_value(tags, "room-id") == "42"
    assert tag_value(tags, "badge-info") == "" and tag_value(tags, "missing") == ""
    assert emote_uses("25:0-4,12-16/88:6-10", "Kappa Pog!! Kappa") == [("25", "Kappa", 2), ("88", "Pog!!", 1)]


def test_a_summary_counts_the_sessions_minutes_and_highlights_only():
    minutes = ChatMinutes(MIN)
    start = at("2026-03-05 10:00:00")
    chat = [  # (seconds after start, user, first-msg, emotes tag, text)
        (-30, "u0", "0", "", "before the session"),
        (5, "u1", "1", "25:0-4", "Kappa hi"),
        (10, "u2", "0", "", "hello"),
        (20, "u1", "0", "25:0-4,6-10", "Kappa Kappa"),
        (70, "u3", "1", "88:0-7", "PogChamp"),
        (75, "u2", "0", "", "again"),
        (80, "u2", "0", "", "and again"),
        (95, "u4", "0", "", "one more"),
        (200, "u5", "0", "", "after the session"),
    ]
    for offset, user, first, emotes, text in chat:
        minutes.add("#c", (start + offset) * 1000, user, f"emotes={emotes};first-msg={first}", text)
    stored = [stats for _, stats in minutes.ended(float("inf"), "test")]
    highlights = [json.dumps({"id": name, "window_start_ms": (start + offset) * 1000, "score": score})
                  for name, offset, score in (("inside", 60, 2.0), ("best", 90, 5.0), ("later", 130, 9.0),
                                              ("earlier", -10, 9.0))]
    summary = summarize(stored, highlights, start, start + 120, MIN)
    assert (summary.messages, summary.unique_chatters, summary.first_time_chatters) == (7, 4, 2)
    assert summary.peak_messages_per_minute == 4
    assert (summary.highlights, summary.top_highlights) == (2, ["best", "inside"])
    assert [(e.id, e.name, e.count) for e in summary.top_emotes] == [("25", "Kappa", 3), ("88", "PogChamp", 1)]


def test_records_of_one_minute_from_two_writers_add_up():
    minutes = ChatMinutes(MIN)
    start = at("2026-03-05 10:00:00")
    minutes.add("#c", start * 1000, "u1", "", "a")
    [(_, first)] = minutes.ended(float("inf"), "boot-1")
    minutes.add("#c", (start + 30) * 1000, "u2", "", "b")
    [(_, second)] = minutes.ended(float("inf"), "boot-2")
    summary = summarize([first, second], [], start, start + 60, MIN)
    assert (summary.messages, summary.unique_chatters, summary.peak_messages_per_minute) == (2, 2, 2)


def test_only_minutes_that_ended_are_handed_over():
    minutes = ChatMinutes(MIN)
    start = at("2026-03-05 10:00:00")
    minutes.add("#c", start * 1000, "u1", "", "a")
    assert minutes.ended(start + 59, "w") == []
    assert [stats.minute for _, stats in minutes.ended(start + 60, "w")] == [start]
