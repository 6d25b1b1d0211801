"""Checks every request passes before a route sees it: who may send it (Host, Origin) and in what form.

- Host: a name not in `allowed_hosts` (default: localhost, any IP literal, the machine's hostname and
  `<hostname>.local`, plus configured names) is refused with 400 on every route. A DNS-rebinding page
  reaches the box under the attacker's own host name, so this stops it.
- Origin: a state-changing request (POST, PUT, PATCH, DELETE) or a WebSocket handshake whose `Origin`
  is neither the request's own origin nor in `allowed_origins`, or that says `Sec-Fetch-Site:
  cross-site`, is refused with 403. Browsers send Origin on every cross-origin POST, including the
  "simple" text/plain ones that need no CORS preflight; another port on the same host is another origin.
- Content-Type: a JSON route refuses any other body type with 415, a multipart route anything but
  multipart (so a form on another site cannot post JSON as text/plain).
- HEAD is answered like GET without the body; a NUL byte in the path is a 400.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import msgspec
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from appliance.config import Config
from appliance.errors import error_body
from appliance.request_bodies import body_media_type

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# The console loads only its own files: no inline script, no outside origin.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        b"connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
        b"frame-ancestors 'none'; form-action 'self'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def split_host(host: str) -> str:
    """The host name of a Host header or an origin's netloc, without the port, lower case."""
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:8000
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


class RequestPolicy:
    """Which Host names and Origins this box answers, from the config and the machine's name."""

    def __init__(self, config: Config, hostname: str | None = None) -> None:
        name = (hostname if hostname is not None else socket.gethostname()).lower().rstrip(".")
        names = {
            "localhost",
            "localhost.localdomain",
            name,
            f"{name}.local",
            *self._names(config.allowed_hosts),
        }
        self.hosts = {n for n in names if n}
        self.any_host = "*" in config.allowed_hosts
        self.origins = {o.rstrip("/").lower() for o in config.allowed_origins}
        self.any_origin = "*" in config.allowed_origins

    @staticmethod
    def _names(values: Iterable[str]) -> set[str]:
        return {split_host(v) for v in values if v and v != "*"}

    def host_allowed(self, host: str | None) -> bool:
        if not host:  # HTTP/1.0 without Host: no browser sends that, so no rebinding through it
            return True
        name = split_host(host)
        return self.any_host or name in self.hosts or _is_ip_literal(name)

    def origin_allowed(self, origin: str | None, scheme: str, host: str | None) -> bool:
        """No Origin (a client that is not a browser), the request's own origin, or a configured one."""
        if origin is None:
            return True
        origin = origin.strip().rstrip("/").lower()
        if self.any_origin or origin in self.origins:
            return True
        parts = urlsplit(origin)
        if origin == "null" or parts.scheme not in ("http", "https") or not host:
            return False
        own_scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
        return parts.scheme == own_scheme and parts.netloc == host.strip().lower()

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        """(status, detail) when the request must not reach the app, else None."""
        if "\x00" in scope.get("path", ""):
            return 400, "invalid path: it contains a NUL byte"
        host = _header(scope, b"host")
        if not self.host_allowed(host):
            return 400, (
                f"unknown host name {split_host(host or '')!r}: this box answers to its own names and IP "
                "addresses (config key allowed_hosts adds others)"
            )
        unsafe = scope["type"] == "websocket" or scope.get("method", "GET") in STATE_CHANGING
        if not unsafe:
            return None
        if (_header(scope, b"sec-fetch-site") or "").lower() == "cross-site":
            return 403, "cross-site request refused"
        origin = _header(scope, b"origin")
        if not self.origin_allowed(origin, scope.get("scheme", "http"), host):
            return 403, f"request from another origin ({origin}) refused (config key allowed_origins)"
        return None


class RouteMethods:
    """The methods each path of the app answers, for OPTIONS (Litestar's own Allow header leaves some out)."""

    def __init__(self, routes: Iterable[Any]) -> None:
        self.table: list[tuple[re.Pattern[str], frozenset[str], bool]] = []
        for route in routes:
            methods = getattr(route, "methods", None)
            if not methods:
                continue
            catch_all = ":path}" in route.path  # the console's static files
            pattern = re.sub(r"\{[^}:]+:path\}", ".*", route.path.rstrip("/") or "/")
            pattern = re.sub(
                r"\{[^}:]+:int\}", "-?[0-9]+", pattern
            )  # /cameras/status is not /cameras/{id:int}
            pattern = re.sub(r"\{[^}]+\}", "[^/]+", pattern)
            self.table.append((re.compile(f"^{pattern}/?$"), frozenset(methods), catch_all))

    def allowed(self, path: str) -> list[str]:
        found: set[str] = set()
        for pattern, methods, catch_all in self.table:
            if catch_all and path.startswith("/api/"):
                continue  # an unknown API path is not a console file
            if pattern.match(path):
                found |= methods
        if "GET" in found:
            found.add("HEAD")
        return sorted(found | {"OPTIONS"}) if found else []


async def send_options(send: Send, methods: list[str]) -> None:
    if not methods:
        body = msgspec.json.encode(error_body(404, "not found"))
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 404, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})
        return
    headers = [(b"allow", ", ".join(methods).encode()), (b"content-length", b"0")]
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def with_security_headers(send: Send) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            present = {name.lower() for name, _ in message.get("headers", [])}
            extra = [(k, v) for k, v in SECURITY_HEADERS if k not in present]
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return wrapped


async def send_refusal(scope: Scope, send: Send, status: int, detail: str) -> None:
    if scope["type"] == "websocket":
        # Refused before the handshake is accepted: the browser sees the connection fail.
        await send({"type": "websocket.close", "code": 4000 + status, "reason": detail[:120]})
        return
    body = msgspec.json.encode(error_body(status, detail))
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def head_as_get(scope: Any, receive: Any, send: Any) -> tuple[Any, Any, Any]:
    """Run a HEAD request as GET and drop the body; a streaming response is told the client left."""
    responded = False

    async def send_headers_only(message: Message) -> None:
        nonlocal responded
        if message["type"] == "http.response.start":
            await send(message)
        elif message["type"] == "http.response.body" and not responded:
            responded = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def receive_then_disconnect() -> Any:
        if responded:
            return {"type": "http.disconnect"}
        return await receive()

    return {**scope, "method": "GET"}, receive_then_disconnect, send_headers_only


def _expected_body(scope: Scope) -> str | None:
    """The media type the matched route parses its `data` from (json, multipart), or None."""
    return body_media_type(scope.get("route_handler"))


def _has_body(scope: Scope) -> bool:
    length = _header(scope, b"content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return _header(scope, b"transfer-encoding") is not None


def content_type_middleware(app: ASGIApp) -> ASGIApp:
    """415 when a body arrives in a type the route does not parse (runs after routing)."""

    async def check(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") in STATE_CHANGING and _has_body(scope):
            expected = _expected_body(scope)
            given = (_header(scope, b"content-type") or "").split(";", 1)[0].strip().lower()
            if expected is not None and given != expected:
                detail = f"this route takes {expected}, not {given or 'a body without Content-Type'}"
                await send_refusal(scope, send, 415, detail)
                return
        await app(scope, receive, send)

    return check
