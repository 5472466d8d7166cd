"""Who may talk to the dashboard: the loopback rule, the token, and an access log without
secrets.

* Bound to a loopback address (the default), requests must name a loopback host
  (``127.0.0.1``, ``localhost``, ``[::1]``): a web page elsewhere cannot reach the dashboard by
  pointing a DNS name at 127.0.0.1 (DNS rebinding).
* With ``ATM_DASHBOARD_TOKEN`` every request needs it: ``Authorization: Bearer TOKEN``, or the
  ``atm_dashboard_token`` cookie a browser gets by opening any page once with ``?token=TOKEN``
  (answered with a redirect to the same page without it, so it stays out of history).
* The access log names method, path (never the query string, which may hold the token), status
  and milliseconds; every answer carries ``Server-Timing: app;dur=MS``.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import time
from urllib.parse import urlencode

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE = "atm_dashboard_token"
QUERY = "token"
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}
log = logging.getLogger("atm.dashboard")


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def request_host(headers: Headers) -> str:
    """The host name of the Host header, without its port."""
    host = headers.get("host", "")
    if host.startswith("["):
        return host.split("]")[0] + "]"
    return host.rsplit(":", 1)[0] if ":" in host else host


def wants_html(scope: Scope) -> bool:
    return not scope["path"].startswith(("/api", "/openapi.json"))


def refusal(scope: Scope, status: int, message: str, **headers: str) -> Response:
    """A one-line answer: JSON ``{"detail": ...}`` for the API, text for pages."""
    if wants_html(scope):
        return PlainTextResponse(message + "\n", status_code=status, headers=headers)
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


class Guard:
    """ASGI middleware applying the loopback rule and the token to every request."""

    def __init__(self, app: ASGIApp, token: str | None, loopback_only: bool) -> None:
        self.app = app
        self.token = token
        self.loopback_only = loopback_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if self.loopback_only and not is_loopback(request_host(request.headers)):
            answer = refusal(
                scope,
                400,
                "this dashboard listens on a loopback address only: open it as "
                "http://127.0.0.1:PORT or http://localhost:PORT",
            )
            await answer(scope, receive, send)
            return
        if self.token is not None:
            answer = self.check_token(request)
            if answer is not None:
                await answer(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def check_token(self, request: Request) -> Response | None:
        """None when the request may pass; otherwise the answer it gets."""
        header = request.headers.get("authorization", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "bearer" and self.matches(credentials.strip()):
            return None
        if self.matches(request.cookies.get(COOKIE)):
            return None
        from_query = request.query_params.get(QUERY)
        if self.matches(from_query):
            if request.method == "GET" and wants_html(request.scope):
                return self.remember(request)
            return None
        return refusal(
            request.scope,
            401,
            "this dashboard needs its token (ATM_DASHBOARD_TOKEN): send 'Authorization: Bearer "
            "TOKEN', or open a page once with ?token=TOKEN",
            **{"WWW-Authenticate": "Bearer"},
        )

    def matches(self, supplied: str | None) -> bool:
        assert self.token is not None
        return bool(supplied) and hmac.compare_digest(supplied.encode(), self.token.encode())

    def remember(self, request: Request) -> Response:
        """Set the token cookie and send the browser to the same page without ``?token=``."""
        url = request.url
        rest = [(k, v) for k, v in request.query_params.multi_items() if k != QUERY]
        target = url.path + (f"?{urlencode(rest)}" if rest else "")
        answer = RedirectResponse(target, status_code=303)
        answer.set_cookie(
            COOKIE, self.token or "", httponly=True, samesite="strict", secure=url.scheme == "https"
        )
        return answer


class AccessLog:
    """ASGI middleware: ``GET /dataruns/1 200 12.3 ms`` per request, and Server-Timing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def timed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                elapsed = (time.perf_counter() - started) * 1000
                message.setdefault("headers", [])
                message["headers"] = [
                    *message["headers"],
                    (b"server-timing", f"app;dur={elapsed:.1f}".encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, timed)
        finally:
            elapsed = (time.perf_counter() - started) * 1000
            log.info("%s %s %d %.1f ms", scope["method"], scope["path"], status, elapsed)
