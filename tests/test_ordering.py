"""The edge's per-channel stream keeper (edge/ordering.py), fed events."""
from __future__ import annotations

import pytest

from common.wire import Event, Position
from edge.ordering import Heal, Ordering

BOOT = "b1"


def ev(seq: int, channel: str = "#c", gen: int = 1) -> Event:
    return Event(channel=channel, command="PRIVMSG", line=f"m{seq}", seq=seq, gen=gen)


def seqs(events: list[Event]) -> list[int]:
    return [event.seq for event in events]


def subscribed(start: int = 0, channel: str = "#c") -> Ordering:
    ordering = Ordering()
    ordering.open(channel)
    ordering.expect(channel, Position(BOOT, 1, start))
    return ordering


@pytest.mark.parametrize(("arrivals", "delivered", "duplicates"), [
    ([[1, 2, 3]], [1, 2, 3], 0),
    ([[1, 2], [2, 3], [1, 3, 4]], [1, 2, 3, 4], 3),  # a retried batch repeats events
    ([[1], [1], [1]], [1], 2),
])
def test_events_are_delivered_once_in_order(arrivals, delivered, duplicates):
    ordering = subscribed()
    out: list[int] = []
    for batch in arrivals:
        ready, heals = ordering.receive(BOOT, [ev(seq) for seq in batch])
        assert heals == []
        out += seqs(ready)
    assert out == delivered
    assert ordering.duplicates == duplicates


def test_a_gap_holds_what_follows_until_the_heal_answers():
    ordering = subscribed()
    ready, heals = ordering.receive(BOOT, [ev(1), ev(4), ev(5)])
    assert seqs(ready) == [1]
    assert heals == [Heal("#c", BOOT, 1, 1, 4)]
    ready, heals = ordering.receive(BOOT, [ev(6)])  # still held
    assert ready == [] and heals == []
    ready, heals = ordering.heal_answered(heals_out := Heal("#c", BOOT, 1, 1, 4), [ev(3), ev(2)])
    assert heals_out and seqs(ready) == [2, 3, 4, 5, 6] and heals == []
    assert (ordering.healed, ordering.gaps) == (2, 0)


def test_what_the_heal_cannot_find_is_counted_once_and_delivery_goes_on():
    ordering = subscribed()
    ordering.receive(BOOT, [ev(1)])
    _, [heal] = ordering.receive(BOOT, [ev(10)])
    ready, heals = ordering.heal_answered(heal, [ev(5)])
    assert seqs(ready) == [5, 10] and heals == []
    assert (ordering.healed, ordering.gaps) == (1, 7)  # 2-4 and 6-9
    ready, _ = ordering.receive(BOOT, [ev(11)])
    assert seqs(ready) == [11]


def test_the_subscription_start_tells_a_gap_at_the_first_event():
    ordering = subscribed(start=7)
    ready, heals = ordering.receive(BOOT, [ev(9)])
    assert ready == [] and heals == [Heal("#c", BOOT, 1, 7, 9)]


def test_events_before_the_start_is_known_set_it():
    ordering = Ordering()
    ordering.open("#c")
    ready, _ = ordering.receive(BOOT, [ev(41)])
    ordering.expect("#c", Position(BOOT, 1, 40))  # the answer came after the first event
    ready2, heals = ordering.receive(BOOT, [ev(42)])
    assert seqs(ready + ready2) == [41, 42] and heals == []


def test_a_new_stream_of_a_held_channel_starts_at_one():
    ordering = subscribed()
    ordering.receive(BOOT, [ev(1), ev(2)])
    # The exchange restarted: its new boot's stream is replayed from 1.
    ready, heals = ordering.receive("b2", [ev(1, gen=1), ev(2, gen=1)])
    assert seqs(ready) == [1, 2] and heals == []
    assert ordering.position("#c") == Position("b2", 1, 2)
    # The exchange forgot the channel and made it anew: generation 2, replayed from 1 — missing 1 is a gap.
    ready, heals = ordering.receive("b2", [ev(2, gen=2)])
    assert ready == [] and heals == [Heal("#c", "b2", 2, 0, 2)]


def test_recovering_a_dead_boot_fills_after_what_was_delivered():
    ordering = subscribed()
    ordering.receive(BOOT, [ev(1), ev(2)])
    ready = ordering.recover("#c", BOOT, [ev(4), ev(2), ev(3), ev(6)])
    assert seqs(ready) == [3, 4, 6] and ordering.gaps == 1
    assert ordering.recover("#c", "other", [ev(9)]) == []


def test_unsubscribed_channels_are_ignored_and_forgotten_ones_start_over():
    ordering = subscribed()
    assert ordering.receive(BOOT, [ev(1, channel="#other")]) == ([], [])
    ordering.forget("#c")
    assert ordering.receive(BOOT, [ev(5)]) == ([], [])
    assert ordering.position("#c") is None
    ordering.open("#c")
    ready, heals = ordering.receive(BOOT, [ev(5)])
    assert seqs(ready) == [5] and heals == []


def test_a_stale_heal_answer_changes_nothing():
    ordering = subscribed()
    _, [heal] = ordering.receive(BOOT, [ev(3)])
    ordering.forget("#c")
    assert ordering.heal_answered(heal, [ev(1), ev(2)]) == ([], [])
