"""Everything this edge talks to upstream: the clue and exchange pools of every
cluster (main, event, group…) and which cluster carries each channel it holds.

A channel's cluster comes from clue when the first local user joins it, and
changes when its old exchange sends MOVED during a live move.
"""
from __future__ import annotations

import asyncio
from typing import TypeVar

from common.internal_http import InternalClient
from common.metrics import Metrics
from common.wire import CLOSED, Outcome, OutcomeReply, OutcomeRequest, Submission
from edge.clue_client import UNAVAILABLE, ClueClient
from edge.subscriptions import ExchangeLink, StreamKeeper, Subscriptions

T = TypeVar("T")


class Clusters:
    def __init__(self, clue_urls: dict[str, list[str]], exchange_urls: dict[str, list[str]], edge_url: str,
                 token: str, metrics: Metrics, timeout: float, streams: StreamKeeper) -> None:
        self.clues = {name: ClueClient(urls, token, metrics, timeout, self.settle) for name, urls in clue_urls.items()}
        self.subscriptions = {
            name: Subscriptions(urls, edge_url, token, metrics, timeout, streams)
            for name, urls in exchange_urls.items()
        }
        self.route: dict[str, str] = {}

    def start(self) -> None:
        for clue in self.clues.values():
            clue.start()
        for subscriptions in self.subscriptions.values():
            subscriptions.start()

    @property
    def main(self) -> ClueClient:
        return self.clues["main"]

    async def ask_every_clue(self, path: str, message: object, op: str, answer: type[T]) -> list[T | BaseException]:
        """The same request to every clue of every cluster (rare: recoveries)."""
        clients = {client.base_url: client for clue in self.clues.values() for client in clue.clients}
        return await asyncio.gather(*(client.post(path, message, op=op, answer=answer) for client in clients.values()),
                                    return_exceptions=True)

    def cluster_of(self, channel: str) -> str:
        return self.route.get(channel, "main")

    def clue_for(self, channel: str) -> ClueClient:
        return self.clues.get(self.cluster_of(channel), self.main)

    def subscribe(self, channel: str, cluster: str) -> asyncio.Future[None]:
        # A channel this edge already holds keeps its cluster until MOVED says otherwise.
        cluster = self.route.setdefault(channel, cluster if cluster in self.subscriptions else "main")
        return self.subscriptions[cluster].subscribe(channel)

    def whisper_cluster(self) -> str:
        return "group" if "group" in self.subscriptions else "main"

    def unsubscribe(self, channel: str) -> None:
        cluster = self.route.get(channel)
        if cluster is not None and self.subscriptions[cluster].unsubscribe(channel):
            del self.route[channel]

    def link_for(self, channel: str) -> ExchangeLink:
        return self.subscriptions[self.cluster_of(channel)].link_for(channel)

    def move(self, channel: str, cluster: str, version: int) -> bool:
        """Follow a channel to its new cluster; False if there was nothing to move."""
        old = self.route.get(channel)
        if old is None or old == cluster or cluster not in self.subscriptions:
            return False
        refs = self.subscriptions[old].link_for(channel).release(channel)
        self.route[channel] = cluster
        self.subscriptions[cluster].link_for(channel).adopt(channel, refs, replay_from=version)
        return True

    async def settle(self, submission: Submission) -> Outcome:
        """Ask the exchanges that may own the channel whether they ordered the
        submission; from this answer on, none of them ever will if not."""
        asks = [subscriptions.link_for(submission.channel).client for subscriptions in self.subscriptions.values()]
        answers = await asyncio.gather(*(self._outcome(client, submission) for client in asks),
                                       return_exceptions=True)
        if any(isinstance(answer, int) and answer > 0 for answer in answers):
            return Outcome(ok=True, user_state=None)
        return UNAVAILABLE

    @staticmethod
    async def _outcome(client: InternalClient, submission: Submission) -> int:
        answer = await client.post("/v1/outcome", OutcomeRequest(submission.channel, [submission.id]),
                                   op="outcome", answer=OutcomeReply)
        return answer.seqs[0] if answer.seqs else CLOSED

    async def close(self) -> None:
        for subscriptions in self.subscriptions.values():
            await subscriptions.close()
        for clue in self.clues.values():
            await clue.close()

