"""The browser client (``felund/web/``), served by the relay at ``/``.

- ``/`` is ``index.html``; any other path names a file under the web root.
  No directory listings, no dot files, nothing outside the root: a path
  with an empty, ``.`` or ``..`` segment, a backslash or a NUL is refused,
  and the resolved file must lie under the root (symlinks included).
- Every answer carries ``Cache-Control: no-cache`` (revalidated each load,
  so an upgraded relay serves the upgraded app at once; ``Last-Modified``
  and ``ETag`` keep that cheap) and ``X-Content-Type-Options: nosniff``;
  HTML carries the strict ``Content-Security-Policy`` below. The relay URL
  is a setting of the app, so ``connect-src`` admits any http(s)/ws(s) relay.
- Anything else is the JSON 404 of the API (the middleware's error format).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from aiohttp import web

from felund.errors import ApiError
from felund.relay.protocol import NOT_FOUND

WEB_ROOT: Final = Path(__file__).resolve().parents[2] / "web"
CSP: Final = (
    "default-src 'self'; connect-src 'self' ws: wss: http: https:; "
    "img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
CONTENT_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".webp": "image/webp",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
}
_COMMON: Final = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
WEB_ROOT_KEY: Final = web.AppKey("web_root", Path)


def resolve(root: Path, path: str) -> Path | None:
    """The file that ``path`` (URL path, decoded, without the leading /) names, or None."""
    if path == "":
        path = "index.html"
    if len(path) > 512 or "\\" in path or "\x00" in path:
        return None
    parts = path.split("/")
    if any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        return None
    try:
        target = root.joinpath(*parts).resolve(strict=True)
    except (OSError, RuntimeError):  # missing, or a symlink loop
        return None
    if not target.is_relative_to(root) or not target.is_file():
        return None
    return target


async def on_web(request: web.Request) -> web.StreamResponse:
    """GET /{path}: a file of the web app."""
    root = request.app[WEB_ROOT_KEY]
    target = resolve(root, request.match_info.get("path", ""))
    if target is None:
        raise ApiError(NOT_FOUND, "no such endpoint")
    headers = dict(_COMMON)
    content_type = CONTENT_TYPES.get(target.suffix.lower(), "application/octet-stream")
    headers["Content-Type"] = content_type
    if content_type.startswith("text/html"):
        headers["Content-Security-Policy"] = CSP
        headers["X-Frame-Options"] = "DENY"
    return web.FileResponse(target, headers=headers)


def is_web_file(request: web.Request) -> bool:
    """Whether a request is for the web app's files (``on_web``'s: any GET path that is
    no API route), which pay from their own budget (``Limits.web_files``)."""
    return request.match_info.route.handler is on_web


def add_web_routes(app: web.Application, root: Path = WEB_ROOT) -> None:
    """Serve the web app at ``/`` (call after every API route: this one takes any path)."""
    app[WEB_ROOT_KEY] = root.resolve()
    app.router.add_get("/{path:.*}", on_web)
