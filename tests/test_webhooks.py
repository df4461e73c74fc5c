"""Webhook signing, secrets, backoff and settings (common/webhooks.py)."""
from __future__ import annotations

import base64

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from common.config import ConfigError, Env
from common.webhooks import MAX_BACKOFF, Signer, WebhookSettings, backoff, check_secret

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()


def test_deliveries_verify_with_the_standard_webhooks_library_and_only_unchanged():
    body = b'{"id":"chan:1763850010000","channel":"#chan"}'
    headers = Signer(SECRET).headers("chan:1763850010000", body)
    assert headers["webhook-id"] == "chan:1763850010000" and headers["Content-Type"] == "application/json"
    assert Webhook(SECRET).verify(body, headers) == {"id": "chan:1763850010000", "channel": "#chan"}
    later = str(int(headers["webhook-timestamp"]) + 1)
    for tampered_body, tampered_headers in ((body.replace(b"chan", b"evil"), headers),
                                            (body, headers | {"webhook-id": "chan:1"}),
                                            (body, headers | {"webhook-timestamp": later})):
        with pytest.raises(WebhookVerificationError):
            Webhook(SECRET).verify(tampered_body, tampered_headers)
    other = "whsec_" + base64.b64encode(bytes(32)).decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, headers)


@pytest.mark.parametrize("secret, says", [
    ("hunter2hunter2hunter2hunter2", "expected whsec_ followed by"),
    ("whsec_not base64!", "not base64"),
    ("whsec_" + base64.b64encode(b"short").decode(), "the key is 5 bytes; use 24 or more"),
])
def test_a_secret_must_be_standard_webhooks_whsec_base64_of_24_bytes_or_more(secret, says):
    with pytest.raises(ValueError, match=says):
        check_secret(secret)


def test_retries_back_off_exponentially_up_to_a_cap():
    assert [backoff(n, 1.0) for n in range(1, 7)] == [1, 2, 4, 8, 16, 32]
    assert backoff(20, 1.0) == backoff(10_000, 1.0) == MAX_BACKOFF
    assert backoff(3, 0.1) == pytest.approx(0.4)


def test_webhook_settings_from_the_environment():
    assert WebhookSettings.from_env(Env({})) is None
    settings = WebhookSettings.from_env(Env({"HIGHLIGHT_WEBHOOKS": "http://a.example/x, https://b.example/y",
                                             "HIGHLIGHT_WEBHOOK_SECRET": SECRET, "HIGHLIGHT_WEBHOOK_ATTEMPTS": "3"}))
    assert settings == WebhookSettings(urls=["http://a.example/x", "https://b.example/y"], secret=SECRET,
                                       timeout=5.0, backoff=1.0, attempts=3, queue=10_000)
    with pytest.raises(ConfigError, match="HIGHLIGHT_WEBHOOK_SECRET is required"):
        WebhookSettings.from_env(Env({}), urls=["http://a.example/x"])
