"""`chatd bench highlights`: what the live highlight detector costs the exchange.

Two clusters run side by side, at the same time, one with the detector on and
one with it off (HIGHLIGHTS), so whatever else the machine does weighs on both
alike; `--rounds` repeats that with fresh clusters. Each exchange gets the same chat: `--rate` messages a second (5,000 by default) for
`--duration` seconds, published straight to the exchange as clue publishes them
(one batch every 10 ms, with Twitch's tags and a message id each) over
`--channels` channels, half of it into one. Measured: the exchange process's CPU
per message, from /proc, and the detector's own cost per message, timed in this
process on the same traffic (`Detector.add` as `observe` calls it, plus the
windows it closes) — the part of the exchange's CPU it can account for.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from typing import Any

import aiohttp

from analytics.highlights import Detector, Settings
from common import wire
from loadtest.measure import cpu_seconds, print_progress
from loadtest.systems import ChatdSystem

BATCH_EVERY = 0.01  # seconds: clue's publisher sends one batch per tick
TAGS = ("badge-info=;badges=;color=#1E90FF;display-name={login};emotes=;first-msg=0;flags=;id={id};mod=0;"
        "returning-chatter=0;room-id=1234567;subscriber=0;tmi-sent-ts={ts};turbo=0;user-id=7654321;user-type=")


def channel_of(sequence: int, channels: int) -> str:
    """Half the chat into #hot, the rest spread over the other channels."""
    return "#hot" if sequence % 2 or channels == 1 else f"#room{sequence % (channels - 1)}"


def event(sequence: int, channels: int) -> wire.Event:
    channel, login, message_id = channel_of(sequence, channels), f"user{sequence % 5000}", str(uuid.uuid4())
    now = int(time.time() * 1000)
    return wire.Event(channel=channel, command="PRIVMSG", line=f":{login}!{login}@{login}.tmi.twitch.tv PRIVMSG "
                      f"{channel} :message number {sequence} Kappa", tags=TAGS.format(login=login, id=message_id,
                      ts=now), id=message_id, login=login, user_id="7654321", text=f"message number {sequence} Kappa",
                      sent_ms=now, origin="bench/0")


async def drive(url: str, token: str, rate: int, duration: float, channels: int) -> tuple[int, float]:
    """Publish at `rate` for `duration` s; returns (messages published, seconds it took)."""
    per_batch = max(1, round(rate * BATCH_EVERY))
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    loop = asyncio.get_running_loop()
    sent, started = 0, loop.time()
    async with aiohttp.ClientSession() as session:
        while (elapsed := loop.time() - started) < duration:
            due = int(elapsed * rate)
            if sent >= due:
                await asyncio.sleep(BATCH_EVERY / 2)
                continue
            batch = [event(sent + i, channels) for i in range(min(per_batch, due - sent + per_batch))]
            async with session.post(f"{url}/v1/publish", data=wire.encode(wire.PublishBatch(batch)),
                                    headers=headers) as response:
                response.raise_for_status()
                await response.read()
            sent += len(batch)
    return sent, loop.time() - started


async def round_side_by_side(args: argparse.Namespace, number: int) -> list[dict[str, Any]]:
    """Both exchanges at once, fed the same chat over the same seconds: the machine's other work
    (this one has two cores, shared) weighs on both alike."""
    systems = [ChatdSystem(edges=1, shards=3, env={"HIGHLIGHTS": mode}, name=f"highlights {mode}")
               for mode in ("on", "off")]
    for system in systems:
        await system.start()
    try:
        def drive_all(duration: float):
            return asyncio.gather(*(drive(s.cluster.exchange_urls[0], s.cluster.internal_token, args.rate, duration,
                                          args.publish_channels) for s in systems))

        await drive_all(1.0)  # warm up
        pids = [system.processes()["exchange"][0] for system in systems]
        before = [cpu_seconds(pid) for pid in pids]
        driven = await drive_all(args.duration)
        await asyncio.sleep(0.5)  # the last batches' history writes and ticks
        results = []
        for system, pid, used_before, (sent, elapsed) in zip(systems, pids, before, driven, strict=True):
            used = cpu_seconds(pid) - used_before
            result = {"system": system.name, "round": number, "rate_in": args.rate, "published": sent,
                      "published_per_s": round(sent / elapsed), "exchange_cpu_s": round(used, 3),
                      "exchange_cpu_us_per_message": round(used / max(sent, 1) * 1e6, 2),
                      "exchange_cpu_share": round(used / elapsed, 3)}
            print_progress(result)
            results.append(result)
        return results
    finally:
        for system in systems:
            await system.stop()


def detector_cost(messages: int, channels: int) -> dict[str, float]:
    """The detector alone on the same traffic, in this process: µs per message, windows included."""
    events = [event(sequence, channels) for sequence in range(messages)]
    detector = Detector(Settings(), restores=False)

    class Observer:  # what exchange/highlights.py's observe does
        def observe(self, item: wire.Event) -> None:
            if item.command == "PRIVMSG":
                detector.add(item.channel, item.sent_ms, item.id)

    observer = Observer()
    started = time.perf_counter()
    for item in events:
        observer.observe(item)
    counted = time.perf_counter() - started
    started = time.perf_counter()
    detector.advance(int(time.time() * 1000) + 3600_000)  # close every window it holds
    closed = time.perf_counter() - started
    return {"observe_us_per_message": round(counted / messages * 1e6, 3),
            "close_us_per_message": round(closed / messages * 1e6, 3)}


async def scenario_highlights(args: argparse.Namespace) -> dict[str, Any]:
    results = []
    for number in range(args.rounds):
        results += await round_side_by_side(args, number)
    per_round = [on["exchange_cpu_us_per_message"] / off["exchange_cpu_us_per_message"]
                 for on, off in zip(results[::2], results[1::2], strict=True)]
    off = statistics.median(r["exchange_cpu_us_per_message"] for r in results if r["system"] == "highlights off")
    alone = detector_cost(min(200_000, int(args.rate * args.duration)), args.publish_channels)
    per_message = alone["observe_us_per_message"] + alone["close_us_per_message"]
    return {"results": results, "detector": alone,
            "ratios": [{"exchange_cpu_per_message on/off, each round": [round(r, 4) for r in per_round],
                        "median": round(statistics.median(per_round), 4),
                        "detector alone / exchange off": round(per_message / off, 4)}]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("highlights")
    group.add_argument("--rate", type=int, default=5000, help="messages per second into the exchange")
    group.add_argument("--publish-channels", dest="publish_channels", type=int, default=100,
                       help="channels the chat goes to (half of it into one)")


def plot(axis, rows: list[dict[str, Any]]) -> None:
    names = list(dict.fromkeys(r["system"] for r in rows))
    for offset, name in enumerate(names):
        values = [r["exchange_cpu_us_per_message"] for r in rows if r["system"] == name]
        axis.bar([offset + i * (len(names) + 1) for i in range(len(values))], values, label=name)
    axis.set_xticks([])
    axis.set_xlabel("rounds (each: both clusters at once)")
    axis.set_ylabel("exchange CPU µs per message")
    axis.set_title(f"{rows[0]['rate_in']:,} msg/s, detector on and off")
    axis.legend()
