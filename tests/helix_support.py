"""What the tests of chatd's Twitch API surface share: Twitch's reference
shapes, an HTTP client for the API as a library calls it, OAuth clients and
tokens made the Twitch CLI's way."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import aiohttp

ROOT = Path(__file__).parent.parent
FIXTURES = Path(__file__).parent / "fixtures" / "twitch"


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())["example"]


def same_shape(ours: object, theirs: object, where: str = "") -> None:
    """Every field Twitch documents is there, with the same kind of value (null matches anything)."""
    if isinstance(theirs, dict):
        assert isinstance(ours, dict), where
        missing = set(theirs) - set(ours)
        assert not missing, f"{where}: missing {sorted(missing)}"
        for key, value in theirs.items():
            same_shape(ours[key], value, f"{where}.{key}")
    elif isinstance(theirs, list) and theirs:
        assert isinstance(ours, list), where
        for item in ours:
            same_shape(item, theirs[0], f"{where}[]")
    elif theirs is not None and ours is not None:
        assert type(ours) is type(theirs) or {type(ours), type(theirs)} <= {int, float}, (where, ours, theirs)


def client_add(cluster, name: str) -> tuple[str, str]:
    result = subprocess.run([sys.executable, "-m", "chatd.cli", "client", "add", name, "--data-dir",
                             str(cluster.data_dir)], capture_output=True, text=True, timeout=30, check=True, cwd=ROOT)
    client_id, secret = result.stdout.split()
    return client_id, secret


class Api:
    """Helix and OAuth through an edge's WebSocket port, as a library calls them."""

    def __init__(self, http: aiohttp.ClientSession, base: str, client_id: str) -> None:
        self.http, self.base, self.client_id = http, base, client_id

    async def call(self, method: str, path: str, token: str | None = None, headers: dict | None = None,
                   **kwargs) -> tuple[int, dict, dict]:
        headers = {"Client-Id": self.client_id} | (headers or {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        async with self.http.request(method, self.base + path, headers=headers, **kwargs) as response:
            text = await response.text()
            return response.status, (json.loads(text) if text else {}), dict(response.headers)


async def user_token(api: Api, secret: str, user_id: str, scopes: str) -> dict:
    status, body, _ = await api.call("POST", f"/auth/authorize?client_id={api.client_id}&client_secret={secret}"
                                             f"&grant_type=user_token&user_id={user_id}&scope={scopes}")
    assert status == 200, body
    return body
