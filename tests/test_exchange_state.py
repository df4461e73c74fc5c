"""The exchange's per-channel streams and delivery batches, without sockets."""
from __future__ import annotations

import json

import pytest

from common import wire
from common.metrics import Metrics
from common.wire import CLOSED, Event
from exchange.channels import ChannelLog, ChannelTable, MessageIds
from exchange.links import MAX_BATCH_BYTES, EdgeLink


def event(n: int, rv: int = 0, text: str = "") -> Event:
    return Event(channel="#c", command="PRIVMSG", line=f"l{n}", id=f"id{n}", login="u", text=text or f"t{n}",
                 sent_ms=n, rv=rv)


def decoded(items: list[bytes]) -> list[int]:
    return [wire.decode(item, Event).seq for item in items]


def test_ordering_numbers_events_and_keeps_a_bounded_history():
    log = ChannelLog("#c", gen=3)
    for n in range(1, 8):
        log.order(event(n), history_limit=5)
    assert log.seq == 7 and [entry.seq for entry in log.history][-5:] == [3, 4, 5, 6, 7]
    assert len(log.history) <= 5 + 5 // 4 + 1  # trimmed in steps
    assert decoded(log.since(4)) == [5, 6, 7]
    assert decoded(log.since(0))[-5:] == [3, 4, 5, 6, 7]
    assert log.since(7) == []
    assert wire.decode(log.since(6)[0], Event).gen == 3


@pytest.mark.parametrize(("after", "before", "found", "complete"), [
    (3, 6, [4, 5], True),
    (1, 5, [4], False),  # 2 and 3 fell out of the history
    (6, 9, [7], False),  # 8 was never ordered
    (5, 6, [], True),
])
def test_ranges_say_whether_they_are_complete(after, before, found, complete):
    log = ChannelLog("#c", gen=1)
    for n in range(1, 8):
        log.order(event(n), history_limit=4)  # keeps 4..7
    items, whole = log.between(after, before)
    assert (decoded(items), whole) == (found, complete)


def test_recent_ids_are_remembered_for_a_while_then_forgotten():
    ids = MessageIds(seconds=30)
    ids.remember("a", 7, now=100.0)
    ids.remember("b", CLOSED, now=110.0)
    assert (ids.get("a"), ids.get("b"), ids.get("c")) == (7, CLOSED, None)
    ids.remember("c", 9, now=135.0)  # "a" is now older than 30 s
    assert (ids.get("a"), ids.get("b"), ids.get("c")) == (None, CLOSED, 9)


def test_a_message_is_found_by_id_while_the_history_holds_it():
    log = ChannelLog("#c", gen=1)
    for n in range(1, 8):
        log.order(event(n), history_limit=4)
    found = log.find("id6")
    assert found is not None and (found.login, found.text, found.sent_ms, found.seq) == ("u", "t6", 6, 6)
    assert log.find("id1") is None


def test_a_live_move_replays_from_the_route_version():
    log = ChannelLog("#c", gen=1)
    for n, rv in ((1, 0), (2, 0), (3, 5), (4, 5)):
        log.order(event(n, rv=rv), history_limit=10)
    items, baseline = log.since_version(5)
    assert decoded(items) == [3, 4] and baseline == 2
    assert log.since_version(9) == ([], 4)


def test_idle_channels_are_forgotten_and_come_back_as_a_new_generation():
    table = ChannelTable(history_limit=10, idle_seconds=0.0)
    first = table.open("#c")
    first.order(event(1), history_limit=10)
    held = table.open("#held")
    held.subscribe(object())  # type: ignore[arg-type]
    assert table.sweep() == 1 and table.get("#c") is None and table.get("#held") is held
    again = table.open("#c")
    assert again.gen != first.gen and again.seq == 0


class FakeClient:
    remote = "edge"


def test_delivery_batches_stay_under_the_byte_bound_and_stop_after_a_move():
    link = EdgeLink("http://edge", FakeClient(), "boot", Metrics("127.0.0.1", 9, "t", "t"), max_queue=100_000)
    big = wire.encode(event(1, text="x" * 400_000))
    for _ in range(5):
        link.enqueue(big)
    link.enqueue(wire.encode(wire.Moved("#c", "event", 2)), marker=True)
    link.enqueue(wire.encode(event(2)))
    bodies = []
    while link.queue:
        body, count = link._next_batch()
        bodies.append((json.loads(body), len(body)))
    assert all(size < MAX_BATCH_BYTES + 1000 for _, size in bodies)
    assert [len(b["events"]) for b, _ in bodies] == [2, 2, 1, 1]
    assert [len(b["moves"]) for b, _ in bodies] == [0, 0, 1, 0]  # nothing follows a move in its batch
    assert all(b["boot"] == "boot" for b, _ in bodies)


def test_an_overflowing_queue_drops_the_oldest():
    link = EdgeLink("http://edge", FakeClient(), "boot", Metrics("127.0.0.1", 9, "t", "t"), max_queue=3)
    for n in range(1, 6):
        link.enqueue(wire.encode(event(n)))
    assert [wire.decode(item, Event).line for _, item in link.queue] == ["l3", "l4", "l5"]
