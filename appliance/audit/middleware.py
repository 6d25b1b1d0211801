"""One place records every state-changing request: who (the signed-in user, or the account a sign-in tried),
from which address, the method, route, target ids and the status answered, plus what the route's domain code
noted (before/after of a camera, output or account). Routes added later are covered without a line of their own;
the few POST routes that change nothing are listed in NOT_AUDITED with the reason (a test walks every route).

The entry is written before the answer leaves: a client that saw its change confirmed can find it in the log.
Requests nobody signed in for (sign-in, setup, registration) are recorded per address within a budget, so an
anonymous flood cannot push real entries out of the size-bounded log; refusals before routing (unknown Host,
foreign Origin, wrong body type, no token on a private route) reach no route and are not recorded.
"""

from __future__ import annotations

import collections
import logging
import threading
import time

import anyio.to_thread
import msgspec
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from appliance.audit import context
from appliance.audit.log import Limits, NewEntry, append
from appliance.auth.middleware import PUBLIC, PUBLIC_IF_REGISTRATION
from appliance.auth.request_checks import STATE_CHANGING
from appliance.caller import CurrentUser
from appliance.config import Config
from appliance.db import Database

logger = logging.getLogger(__name__)

# POST routes that change nothing anyone could audit, by operation id, with the reason.
NOT_AUDITED: dict[str, str] = {
    "runInference": "reads only: runs a model on an uploaded image and answers its boxes",
    "suggestBoxes": "reads only: a model's boxes for one image, stored nowhere",
    "triggerCamera": (
        "a line signal, not a change: each is kept as its trigger row and the event it causes, and a PLC "
        "triggering over HTTP would otherwise fill the log"
    ),
}
HOLD_BYTES = 64 * 1024  # of an answer held until its entry is written (the created id is read from it)
BACKLOG = 1000  # entries kept in memory while the catalog refuses writes (disk full), written with the next


