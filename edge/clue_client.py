"""The edge's calls to the clue pool: logins, joins and chat submissions (these two batched).

A user's requests always go to the same healthy clue, so their messages keep
their order. A clue that refuses connections is taken out of the ring (a
health check every second brings it back) and the request goes to the next.

A submission whose fate is unknown — the clue timed out or dropped the
connection, or could not hear back from the exchange — is sent again with the
same message id, which clue and exchange treat idempotently, until
SUBMIT_BUDGET runs out; then the exchange that owns the channel settles it
(`settle`), closing the id so it can never be ordered later. The sender is
always told the truth: a message it is told was refused is never delivered.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from common.batch import Batcher
from common.internal_http import InternalClient, RemoteError
from common.metrics import Metrics
from common.ring import Ring
from common.tasks import cancel_and_wait
from common.wire import (
    Identity,
    JoinBatch,
    JoinReply,
    JoinRequest,
    JoinResults,
    LoginReply,
    LoginRequest,
    Outcome,
    Submission,
    SubmitBatch,
    SubmitResults,
)

log = structlog.get_logger()
T = TypeVar("T")

HEALTH_INTERVAL = 1.0
# How long an unanswered submission is retried before it is settled.
SUBMIT_BUDGET = 3.0
RETRY_DELAY = 0.1
UNAVAILABLE = Outcome(ok=False, msg_id="msg_service_unavailable")

Settle = Callable[[Submission], Awaitable[Outcome]]


class ClueClient:
    def __init__(self, urls: list[str], token: str, metrics: Metrics, timeout: float, settle: Settle) -> None:
        self._urls = urls
        self._healthy = set(urls)
        self._ring = Ring(urls)
        self._metrics = metrics
        self._settle = settle
        self._clients = {
            url: InternalClient(f"clue:{url}", url, token, metrics, timeout=timeout) for url in urls
        }
        self._batchers = {url: Batcher(self._sender(url)) for url in urls}
        # JOINs go in batches too: a JOIN storm is one request per clue per tick, not one per JOIN.
        self._joiners = {url: Batcher(self._joiner(url)) for url in urls}
        self._health_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        metrics.gauge_from("clue.healthy", lambda: len(self._healthy))

    @property
    def clients(self) -> list[InternalClient]:
        return list(self._clients.values())

    def start(self) -> None:
        self._health_task = asyncio.get_running_loop().create_task(self._check_health())

    def _pick(self, key: str) -> str:
        return self._ring.node_for(key)

    def _mark(self, url: str, healthy: bool) -> None:
        if healthy == (url in self._healthy):
            return
        if healthy:
            self._healthy.add(url)
        elif len(self._healthy) > 1:  # with none left, keep trying the last one
            self._healthy.discard(url)
        else:
            return
        log.warning("clue_health", remote="clue", url=url, healthy=healthy)
        self._ring = Ring([u for u in self._urls if u in self._healthy])

    async def _check_health(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_INTERVAL)
            for url, client in self._clients.items():
                try:
                    await client.get("/health", op="health", answer=dict)
                except RemoteError:
                    self._mark(url, False)
                else:
                    self._mark(url, True)

    async def call(self, key: str, path: str, message: object, op: str, answer: type[T]) -> T:
        """One request to the clue `key` belongs to, failing over when that clue refuses connections."""
        url = self._pick(key)
        try:
            return await self._clients[url].post(path, message, op=op, answer=answer)
        except RemoteError as exc:
            if not exc.refused:
                raise
            self._mark(url, False)
            return await self._clients[self._pick(key)].post(path, message, op=op, answer=answer)

    async def forward(self, key: str, method: str, path_and_query: str, headers: dict[str, str], body: bytes
                      ) -> tuple[int, dict[str, str], bytes]:
        """A client's API call, as it came, to the clue `key` belongs to; its answer as it is."""
        return await self._clients[self._pick(key)].forward(method, path_and_query, headers, body)

    def _sender(self, url: str) -> Callable[[list[Submission]], Awaitable[list[Outcome]]]:
        client = self._clients[url]

        async def send(submissions: list[Submission]) -> list[Outcome]:
            answer = await client.post("/v1/messages", SubmitBatch(submissions), op="messages", answer=SubmitResults)
            return answer.results

        return send

    def _joiner(self, url: str) -> Callable[[list[JoinRequest]], Awaitable[list[JoinReply]]]:
        client = self._clients[url]

        async def send(joins: list[JoinRequest]) -> list[JoinReply]:
            return (await client.post("/v1/joins", JoinBatch(joins), op="joins", answer=JoinResults)).results

        return send

    async def login(self, token: str) -> Identity | None:
        """The identity a token names, or None when clue refuses it."""
        try:
            answer = await self.call(token[-16:], "/v1/login", LoginRequest(token), op="login", answer=LoginReply)
        except RemoteError as exc:
            if exc.status in (401, 429):
                return None
            raise
        return answer.identity

    async def join(self, channel: str, identity: Identity | None, names: bool = False) -> JoinReply:
        """Clue's answer to a JOIN (raises RemoteError when none answers)."""
        key = identity.login if identity else channel
        request = JoinRequest(channel, identity, names)
        url = self._pick(key)
        try:
            return await self._joiners[url].submit(request)
        except RemoteError as exc:
            if not exc.refused:
                raise
            self._mark(url, False)  # that clue never saw it: the next one may take it
            return await self._joiners[self._pick(key)].submit(request)

    def submit(self, submission: Submission, retry: bool) -> asyncio.Future[Outcome]:
        """Hand a message to the user's clue; `retry`: it is safe to send again
        (chat, not a command) when its fate is unknown."""
        result: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        attempt = _Attempt(submission, result, time.monotonic() + SUBMIT_BUDGET, retry)
        self._send(attempt)
        return result

    def _send(self, attempt: _Attempt) -> None:
        url = self._pick(attempt.submission.identity.login)
        self._batchers[url].submit(attempt.submission).add_done_callback(
            lambda future: self._answered(attempt, url, future))

    def _answered(self, attempt: _Attempt, url: str, future: asyncio.Future[Outcome]) -> None:
        result = attempt.result
        if result.done():
            return
        if future.cancelled():
            result.cancel()
            return
        error = future.exception()
        if error is None:
            outcome = future.result()
            if not outcome.unknown:
                result.set_result(outcome)
                return
        elif isinstance(error, RemoteError) and error.refused:
            self._mark(url, False)
            self._metrics.incr("clue.failover")
            if self._pick(attempt.submission.identity.login) != url:
                self._send(attempt)  # that clue never saw it: the next one may have it
                return
            if not attempt.unknown:
                result.set_result(UNAVAILABLE)
                return
        attempt.unknown = True
        if not attempt.retry:
            result.set_result(UNAVAILABLE)
        elif time.monotonic() < attempt.deadline:
            self._metrics.incr("submissions.retried")
            asyncio.get_running_loop().call_later(RETRY_DELAY, self._send, attempt)
        else:
            self._spawn(self._settle_attempt(attempt))

    async def _settle_attempt(self, attempt: _Attempt) -> None:
        self._metrics.incr("submissions.settled")
        try:
            outcome = await self._settle(attempt.submission)
        except RemoteError:
            outcome = UNAVAILABLE
        if not attempt.result.done():
            attempt.result.set_result(outcome)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        await cancel_and_wait(self._health_task)
        for task in list(self._tasks):
            await cancel_and_wait(task)
        for batcher in [*self._batchers.values(), *self._joiners.values()]:
            await batcher.close()
        for client in self._clients.values():
            await client.close()


class _Attempt:
    __slots__ = ("deadline", "result", "retry", "submission", "unknown")

    def __init__(self, submission: Submission, result: asyncio.Future[Outcome], deadline: float, retry: bool) -> None:
        self.submission = submission
        self.result = result
        self.deadline = deadline
        self.retry = retry
        self.unknown = False  # some attempt may have reached a clue
