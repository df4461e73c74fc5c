"""The chat page in a real browser (Debian's Chromium, driven by Playwright): it logs
in with a token, joins, chats both ways with IRC clients, moderates through Helix,
shows what moderators do, history on load and after a reconnect, and fits a phone."""
from __future__ import annotations

import asyncio
import re

import aiohttp
from browser_support import PHONE_WIDTH, chromium, open_page
from support import running_cluster


async def test_the_page_logs_in_with_a_token_joins_and_chats_both_ways_with_an_irc_client(tmp_path):
    async with running_cluster(tmp_path, edges=1) as cluster:
        _, ws_port = cluster.edge_addresses(0)
        bob = await cluster.client("bob", channels=("#alice",))
        async with chromium() as browser:
            watched = await open_page(browser, f"http://127.0.0.1:{ws_port}/")
            page = watched.page
            await page.fill("#join-channel", "alice")
            await page.fill("#join-token", "oauth:" + cluster.token("alice", color="#1E90FF"))
            await page.click("#join-submit")
            await page.wait_for_selector("#status[data-state=live]")
            assert await page.inner_text("#status") == "live, as alice"

            await page.fill("#input", "hello from the browser Kappa")
            await page.press("#input", "Enter")
            sent = await bob.expect_message("PRIVMSG", "hello from the browser Kappa")
            assert sent.tags["display-name"] == "alice" and sent.tags["badges"] == "broadcaster/1"
            own = page.locator(".msg.own", has_text="hello from the browser")
            await own.wait_for()
            assert await own.locator(".badge.broadcaster").count() == 1

            await bob.send("PRIVMSG #alice :hello from irc", "PRIVMSG #alice :\x01ACTION waves\x01")
            await page.locator(".msg.chat", has_text="hello from irc").wait_for()
            action = page.locator(".msg.chat .text.me", has_text="waves")
            await action.wait_for()

            # The broadcaster moderates from the page, through Helix: delete, then timeout.
            message = page.locator(".msg.chat", has_text="hello from irc")
            await message.locator("button.delete").click()
            cleared = await bob.expect_message("CLEARMSG")
            assert cleared.params[-1] == "hello from irc"
            await page.locator(".msg.chat.deleted", has_text="hello from irc").wait_for()
            await page.locator(".msg.chat", has_text="waves").locator("button.timeout").click()
            timeout = await bob.expect_message("CLEARCHAT")
            assert timeout.params[-1] == "bob" and timeout.tags["ban-duration"] == "600"
            await page.locator(".msg.system", has_text="bob has been timed out for 10 minutes.").wait_for()
            assert watched.errors == []


async def test_an_anonymous_reader_sees_history_replies_events_deletes_and_bans_on_a_phone(tmp_path):
    async with running_cluster(tmp_path, edges=1) as cluster:
        _, ws_port = cluster.edge_addresses(0)
        alice = await cluster.client("alice", channels=("#alice",))
        bob = await cluster.client("bob", channels=("#alice",))
        await alice.send("PRIVMSG #alice :said before the page opened")
        first = await bob.expect_message("PRIVMSG", "said before the page opened")
        async with chromium() as browser:
            watched = await open_page(browser, f"http://127.0.0.1:{ws_port}/?channel=alice", width=PHONE_WIDTH,
                                      height=740)
            page = watched.page
            await page.wait_for_selector("#status[data-state=live]")
            old = page.locator(".msg.chat.historical", has_text="said before the page opened")
            await old.wait_for()
            assert await old.locator(".badge.broadcaster").count() == 1
            assert await page.get_attribute("#input", "placeholder") == "Log in to chat"
            assert await page.locator(".tools").count() == 0  # no moderation for a reader

            await bob.send(f"@reply-parent-msg-id={first.tags['id']} PRIVMSG #alice :@alice a reply")
            reply = page.locator(".msg.chat", has_text="a reply")
            await reply.wait_for()
            assert "Replying to @alice: said before the page opened" in await reply.locator(".reply-to").inner_text()

            async with aiohttp.ClientSession() as http:
                async with http.post(f"http://127.0.0.1:{ws_port}/api/v1/channels/alice/trigger",
                                     headers={"Authorization": f"Bearer {cluster.token('alice')}"},
                                     json={"kind": "sub", "user": "bob"}) as response:
                    assert response.status == 200, await response.text()
            notice = page.locator(".msg.usernotice")
            await notice.wait_for()
            assert "subscribed" in (await notice.inner_text()).lower()

            await bob.send("PRIVMSG #alice :delete me")
            doomed = await alice.expect_message("PRIVMSG", "delete me")
            await page.locator(".msg.chat", has_text="delete me").wait_for()
            await alice.send(f"PRIVMSG #alice :/delete {doomed.tags['id']}")
            await page.locator(f".msg.chat.deleted[data-id='{doomed.tags['id']}'] .text",
                                has_text="<message deleted>").wait_for()
            await alice.send("PRIVMSG #alice :/ban bob")
            await page.locator(".msg.system", has_text="bob has been permanently banned.").wait_for()
            assert await page.locator(".msg.chat[data-login=bob]:not(.deleted)").count() == 0

            # A phone: nothing wider than the screen, the composer on it.
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE_WIDTH
            box = await page.locator("#composer").bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE_WIDTH
            assert box["y"] + box["height"] <= 740
            assert watched.errors == []


async def test_after_a_reconnect_the_page_shows_what_it_missed_once(tmp_path):
    async with running_cluster(tmp_path, edges=2) as cluster:
        _, ws_port = cluster.edge_addresses(0)
        talker = await cluster.client("talker", edge=1, channels=("#room",))
        async with chromium() as browser:
            watched = await open_page(browser, f"http://127.0.0.1:{ws_port}/?channel=room")
            page = watched.page
            await page.wait_for_selector("#status[data-state=live]")
            await talker.send("PRIVMSG #room :before the drop")
            await page.locator(".msg.chat", has_text="before the drop").wait_for()

            await cluster.stop_component("edge-0")  # RECONNECT, then the page's socket closes
            await page.wait_for_selector("#status[data-state=error]")
            for index in range(3):
                await talker.send(f"PRIVMSG #room :while away {index}")
            await talker.send("PRIVMSG #room :/me is still here")
            await cluster.restart("edge-0")

            await page.wait_for_selector("#status[data-state=live]", timeout=20_000)
            await page.locator(".msg.chat", has_text="still here").wait_for()
            await talker.send("PRIVMSG #room :after the return")
            await page.locator(".msg.chat", has_text="after the return").wait_for()
            texts = await page.locator(".msg.chat .text").all_inner_texts()
            assert texts == ["before the drop", "while away 0", "while away 1", "while away 2", "is still here",
                             "after the return"]
            # Failing to reach the stopped edge is the browser's own error line; nothing else.
            assert [error for error in watched.errors if not re.search(r"WebSocket connection .* failed", error)] \
                == []
            await asyncio.sleep(0)
