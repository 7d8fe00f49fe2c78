"""Ids in URL paths: any id the pipeline publishes (`pipeline.ids`) fits in one path segment, percent-encoded.

The server decodes a request's path before routing, so an id holding "/" (sent as `%2F`) would split into
two segments and match no route. Under the id routes the router is given the path as sent instead, and each
id is decoded after its segment has matched.
"""

from __future__ import annotations

from urllib.parse import quote, unquote_to_bytes

from starlette.convertors import Convertor, register_url_convertor
from starlette.types import ASGIApp, Receive, Scope, Send

ID_ROUTES = (b"/users/", b"/products/")


class EncodedId(Convertor[str]):
    """`{user_id:id}`: one segment as sent, decoded as UTF-8 once it has matched."""

    regex = "[^/]+"

    def convert(self, value: str) -> str:
        # The raw path is bytes read as Latin-1 (one character a byte): back to bytes, then decoded.
        return unquote_to_bytes(value.encode("latin-1")).decode("utf-8", errors="replace")

    def to_string(self, value: str) -> str:
        return quote(value, safe="")


register_url_convertor("id", EncodedId())


class RouteIdsAsSent:
    """ASGI middleware: under `ID_ROUTES`, route on the path as the client sent it (`raw_path`)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path") if scope["type"] == "http" else None
        root = scope.get("root_path", "").encode("latin-1")  # behind a proxy, the mount point comes first
        if raw and raw.startswith(root) and raw[len(root):].startswith(ID_ROUTES):
            scope = {**scope, "path": raw.decode("latin-1")}
        await self.app(scope, receive, send)
