"""Helix, Twitch's HTTP API, served by clue (edges forward `/helix/…` here).

Every write goes through what chat uses: chat messages through ingestion and
its checks, moderation through the command table, so a ban made here is the
same ban a `/ban` makes, announced in the channel's one order to IRC and
EventSub alike.
"""
from __future__ import annotations

from aiohttp import web

from clue.accounts import Accounts
from clue.channels import ChannelCache
from clue.commands import Commands
from clue.eventsub_store import EventSubStore
from clue.helix.base import HelixBase
from clue.helix.chat import ChatEndpoints
from clue.helix.eventsub import EventSubEndpoints
from clue.helix.moderation import ModerationEndpoints
from clue.ingest import Ingest
from clue.oauth import OAuth
from clue.presence import Presence
from clue.publisher import Exchanges
from common.shards import ShardSet


class Helix:
    def __init__(self, oauth: OAuth, accounts: Accounts, channels: ChannelCache, shards: ShardSet, ingest: Ingest,
                 commands: Commands, exchanges: Exchanges, presence: Presence) -> None:
        base = HelixBase(oauth, accounts, channels, shards)
        self.chat = ChatEndpoints(base, ingest, commands, presence)
        self.moderation = ModerationEndpoints(base, ingest, commands)
        self.eventsub = EventSubEndpoints(base, EventSubStore(shards), exchanges)

    def routes(self) -> list[web.RouteDef]:
        eventsub = self.eventsub
        return [
            *self.chat.routes(), *self.moderation.routes(), *eventsub.routes(),
            web.post("/v1/eventsub/open", eventsub.on_open_session),
            web.post("/v1/eventsub/close", eventsub.on_close_session),
            web.post("/v1/eventsub/take", eventsub.on_take_session),
            web.post("/v1/eventsub/park", eventsub.on_park_session),
        ]
