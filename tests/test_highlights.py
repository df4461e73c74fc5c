"""The highlight detector's core (analytics/highlights.py) on synthetic traffic with known answers."""
from __future__ import annotations

import dataclasses
import random

import pytest

from analytics.highlights import Detector, Settings, highlight_id
from common.config import ConfigError, Env
from common.wire import Highlight

W = 10_000  # the default window, ms
BASE = 170_000_000  # a window index in 2023: traffic starts at BASE·W


def poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth's method for small means, a normal approximation for large ones)."""
    if mean > 50:
        return max(0, round(rng.gauss(mean, mean ** 0.5)))
    limit, k, p = 2.718281828459045 ** -mean, 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def run(counts: list[int], settings: Settings | None = None, channel: str = "#c", detector: Detector | None = None,
        first: int = 0) -> list[Highlight]:
    """Feed `counts[i]` messages spread over window BASE+first+i, closing each window on time."""
    detector = detector or Detector(settings or Settings())
    fired = []
    window_ms = detector.settings.window_ms
    for offset, count in enumerate(counts):
        index = BASE + first + offset
        for j in range(count):
            detector.add(channel, index * window_ms + j * window_ms // max(count, 1), f"{offset}.{j}")
        # The clock passes the window's end and the grace: it closes.
        fired += detector.advance((index + 1) * window_ms + detector.settings.grace_ms).highlights
    return fired


def fired_at(highlights: list[Highlight], first: int = 0, window_ms: int = W) -> list[int]:
    """The windows that fired, counted from the first window fed."""
    return [h.window_start_ms // window_ms - BASE - first for h in highlights]


def rng_counts(seed: int, rates: list[float], window_s: float = 10.0) -> list[int]:
    rng = random.Random(seed)
    return [poisson(rng, rate * window_s) for rate in rates]


STEADY = [50] * 12  # 5 messages a second for two minutes

CASES = [
    # name, settings, counts per window, windows that fire
    ("a burst after steady chat fires", {}, STEADY + [200] + [50] * 5, [12]),
    ("a burst that lasts fires once, then the cooldown holds", {}, STEADY + [200] * 10, [12]),
    ("two bursts beyond the cooldown fire twice", {}, STEADY + [200] + [50] * 10 + [250], [12, 23]),
    ("a burst inside the cooldown does not fire again", {"cooldown": 6}, STEADY + [200, 50, 50, 250], [12]),
    ("a burst right after the first window is not judged: warming up", {}, [50, 50, 200, 50], []),
    ("the first window a detector sees is never judged, however big", {}, [500] + [50] * 12, []),
    ("a slow ramp does not fire", {}, [20 + 2 * i for i in range(90)], []),
    ("a slow ramp does not fire comparing the rate either", {"compare": "rate"},
     [20 + 2 * i for i in range(90)], []),
    ("a quickening ramp does not fire on the derivative", {}, [round(20 * 1.1 ** i) for i in range(40)], []),
    # 10 % more per window: the rate stands 3.2 times its 30-window average, a score of 2.2 (once the
    # average is long enough), again each time the cooldown allows.
    ("… but does comparing the rate with its average", {"compare": "rate"},
     [round(20 * 1.1 ** i) for i in range(40)], [29, 36]),
    ("a steady high rate does not fire", {}, rng_counts(1, [100.0] * 200), []),
    ("a steady lively rate does not fire", {}, rng_counts(2, [5.0] * 200), []),
    ("a quiet channel (a trickle under min_rate) does not fire", {}, rng_counts(3, [0.3] * 500), []),
    ("a quiet channel's busier window stays under min_rate", {}, [2] * 12 + [9] + [2] * 3, []),
    ("a quiet channel's burst must climb threshold × min_rate: 2 → 21 a window does not", {},
     [2] * 12 + [21] + [2] * 3, []),
    ("… 2 → 25 does", {}, [2] * 12 + [25] + [2] * 3, [12]),
    ("a lower min_rate lets a quieter channel fire", {"min_rate": 0.5}, [2] * 12 + [12] + [2] * 3, [12]),
    ("a jump under the threshold does not fire", {}, STEADY + [140], []),
    ("a lower threshold lets it", {"threshold": 1.5}, STEADY + [140], [12]),
    ("a burst building over two windows fires on its steeper step", {}, STEADY + [110, 260], [13]),
    ("a burst after silence fires once the average has warmed up", {},
     [0] * 3 + [10] * 8 + [80], [11]),
    ("short windows work alike", {"window_ms": 1000, "grace_ms": 300}, [5] * 12 + [20], [12]),
]


@pytest.mark.parametrize("name, overrides, counts, expected", CASES, ids=[case[0] for case in CASES])
def test_detector_on_synthetic_traffic(name, overrides, counts, expected):
    settings = dataclasses.replace(Settings(), **overrides)
    assert fired_at(run(counts, settings), window_ms=settings.window_ms) == expected


def test_a_highlight_carries_its_window_rate_baseline_score_and_chat():
    [highlight] = run(STEADY + [200])
    start = (BASE + 12) * W
    assert highlight == Highlight(
        id=f"c:{start}", channel="#c", window_start_ms=start, window_end_ms=start + W,
        rate=20.0, baseline=5.0, score=3.0,  # (20 − 5) / 5: the rate climbed three baselines in one window
        messages=200, message_ids=[f"12.{j}" for j in range(200)])
    assert highlight.id == highlight_id("#c", start)
    # Comparing the rate with its average, the same window scores its distance from the baseline.
    [by_rate] = run(STEADY + [300], dataclasses.replace(Settings(), compare="rate"))
    assert (by_rate.rate, by_rate.baseline, by_rate.score) == (30.0, 5.0, 5.0)


def test_the_chat_clip_is_capped_but_the_count_is_not():
    [highlight] = run(STEADY + [200], dataclasses.replace(Settings(), clip=10))
    assert highlight.messages == 200 and highlight.message_ids == [f"12.{j}" for j in range(10)]


def test_windows_of_a_channel_close_on_the_clock_even_when_it_is_silent_and_it_is_forgotten():
    detector = Detector(Settings())
    run([50] * 3, detector=detector)
    assert "#c" in detector.channels
    # No message for a while: the clock alone closes the windows (as zeros), one tick at a time.
    tick = detector.advance((BASE + 4) * W + Settings().grace_ms)
    assert tick.closed == 1 and detector.channels["#c"].closed == BASE + 3
    # Silent for a whole average: nothing left to remember.
    tick = detector.advance((BASE + 3 + 30 + 1) * W + Settings().grace_ms)
    assert tick.forgotten == 1 and "#c" not in detector.channels
    # It comes back: a new first window, a new warm-up (no highlight from the burst at once).
    assert run([200, 50, 400], detector=detector, first=40) == []


def test_quiet_channels_close_together_with_busy_ones():
    detector = Detector(Settings())
    for channel in ("#quiet", "#busy"):
        detector.add(channel, BASE * W, "x")
    detector.add("#busy", (BASE + 5) * W, "y")
    detector.advance((BASE + 7) * W + Settings().grace_ms)
    assert detector.channels["#quiet"].closed == detector.channels["#busy"].closed == BASE + 6


def test_a_late_message_is_not_counted_in_a_closed_window():
    detector = Detector(Settings())
    run([50] * 3, detector=detector)
    detector.add("#c", (BASE + 1) * W + 5, "late")
    assert detector.late == 1


def test_nothing_happens_between_window_closes():
    detector = Detector(Settings())
    run([50] * 3, detector=detector)
    now = (BASE + 3) * W + Settings().grace_ms
    assert detector.advance(now + W // 2).closed == 0


# ---- restarts and reconnections


def restarted(before: Detector, counts: list[int], first: int, settings: Settings | None = None,
              saved: object = "from before") -> tuple[Detector, list[Highlight]]:
    """A new detector (the restarted exchange) fed `counts` from window `first`, restoring
    each channel it sees from what `before` persisted (or from `saved`)."""
    state = before.state("#c") if saved == "from before" else saved
    detector = Detector(settings or before.settings, restores=True)
    fired = []
    for offset, count in enumerate(counts):
        index = BASE + first + offset
        for j in range(count):
            detector.add("#c", index * W + j * W // max(count, 1), f"{first + offset}.{j}")
        for channel in detector.take_new():
            detector.restore(channel, state)  # type: ignore[arg-type]
        fired += detector.advance((index + 1) * W + detector.settings.grace_ms).highlights
    return detector, fired


def test_a_restart_that_loses_windows_makes_no_false_highlight():
    before = Detector(Settings())
    assert run(STEADY, detector=before) == []
    # Down for two windows; the window it came back in holds only what arrived after the restart (10 of 50).
    # Were that window complete, 10 → 50 would be a jump of 0.8 baselines, and 30 → 300 after a busier
    # minute one of several.
    assert restarted(before, [10] + [50] * 10, first=14)[1] == []
    busier = Detector(Settings())
    run([300] * 12, detector=busier)
    assert restarted(busier, [30, 300, 300], first=14)[1] == []


def test_a_restored_detector_needs_no_new_warmup_and_never_judges_a_window_twice():
    before = Detector(Settings())
    run(STEADY, detector=before)
    # Back one window later: the first window is not complete, the next is, the one after bursts and
    # fires: its average came from before the restart.
    _, fired = restarted(before, [50, 50, 200], first=13)
    assert fired_at(fired) == [15] and fired[0].baseline == 5.0
    # A detector that restored nothing would still be warming up.
    assert restarted(before, [50, 50, 200], first=13, saved=None)[1] == []
    # Messages of windows the previous run closed are late: not counted again, nothing judged twice.
    replay = Detector(Settings(), restores=True)
    replay.add("#c", (BASE + 11) * W, "again")
    replay.take_new()
    replay.restore("#c", before.state("#c"))
    assert replay.late == 1 and replay.advance((BASE + 13) * W + 2000).highlights == []


def test_restored_state_keeps_the_cooldown():
    before = Detector(Settings())
    assert fired_at(run(STEADY + [200], detector=before)) == [12]
    # The burst goes on across the restart: no second highlight inside the cooldown.
    assert restarted(before, [200, 200, 200, 50], first=14)[1] == []


def test_state_from_another_window_length_is_ignored():
    before = Detector(Settings())
    run(STEADY, detector=before)
    detector, _ = restarted(before, [50], first=13, settings=dataclasses.replace(Settings(), window_ms=5000))
    assert list(detector.channels["#c"].counts) == [-1, 25]  # only its own windows (the first not complete)


def test_a_reconnection_gap_is_not_mistaken_for_a_jump():
    detector = Detector(Settings())
    run(STEADY, detector=detector)
    # Disconnected during window 12, back in window 14: those windows saw only part of the chat.
    detector.gap((BASE + 14) * W + 5000)
    assert run([5, 0, 20, 50, 50, 50], detector=detector, first=12) == []
    assert fired_at(run([200], detector=detector, first=18), first=18) == [0]
    # A gap in one channel leaves the others' windows complete.
    other = Detector(Settings())
    run(STEADY, detector=other, channel="#a")
    run(STEADY, detector=other, channel="#b")
    other.gap((BASE + 12) * W, "#a")
    assert other.channels["#a"].since == BASE + 13 and other.channels["#b"].since == BASE + 1


# ---- settings


def test_settings_from_the_environment():
    env = Env({"HIGHLIGHT_WINDOW": "1s", "HIGHLIGHT_AVERAGE": "12", "HIGHLIGHT_COMPARE": "rate",
               "HIGHLIGHT_THRESHOLD": "1.5", "HIGHLIGHT_MIN_RATE": "0.5", "HIGHLIGHT_WARMUP": "4",
               "HIGHLIGHT_COOLDOWN": "2", "HIGHLIGHT_GRACE": "300ms", "HIGHLIGHT_CLIP": "50"})
    assert Settings.from_env(env) == Settings(window_ms=1000, average=12, compare="rate", threshold=1.5,
                                              min_rate=0.5, warmup=4, cooldown=2, grace_ms=300, clip=50)
    assert Settings.from_env(Env({})) == Settings()


@pytest.mark.parametrize("env, says", [
    ({"HIGHLIGHT_WINDOW": "soon"}, "HIGHLIGHT_WINDOW: expected a duration"),
    ({"HIGHLIGHT_WINDOW": "50ms"}, "HIGHLIGHT_WINDOW must be at least 100ms"),
    ({"HIGHLIGHT_COMPARE": "vibes"}, "HIGHLIGHT_COMPARE must be one of derivative, rate"),
    ({"HIGHLIGHT_THRESHOLD": "-1"}, "HIGHLIGHT_THRESHOLD: expected a number above zero"),
    ({"HIGHLIGHT_THRESHOLD": "lots"}, "HIGHLIGHT_THRESHOLD: could not convert"),
    ({"HIGHLIGHT_WARMUP": "40"}, "HIGHLIGHT_WARMUP (40) cannot exceed HIGHLIGHT_AVERAGE (30)"),
])
def test_bad_settings_name_the_variable(env, says):
    with pytest.raises(ConfigError, match=says.replace("(", r"\(").replace(")", r"\)")):
        Settings.from_env(Env(env))