class AnonymousBudget:
    """Entries of requests nobody signed in for, per client address: `burst` at once, refilled at `per_minute`,
    and for all addresses together `total_burst` refilled at `total_per_minute` (a client with many addresses,
    an IPv6 range, cannot flood the log either). Those over it are counted; the address's next entry says how
    many went unrecorded."""

    def __init__(
        self,
        burst: int = 30,
        per_minute: float = 30.0,
        addresses: int = 4096,
        total_burst: int = 300,
        total_per_minute: float = 300.0,
    ) -> None:
        self.burst = burst
        self.rate = per_minute / 60.0
        self.addresses = addresses
        self.total_burst = total_burst
        self.total_rate = total_per_minute / 60.0
        self._total = [float(total_burst), time.monotonic()]
        self._buckets: collections.OrderedDict[str, list[float]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def _take_total(self, now: float) -> bool:
        tokens, stamp = self._total
        tokens = min(float(self.total_burst), tokens + max(0.0, now - stamp) * self.total_rate)
        self._total = [tokens - 1.0 if tokens >= 1.0 else tokens, now]
        return tokens >= 1.0

    def take(self, address: str, now: float | None = None) -> int | None:
        """None: over budget (counted); otherwise how many went unrecorded before this one."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, stamp, skipped = self._buckets.pop(address, [float(self.burst), now, 0.0])
            tokens = min(float(self.burst), tokens + (now - stamp) * self.rate)
            if tokens < 1.0 or not self._take_total(now):
                self._buckets[address] = [tokens, now, skipped + 1]
                allowed = None
            else:
                self._buckets[address] = [tokens - 1.0, now, 0.0]
                allowed = int(skipped)
            while len(self._buckets) > self.addresses:
                self._buckets.popitem(last=False)
            return allowed


class AuditWriter:
    """The web process's appender: entries that could not be written (a full disk) wait in memory, bounded,
    and go first with the next one."""

    def __init__(self, config: Config) -> None:
        self.limits = Limits.of(config)
        self.anonymous = AnonymousBudget()
        self.failures = 0
        self._backlog: collections.deque[NewEntry] = collections.deque(maxlen=BACKLOG)
        self._lock = threading.Lock()

    def write(self, db: Database, entry: NewEntry) -> None:
        with self._lock:
            pending = [*self._backlog, entry]
            self._backlog.clear()
        for index, item in enumerate(pending):
            try:
                append(db, item, self.limits)
            except Exception:
                logger.exception("could not write audit entry %s; kept in memory to retry", item.action)
                with self._lock:
                    self.failures += 1
                    self._backlog.extendleft(reversed(pending[index:]))
                return


def _created_id(held: list[Message]) -> int | None:
    body = b"".join(m.get("body", b"") for m in held if m["type"] == "http.response.body")
    if not body.startswith(b"{"):
        return None
    try:
        found = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None
    value = found.get("id") if isinstance(found, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _target(scope: Scope, draft: context.Draft, status: int, held: list[Message]) -> str:
    if draft.target is not None:
        return draft.target
    parts = [f"{name}={value}" for name, value in (scope.get("path_params") or {}).items()]
    created = _created_id(held) if status in (201, 202) else None  # created, or accepted as a job
    if created is not None:
        parts.append(f"created_id={created}")
    return " ".join(parts)


class AuditMiddleware:
    """ASGI middleware (inside routing, outside authentication): see the module docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = scope.get("route_handler")
        if (
            scope["type"] != "http"
            or scope.get("method") not in STATE_CHANGING
            or getattr(handler, "operation_id", None) in NOT_AUDITED
        ):
            await self.app(scope, receive, send)
            return
        draft, token = context.begin()
        held: list[Message] = []
        held_bytes = 0
        status = 0
        written = False

        async def flush() -> None:
            nonlocal written
            if not written:
                written = True
                try:
                    await self._record(scope, draft, status or 500, held)
                except Exception:  # the change is done: its answer is sent, the missing entry is logged
                    logger.exception(
                        "audit entry of %s %s not written", scope.get("method"), scope.get("path")
                    )
            for message in held:
                await send(message)
            held.clear()

        async def audited_send(message: Message) -> None:
            nonlocal status, held_bytes
            if written:
                await send(message)
                return
            held.append(message)
            if message["type"] == "http.response.start":
                status = int(message["status"])
                return
            if message["type"] == "http.response.body":
                held_bytes += len(message.get("body", b""))
                if message.get("more_body", False) and held_bytes <= HOLD_BYTES:
                    return
            await flush()

        try:
            await self.app(scope, receive, audited_send)
        finally:
            context.end(token)
            if not written:  # the route raised past every handler, or never answered
                await flush()

    async def _record(self, scope: Scope, draft: context.Draft, status: int, held: list[Message]) -> None:
        app = scope["app"]
        writer: AuditWriter | None = app.state.get("audit_writer")
        if writer is None:
            return
        handler = scope.get("route_handler")
        user = scope.get("user")
        address = (scope.get("client") or ("", 0))[0] or "unknown"
        actor_id: int | None
        actor: str
        role: str
        if isinstance(user, CurrentUser):
            actor_id, actor, role = user.id, user.username, user.role
        else:
            opt = getattr(handler, "opt", {}) or {}
            if not (opt.get(PUBLIC) or opt.get(PUBLIC_IF_REGISTRATION)):
                return  # refused before any route ran (no or a bad token): nothing happened, nobody known
            skipped = writer.anonymous.take(address)
            if skipped is None:
                return
            if skipped:
                draft.details["unrecorded_before"] = skipped
            actor_id, actor, role = draft.actor_id, draft.actor or "", draft.role or ""
        method = str(scope.get("method", ""))
        template = str(scope.get("path_template") or scope.get("path", ""))
        operation = getattr(handler, "operation_id", None)
        entry = NewEntry(
            action=operation if isinstance(operation, str) and operation else f"{method} {template}",
            actor_id=actor_id,
            actor=actor,
            role=role,
            address=address,
            process="serve",
            method=method,
            route=template,
            path=str(scope.get("path", "")),
            target=_target(scope, draft, status, held),
            status=status,
            details=draft.details,
        )
        pool = app.state.pool

        def write() -> None:
            with pool.connection() as db:
                writer.write(db, entry)

        await anyio.to_thread.run_sync(write)


__all__ = ["NOT_AUDITED", "AnonymousBudget", "AuditMiddleware", "AuditWriter"]
