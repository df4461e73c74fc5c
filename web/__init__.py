"""The browser side of chatd: the chat page (`/` of every edge's WebSocket port)
and the operator console (`/console`). Plain HTML, CSS and JavaScript modules
under `static/`, served as they are (no build step); the pages speak only
chatd's public protocols: IRC over WebSocket and the HTTP APIs.
"""
from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).parent / "static"
ASSETS_PATH = "/assets/"  # where an edge serves ASSETS
CHAT_PAGE = ASSETS / "chat.html"
CONSOLE_PAGE = ASSETS / "console.html"

PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    # The pages load only their own files and talk only to the edge that served them.
    "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
                               "style-src 'self' 'unsafe-inline'; frame-ancestors 'self'",
    "X-Content-Type-Options": "nosniff",
}
