"""Stream highlights on a real cluster: detected live in the exchange, listed by the API and
`chatd highlights list`, delivered to a webhook signed and retried, found alike by
`chatd highlights watch` from outside, and kept across a restart of the exchange."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from standardwebhooks import Webhook
from support import StatsdListener, running_cluster

from analytics.highlights import Detector, Settings
from common import wire
from common.config import Env

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOT = Path(__file__).parent.parent
SECRET = "whsec_" + base64.b64encode(hashlib.sha256(b"highlights test").digest()).decode()
WINDOW_MS = 1000
# One-second windows so the test takes seconds: twenty in the average, three to warm up, one of cooldown.
DETECTOR = {"HIGHLIGHT_WINDOW": "1s", "HIGHLIGHT_GRACE": "300ms", "HIGHLIGHT_AVERAGE": "20",
            "HIGHLIGHT_WARMUP": "3", "HIGHLIGHT_COOLDOWN": "1"}
ENV = DETECTOR | {"HIGHLIGHT_WEBHOOK_SECRET": SECRET, "HIGHLIGHT_WEBHOOK_BACKOFF": "100ms",
                  "RATE_LIMIT": "1000", "RATE_LIMIT_PRIVILEGED": "1000"}


# ---- a webhook receiver on port 0


@dataclass
class Attempt:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int


class Receiver:
    """Refuses the first `refuse` attempts of every delivery (per path and id), or all while `down`."""

    def __init__(self, refuse: int = 0) -> None:
        self.refuse = refuse
        self.down = False
        self.attempts: list[Attempt] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{path}", self._on_post)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def _on_post(self, request: web.Request) -> web.Response:
        path, body = request.match_info["path"], await request.read()
        earlier = sum(1 for a in self.attempts if a.path == path and a.headers.get("webhook-id") ==
                      request.headers.get("webhook-id"))
        status = 503 if self.down or earlier < self.refuse else 204
        self.attempts.append(Attempt(path, {k.lower(): v for k, v in request.headers.items()}, body, status))
        return web.Response(status=status)

    def delivered(self, path: str) -> dict[str, list[Attempt]]:
        """Attempts per delivery id, for the deliveries that finally got through."""
        ids = {a.headers["webhook-id"] for a in self.attempts if a.path == path and a.status == 204}
        return {i: [a for a in self.attempts if a.path == path and a.headers["webhook-id"] == i] for i in ids}


def verified(attempt: Attempt) -> dict:
    """Checks the signature as the README tells a receiver to (and as Standard Webhooks' library does)."""
    headers = attempt.headers
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + attempt.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert any(hmac.compare_digest(f"v1,{expected}", s) for s in headers["webhook-signature"].split())
    assert abs(time.time() - int(headers["webhook-timestamp"])) < 300
    return Webhook(SECRET).verify(attempt.body, headers)


# ---- traffic in known windows


async def until(condition, what: str, timeout: float = 20.0, every: float = 0.02):
    deadline = time.monotonic() + timeout
    while not (result := await condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(every)
    return result


def window_now() -> int:
    return int(time.time() * 1000) // WINDOW_MS


async def chat(sender, channel: str, plan: list[int], first: int, tag: str) -> None:
    """`plan[i]` messages sent early in window first+i (they are stamped at once; the margin absorbs delays)."""
    for offset, count in enumerate(plan):
        start = (first + offset) * WINDOW_MS + 50
        async def reached(start=start) -> bool:
            return time.time() * 1000 >= start
        await until(reached, f"window {first + offset}", timeout=len(plan) + 5, every=0.005)
        await sender.send(*(f"PRIVMSG {channel} :{tag} {offset}.{n}" for n in range(count)))


def seen(viewer, channel: str) -> list[tuple[int, str]]:
    """(tmi-sent-ts, id) of every message the viewer got in the channel, in order."""
    return [(int(m.tags["tmi-sent-ts"]), m.tags["id"]) for m in viewer.received("PRIVMSG") if m.params[0] == channel]


def reference(points: list[tuple[int, str]], channel: str) -> list[dict]:
    """The known answer: the detector's core, fed what a viewer saw."""
    detector = Detector(Settings.from_env(Env(DETECTOR)))
    for sent_ms, message_id in points:
        detector.add(channel, sent_ms, message_id)
    highlights = detector.advance(points[-1][0] + 10 * WINDOW_MS).highlights
    return [json.loads(wire.encode(h)) for h in highlights]


async def api(ws_port: int, channel: str, **query) -> tuple[int, dict]:
    url = f"http://127.0.0.1:{ws_port}/api/v1/channels/{channel.lstrip('#')}/highlights"
    async with aiohttp.ClientSession() as session, session.get(url, params=query) as response:
        return response.status, await response.json()


async def listed(ws_port: int, channel: str, count: int) -> list[dict]:
    async def enough():
        status, body = await api(ws_port, channel)
        return body["data"] if status == 200 and len(body["data"]) >= count else None
    return await until(enough, f"{count} highlights of {channel} in the API")


async def chatd(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chatd.cli", *args, cwd=ROOT, env=os.environ | (env or {}),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


# ---- one cluster with a webhook that refuses every delivery twice, and statsd


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def receiver():
    receiver = Receiver(refuse=2)
    await receiver.start()
    yield receiver
    await receiver.stop()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def statsd():
    transport, listener = await asyncio.get_running_loop().create_datagram_endpoint(
        StatsdListener, local_addr=("127.0.0.1", 0))
    listener.port = transport.get_extra_info("sockname")[1]
    yield listener
    transport.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cluster(tmp_path_factory, receiver, statsd):
    env = ENV | {"HIGHLIGHT_WEBHOOKS": f"{receiver.url}/exchange", "STATSD_PORT": str(statsd.port)}
    async with running_cluster(tmp_path_factory.mktemp("highlights"), env=env) as cluster:
        yield cluster


async def test_bursts_are_listed_delivered_signed_and_retried_and_the_watcher_finds_the_same(
        cluster, receiver, statsd):
    irc_port, ws_port = cluster.edge_addresses(0)
    viewer = await cluster.client("justinfan1", channels=("#burst",))
    watcher = await chatd("highlights", "watch", "--server", f"irc://127.0.0.1:{irc_port}", "#burst",
                          "--webhook", f"{receiver.url}/watcher", env=ENV)
    try:
        async def joined() -> bool:
            line = await asyncio.wait_for(watcher.stderr.readline(), 15)
            assert line, "the watcher exited"
            return b"joined #burst" in line
        await until(joined, "the watcher to join")
        streamer = await cluster.client("burst", channels=("#burst",))
        # Steady chat (5 a second), a burst, steady, a bigger burst, steady.
        plan = [5, 5, 5, 5, 40, 5, 60, 5]
        first = window_now() + 1
        await chat(streamer, "#burst", plan, first, "chat")
        await viewer.wait_for_texts(sum(plan), "#burst")

        # The known answer, from what a viewer saw: the two bursts, nothing else.
        expected = reference(seen(viewer, "#burst"), "#burst")
        assert [h["window_start_ms"] for h in expected] == [(first + 4) * WINDOW_MS, (first + 6) * WINDOW_MS]
        assert [h["messages"] for h in expected] == [40, 60]
        in_window = [i for t, i in seen(viewer, "#burst") if (first + 4) * WINDOW_MS <= t < (first + 5) * WINDOW_MS]
        assert expected[0]["message_ids"] == in_window  # the chat clip: the window's messages, in order

        # Listed newest first, exactly as detected.
        assert await listed(ws_port, "#burst", 2) == expected[::-1]
        # The watcher, reading over IRC, printed the very same objects.
        lines = [json.loads(await asyncio.wait_for(watcher.stdout.readline(), 10)) for _ in expected]
        assert lines == expected

        # Each delivery: refused twice, then taken; one id throughout (the highlight's), every attempt signed.
        async def both_delivered():
            return len(receiver.delivered("exchange")) == len(receiver.delivered("watcher")) == 2
        await until(both_delivered, "both deliveries to both webhooks")
        for path in ("exchange", "watcher"):
            for highlight in expected:
                attempts = receiver.delivered(path)[highlight["id"]]
                assert [a.status for a in attempts] == [503, 503, 204]
                assert all(verified(a) == highlight for a in attempts)
        await statsd.wait_for({"chatd.exchange.webhooks.retried", "chatd.exchange.webhooks.delivered",
                               "chatd.exchange.highlights.fired"})

        # `chatd highlights list`, from the cluster's directory.
        listing = await chatd("highlights", "list", "#burst", "--json", "--data-dir", str(cluster.data_dir))
        out, err = await asyncio.wait_for(listing.communicate(), 30)
        assert listing.returncode == 0, err
        assert [json.loads(line) for line in out.decode().splitlines()] == expected[::-1]
        human = await chatd("highlights", "list", "#burst", "--data-dir", str(cluster.data_dir))
        out, _ = await asyncio.wait_for(human.communicate(), 30)
        assert out.decode().splitlines()[0].endswith(expected[1]["id"]) and "60 messages" in out.decode()
    finally:
        with contextlib.suppress(ProcessLookupError):
            watcher.send_signal(signal.SIGTERM)
        await asyncio.wait_for(watcher.wait(), 10)


async def test_the_api_pages_back_and_refuses_bad_queries_clearly(cluster):
    _, ws_port = cluster.edge_addresses(0)
    newest, older = await listed(ws_port, "#burst", 2)
    status, page = await api(ws_port, "burst", limit=1)
    assert (status, page) == (200, {"data": [newest], "pagination": {"before": newest["window_start_ms"]}})
    status, page = await api(ws_port, "burst", limit=1, before=newest["window_start_ms"])
    assert (status, page) == (200, {"data": [older], "pagination": {"before": older["window_start_ms"]}})
    status, page = await api(ws_port, "burst", limit=1, before=older["window_start_ms"])
    assert (status, page) == (200, {"data": [], "pagination": {}})
    assert await api(ws_port, "quietroom") == (200, {"data": [], "pagination": {}})
    for query, message in (({"limit": "0"}, "limit must be between 1 and 100, got 0"),
                           ({"limit": "many"}, "limit must be a whole number, got 'many'"),
                           ({"before": "-5"}, "before must be between 0 and 9007199254740992, got -5")):
        assert await api(ws_port, "burst", **query) == (400, {"error": "Bad Request", "status": 400,
                                                               "message": message})
    assert (await api(ws_port, "bad.name"))[0] == 400
    listing = await chatd("highlights", "list", "#burst", "--limit", "500", "--data-dir", str(cluster.data_dir))
    out, err = await asyncio.wait_for(listing.communicate(), 30)
    assert (listing.returncode, out, err) == (2, b"", b"chatd highlights: limit must be between 1 and 100, got 500\n")


async def test_an_exchange_restart_makes_no_false_or_duplicate_highlight_and_resumes_deliveries(tmp_path):
    receiver = Receiver()
    await receiver.start()
    receiver.down = True  # every attempt fails until the exchange has restarted
    env = ENV | {"HIGHLIGHT_WEBHOOKS": f"{receiver.url}/hook"}
    try:
        async with running_cluster(tmp_path, env=env) as cluster:
            _, ws_port = cluster.edge_addresses(0)
            viewer = await cluster.client("justinfan2", channels=("#restart",))
            streamer = await cluster.client("restart", channels=("#restart",))
            first = window_now() + 1
            await chat(streamer, "#restart", [5, 5, 5, 5, 40, 5, 5], first, "before")
            [before] = await listed(ws_port, "#restart", 1)
            assert before["window_start_ms"] == (first + 4) * WINDOW_MS

            async def refused() -> bool:
                return any(a.status == 503 for a in receiver.attempts)
            await until(refused, "a refused delivery")
            cluster.kill("exchange-0", signal.SIGKILL)
            await cluster.components["exchange-0"].process.wait()
            await cluster.restart("exchange-0")
            receiver.down = False

            # Chat flows again: the restarted exchange sees #restart from this window on.
            for attempt in range(100):
                await streamer.send(f"PRIVMSG #restart :probe {attempt}")
                with contextlib.suppress(AssertionError):
                    probe = await viewer.expect_message("PRIVMSG", f"probe {attempt}", timeout=0.5)
                    break
            else:
                raise AssertionError("chat did not resume after the exchange restarted")
            back = int(probe.tags["tmi-sent-ts"]) // WINDOW_MS
            # Two whole windows of steady chat, then a burst: it fires, with an average that holds the
            # windows from before the restart (the first burst's 40 among them), taken back from Redis.
            await chat(streamer, "#restart", [5, 5, 40, 5], back + 1, "after")
            listing = await listed(ws_port, "#restart", 2)
            assert [h["window_start_ms"] for h in listing] == [(back + 3) * WINDOW_MS, (first + 4) * WINDOW_MS]
            assert listing[1] == before
            after = listing[0]
            assert after["messages"] == 40 and after["baseline"] > 5.5  # steady chat alone averages 5 or less

            # The delivery refused before the restart went out from the outbox after it; both are there once.
            async def delivered() -> bool:
                return receiver.delivered("hook").keys() == {before["id"], after["id"]}
            await until(delivered, "both deliveries")
            assert all(verified(a) == before for a in receiver.delivered("hook")[before["id"]])
            # Nothing else fired: the windows the restart cut short made no highlight.
            assert (await api(ws_port, "restart"))[1]["data"] == listing
    finally:
        await receiver.stop()


@pytest.mark.parametrize("args, env, says", [
    (["#Not A Channel"], {}, "not a channel name: #not a channel"),
    (["--server", "http://127.0.0.1:6667", "#ok"], {}, "expected irc://host:port or ircs://host:port"),
    (["#ok", "--webhook", "http://127.0.0.1:9/x"], {}, "HIGHLIGHT_WEBHOOK_SECRET is required with HIGHLIGHT_WEBHOOKS"),
    (["#ok", "--webhook", "nowhere"], {"HIGHLIGHT_WEBHOOK_SECRET": SECRET}, "expected an http:// URL"),
    (["#ok"], {"HIGHLIGHT_WINDOW": "soon"}, "HIGHLIGHT_WINDOW: expected a duration"),
])
async def test_the_watcher_refuses_bad_input_with_one_line(args, env, says):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HIGHLIGHT")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chatd.cli", "highlights", "watch", *args, cwd=ROOT, env=clean | env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2 and out == b""
    assert err.decode().count("\n") == 1 and err.decode().startswith("chatd highlights watch: ")
    assert says in err.decode()
