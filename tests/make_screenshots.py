"""Regenerates the screenshots in docs/ (shown in the README): the chat page at
desktop and phone width, and the operator console, over a real local cluster with
some chat going on. Run from the checkout: `.venv/bin/python tests/make_screenshots.py`.
"""
from __future__ import annotations

import asyncio
import random
import sys
import tempfile
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from browser_support import PHONE_WIDTH, chromium, open_page
from support import IrcClient, running_cluster

DOCS = Path(__file__).parent.parent / "docs"
LINES = ["that boss fight was insane", "PogChamp PogChamp", "anyone else lagging?", "gg", "left left LEFT",
         "Kappa", "how many badges now?", "chat is moving so fast", "A A A START", "we need a potion"]


async def chatter(cluster, login: str, channel: str, **claims) -> IrcClient:
    irc_port, _ = cluster.edge_addresses(0)
    client = await IrcClient.tcp(irc_port, login)
    await client.register(login, cluster.token(login, **claims))
    await client.join(channel)
    cluster._clients.append(client)  # closed with the cluster
    return client


async def main() -> None:
    # A detector on 1 s windows, so the spike below is a highlight on the console's timeline within
    # the run; sessions open on the first broadcast.
    env = {"RATE_LIMIT": "100000", "RATE_LIMIT_PRIVILEGED": "100000", "HIGHLIGHT_WINDOW": "1s",
           "HIGHLIGHT_GRACE": "300ms", "HIGHLIGHT_AVERAGE": "20", "HIGHLIGHT_WARMUP": "3", "SESSION_LATENESS": "0"}
    with tempfile.TemporaryDirectory() as directory:
        async with running_cluster(Path(directory), edges=2, extra_clusters={"event": (1, 1)}, env=env) as cluster:
            _, ws_port = cluster.edge_addresses(0)
            base = f"http://127.0.0.1:{ws_port}"
            tpp = await chatter(cluster, "tpp", "#tpp", color="#9146FF")
            helper = await chatter(cluster, "helper", "#tpp", color="#00AD03")
            regular = await chatter(cluster, "regular", "#tpp", color="#FF7F50")
            await tpp.send("PRIVMSG #tpp :/mod helper", "PRIVMSG #tpp :/vip regular")
            await tpp.expect(r"msg-id=vip_success")
            fan = await chatter(cluster, "fan", "#tpp", subscriber=True, color="#1E90FF")
            troll = await chatter(cluster, "troll", "#tpp")
            crowd = [await chatter(cluster, f"viewer{i}", "#tpp") for i in range(6)]
            others = [await chatter(cluster, f"speedrun{i}", "#speedrun") for i in range(2)]
            await tpp.send("PRIVMSG #tpp :welcome to the stream! Kappa")
            first = await helper.expect_message("PRIVMSG", "welcome to the stream! Kappa")
            for client, text in ((fan, "PogChamp this run is going great"), (regular, "hi chat"),
                                 (helper, "\x01ACTION waves at everyone\x01")):
                await client.send(f"PRIVMSG #tpp :{text}")
            await fan.send(f"@reply-parent-msg-id={first.tags['id']} PRIVMSG #tpp :@tpp thanks for streaming!")
            async with aiohttp.ClientSession() as http:
                owner = {"Authorization": f"Bearer {cluster.token('tpp')}"}
                await http.post(f"{base}/api/v1/channels/tpp/trigger", json={"kind": "resub", "user": "fan",
                                                                             "months": 14}, headers=owner)
                await http.post(f"{base}/api/v1/channels/tpp/broadcast", headers=owner)  # the stream is live
            async with chromium() as browser:
                desktop = await open_page(browser, f"{base}/", width=900, height=620)
                page = desktop.page
                await page.fill("#join-channel", "tpp")
                await page.fill("#join-token", cluster.token("helper"))
                await page.click("#join-submit")
                await page.wait_for_selector("#status[data-state=live]")
                phone = await open_page(browser, f"{base}/?channel=tpp", width=PHONE_WIDTH, height=760)
                await phone.page.wait_for_selector("#status[data-state=live]")

                await troll.send("PRIVMSG #tpp :buy followers at spam dot example")
                spam = await helper.expect_message("PRIVMSG", "buy followers at spam dot example")
                await helper.send(f"PRIVMSG #tpp :/delete {spam.tags['id']}")
                await troll.send("PRIVMSG #tpp :you can't stop me")
                await helper.expect_message("PRIVMSG", "you can't stop me")
                await helper.send("PRIVMSG #tpp :/timeout troll 600 spam")
                rng = random.Random(3)
                for index in range(8):
                    client = rng.choice(crowd + [regular, fan])
                    await client.send(f"PRIVMSG #tpp :{LINES[index % len(LINES)]}")
                    await asyncio.sleep(0.15)
                await page.fill("#input", "keep it friendly please")
                await page.press("#input", "Enter")
                await asyncio.sleep(1.5)
                await page.hover(".msg.chat >> nth=-3")
                await page.screenshot(path=str(DOCS / "chat.png"))
                await phone.page.screenshot(path=str(DOCS / "chat-phone.png"))

                # The console: traffic for a while, a spike in #tpp, the channel moved to the event cluster.
                console = await open_page(browser, f"{base}/console#token={cluster.internal_token}", width=1400,
                                          height=1500)
                for second in range(24):
                    burst = 40 if 10 <= second < 16 else 6
                    for index in range(burst):
                        client = crowd[index % len(crowd)]
                        await client.send(f"PRIVMSG #tpp :{LINES[(second + index) % len(LINES)]} {second}.{index}")
                    for client in others:
                        await client.send(f"PRIVMSG #speedrun :split {second}")
                    if second == 18:
                        await console.page.click("#top-channels button[data-move='#tpp'][data-to=event]")
                    await asyncio.sleep(1)
                await console.page.fill("#timeline-channel", "tpp")
                await console.page.click("#timeline-form button")
                await console.page.wait_for_selector("#timeline-summary")
                await asyncio.sleep(2.5)
                await console.page.screenshot(path=str(DOCS / "console.png"), full_page=True)
                errors = desktop.errors + phone.errors + console.errors
                assert not errors, errors
    print("wrote", *(DOCS / name for name in ("chat.png", "chat-phone.png", "console.png")))


if __name__ == "__main__":
    asyncio.run(main())
