"""The web console's files (``servers/web/console/``: plain ES modules, no build step), served
under ``/ui/`` by the front door.

The gateway lets ``/ui/`` through without a key: a page load cannot send one. The files hold no
secret; every API call the console makes carries the key the user pasted, and the gateway checks
it as for any client. Responses are gzipped (the console's first load is ~30 KB on the wire) and
revalidated on every load (``no-cache`` with ETags), so a new version is never hidden by a cache.
"""

from __future__ import annotations

from pathlib import Path

from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

CONSOLE_DIR = Path(__file__).with_name("console")
PREFIX = "/ui"

# The console loads nothing from another origin but media (presigned URLs, whose host is the
# S3 endpoint callers reach) and the latent previews (data: URLs).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob: http: https:; media-src 'self' blob: http: https:; "
    "style-src 'self'; script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)


class _ConsoleFiles:
    """StaticFiles with the console's headers on every answer."""

    def __init__(self) -> None:
        self._files = StaticFiles(directory=CONSOLE_DIR, html=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"cache-control", b"no-cache"),
                    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self._files(scope, receive, with_headers)


async def _to_console(request) -> Response:
    return RedirectResponse(f"{PREFIX}/", status_code=308)


def routes() -> list:
    """``/ui`` (redirected to ``/ui/``) and ``/ui/...``: the console's files, gzipped."""
    return [
        Route(PREFIX, _to_console, methods=["GET", "HEAD"]),
        Mount(PREFIX, app=GZipMiddleware(_ConsoleFiles(), minimum_size=512), name="console"),
    ]
