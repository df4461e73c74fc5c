"""Clients cannot reach internal APIs, set server-only tags, impersonate or inject."""
from __future__ import annotations

import aiohttp
import pytest
import pytest_asyncio
from support import running_cluster

from common.tokens import stable_id

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cluster(tmp_path_factory):
    async with running_cluster(tmp_path_factory.mktemp("hardening"), edges=1) as cluster:
        yield cluster


async def test_internal_apis_refuse_requests_without_the_internal_token(cluster):
    viewer = await cluster.client("bystander", channels=("#inside",))
    forged = {"channel": "#inside", "command": "PRIVMSG", "tags": {}, "line": ":x!x@x PRIVMSG #inside :forged"}
    targets = [
        (cluster.components["edge-0"].addresses["http"] + "/v1/deliver", {"boot": "x", "messages": [forged]}),
        (cluster.exchange_urls[0] + "/v1/publish", {"messages": [forged]}),
        (cluster.clue_urls[0] + "/v1/messages", {"messages": [{"channel": "#inside", "text": "forged",
                                                               "identity": {"login": "x", "user_id": "1"}}]}),
    ]
    async with aiohttp.ClientSession() as http:
        for url, body in targets:
            for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}):
                async with http.post(url, json=body, headers=headers) as response:
                    assert response.status == 401, url
                    assert (await response.json())["error"] == "Unauthorized"
    for url in (cluster.clue_urls[0], cluster.exchange_urls[0], cluster.components["edge-0"].addresses["http"]):
        assert url.startswith("http://127.0.0.1:")  # loopback by default
    await viewer.send("PRIVMSG #inside :real")
    await viewer.ping_roundtrip()
    assert "forged" not in viewer.texts("#inside")


async def test_clients_cannot_set_server_tags_impersonate_or_inject(cluster):
    mallory = await cluster.client("mallory", channels=("#guarded",))
    victim = await cluster.client("victim", channels=("#guarded",))
    await mallory.send(
        "@badges=staff/1;mod=1;user-id=1;display-name=Victim;id=fake;tmi-sent-ts=1;room-id=2;subscriber=1;"
        "client-nonce=a\\r\\nPRIVMSG\\s#guarded\\s:injected :victim!victim@victim.tmi.twitch.tv PRIVMSG #guarded "
        ":not really from the victim"
    )
    got = await victim.expect_message("PRIVMSG", "not really from the victim")
    assert got.source == "mallory!mallory@mallory.tmi.twitch.tv"
    assert got.tags["user-id"] == stable_id("mallory") and got.tags["display-name"] == "mallory"
    assert got.tags["badges"] == "" and got.tags["mod"] == "0" and got.tags["subscriber"] == "0"
    assert got.tags["id"] != "fake" and got.tags["tmi-sent-ts"] != "1" and got.tags["room-id"] == stable_id("guarded")
    # The nonce is passed on with its line break still escaped: no second line appeared.
    assert got.tags["client-nonce"] == "a\r\nPRIVMSG #guarded :injected"
    await victim.ping_roundtrip()
    assert "injected" not in victim.texts("#guarded")
