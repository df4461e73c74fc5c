"""Presence: others' JOIN and PART with twitch.tv/membership, NAMES, Helix
chat/chatters, and the channel-size threshold above which no one gets a line per
viewer."""
from __future__ import annotations

import asyncio

import aiohttp
import irc.client
import irc.client_aio
from support import IrcClient, running_cluster

from common.irc import parse

DEADLINE = 15.0


class JaracoClient:
    """jaraco's `irc` library (its asyncio reactor), recording the events it parses."""

    def __init__(self) -> None:
        self.reactor = irc.client_aio.AioReactor(loop=asyncio.get_running_loop())
        self.events: list[irc.client.Event] = []
        self._changed = asyncio.Event()
        self.reactor.add_global_handler("all_events", self._record, -10)
        self.connection: irc.client_aio.AioConnection | None = None

    def _record(self, connection, event: irc.client.Event) -> None:
        self.events.append(event)
        self._changed.set()

    async def connect(self, port: int, nick: str, token: str) -> None:
        self.connection = self.reactor.server()
        await self.connection.connect("127.0.0.1", port, nick, password=f"oauth:{token}")
        self.connection.cap("REQ", "twitch.tv/membership")
        await self.wait(lambda: self.of("welcome"), "welcome")

    def of(self, kind: str, **where: str) -> list[irc.client.Event]:
        return [e for e in self.events if e.type == kind and all(
            (e.source.nick if name == "nick" else e.target) == value for name, value in where.items())]

    async def wait(self, done, what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE
        while not done():
            remaining = deadline - loop.time()
            assert remaining > 0, f"jaraco irc saw no {what}; saw {[e.type for e in self.events][-10:]}"
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass

    def close(self) -> None:
        if self.connection is not None:
            self.connection.disconnect()


async def test_jaraco_irc_with_membership_sees_others_join_and_part_and_names_them(tmp_path):
    async with running_cluster(tmp_path, edges=2) as cluster:
        early = await cluster.client("presearly", edge=1, channels=("#presroom",))
        irc_port, _ = cluster.edge_addresses(0)
        watcher = JaracoClient()
        try:
            await watcher.connect(irc_port, "preswatch", cluster.token("preswatch"))
            # presearly's presence reaches clue within a tick: join once it is listed.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + DEADLINE
            while True:
                watcher.connection.join("#presroom")
                await watcher.wait(lambda: watcher.of("endofnames"), "NAMES")
                names = " ".join(" ".join(e.arguments[2:]) for e in watcher.of("namreply"))
                if "presearly" in names.split() or loop.time() > deadline:
                    break
                watcher.connection.part("#presroom")
                await watcher.wait(lambda: watcher.of("part", nick="preswatch"), "its own PART")
                watcher.events.clear()
                await asyncio.sleep(0.1)
            assert set(names.split()) == {"preswatch", "presearly"}

            late = await cluster.client("preslate", edge=1, channels=("#presroom",))
            await watcher.wait(lambda: watcher.of("join", nick="preslate"), "preslate's JOIN")
            await late.send("PART #presroom")
            await watcher.wait(lambda: watcher.of("part", nick="preslate"), "preslate's PART")
            await early.close()  # leaving by disconnecting is a PART too
            await watcher.wait(lambda: watcher.of("part", nick="presearly"), "presearly's PART")
            assert len(watcher.of("join", nick="preswatch")) == 1  # its own JOIN, once
        finally:
            watcher.close()


async def test_membership_lines_stop_above_the_limit_and_chatters_lists_everyone(tmp_path):
    async with running_cluster(tmp_path, edges=2, env={"MEMBERSHIP_LIMIT": "3"}) as cluster:
        owner = await cluster.client("bigroom", edge=0, channels=("#bigroom",))
        plain = await cluster.client("bigplain", edge=0, caps="twitch.tv/tags twitch.tv/commands",
                                     channels=("#bigroom",))
        viewers: list[IrcClient] = []
        for n in range(2):  # with the owner and bigplain: 4 members, over the limit of 3 once all are in
            viewers.append(await cluster.client(f"bigviewer{n}", edge=1, channels=("#bigroom",)))
        await owner.expect(r":bigplain!\S+ JOIN #bigroom")  # the channel was small then
        _, ws_port = cluster.edge_addresses(0)
        headers = {"Authorization": f"Bearer {cluster.token('bigroom')}"}
        room_id = owner.received("ROOMSTATE")[0].tags["room-id"]
        url = f"http://127.0.0.1:{ws_port}/helix/chat/chatters?broadcaster_id={room_id}&moderator_id={room_id}"
        async with aiohttp.ClientSession() as http:
            body = await chatters_total(http, url + "&first=2", headers, 4)
            first_page = [c["user_login"] for c in body["data"]]
            async with http.get(url + f"&first=2&after={body['pagination']['cursor']}", headers=headers) as response:
                second_page = [c["user_login"] for c in (await response.json())["data"]]
            assert first_page + second_page == ["bigplain", "bigroom", "bigviewer0", "bigviewer1"]
            assert body["data"][0]["user_id"] == plain.received("GLOBALUSERSTATE")[0].tags["user-id"]
            viewer_headers = {"Authorization": f"Bearer {cluster.token('bigviewer0')}"}
            viewer_id = viewers[0].received("GLOBALUSERSTATE")[0].tags["user-id"]
            async with http.get(url.replace(f"moderator_id={room_id}", f"moderator_id={viewer_id}"),
                                headers=viewer_headers) as response:
                assert response.status == 403

        # Over the limit: a newcomer is told of nobody but itself, and nobody hears of it.
        newcomer = await cluster.client("bignew", edge=1, channels=("#bigroom",))
        [names] = [parse(line) for line in newcomer.lines if " 353 " in line]
        assert names.params[-1] == "bignew"
        async with aiohttp.ClientSession() as http:
            await chatters_total(http, url, headers, 5)  # its presence has been recorded …
        await owner.send("PRIVMSG #bigroom :after bignew")  # … so a JOIN line would come before this
        await plain.expect_message("PRIVMSG", "after bignew")
        await viewers[0].expect_message("PRIVMSG", "after bignew")
        assert not [line for line in viewers[0].lines if ":bignew!" in line and " JOIN " in line]
        assert not [line for line in plain.lines if " JOIN " in line and ":bigplain!" not in line]


async def chatters_total(http: aiohttp.ClientSession, url: str, headers: dict, total: int) -> dict:
    """chat/chatters once it counts `total` (presence reaches clue once per tick)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while True:
        async with http.get(url, headers=headers) as response:
            body = await response.json()
        if body.get("total") == total:
            return body
        assert loop.time() < deadline, f"chatters never counted {total}: {body}"
        await asyncio.sleep(0.05)
