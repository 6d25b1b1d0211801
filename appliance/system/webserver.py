"""uvicorn for `appliance serve`, talking to systemd: READY=1 after startup, WATCHDOG=1 from the event loop."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from appliance.config import Config
from appliance.system.notify import notify, watchdog_interval_s

logger = logging.getLogger(__name__)


class NotifyingServer(uvicorn.Server):
    """READY=1 once the lifespan startup (catalog opened and migrated) is done and the socket listens.

    WATCHDOG=1 is sent by a task on the event loop itself, so a blocked loop (a sync call in an async
    handler, a deadlock) stops the pings and systemd restarts the process after WatchdogSec.
    """

    def __init__(self, config: uvicorn.Config, status: str = "") -> None:
        super().__init__(config)
        self.status = status
        self.loop: asyncio.AbstractEventLoop | None = None
        self._watchdog: asyncio.Task[None] | None = None

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if not self.started:
            return
        self.loop = asyncio.get_running_loop()
        notify(f"READY=1\nSTATUS={self.status or 'serving'}")
        interval = watchdog_interval_s()
        if interval:
            self._watchdog = asyncio.create_task(self._ping(interval))

    async def _ping(self, interval: float) -> None:
        while True:
            notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    async def shutdown(self, sockets: Any = None) -> None:
        notify("STOPPING=1\nSTATUS=stopping")
        if self._watchdog is not None:
            self._watchdog.cancel()
        await super().shutdown(sockets)


# Slow clients: a body must average at least MIN_BODY_RATE bytes/s once its first BODY_GRACE_S are over.
BODY_GRACE_S = 30.0
MIN_BODY_RATE = 16 * 1024
CHECK_EVERY_S = 1.0


class SlowClientGuard(H11Protocol):
    """uvicorn's h11 protocol with header and body deadlines (uvicorn has neither).

    A request's headers must arrive within `header_timeout_s` of the connection (or of the previous
    response); a body must keep arriving (no gap over `body_timeout_s`) and, after BODY_GRACE_S, average
    MIN_BODY_RATE. Without them 1,100 half-sent requests held 1,100 file descriptors for ever and the web
    process ran out of them ("Too many open files"). The values come from the config (build_server).
    """

    header_timeout_s = 10.0
    body_timeout_s = 30.0

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._waiting_since = self.loop.time()  # for this request's headers
        self._body_started = 0.0
        self._body_bytes = 0
        self._last_data = self._waiting_since
        self._guard = self.loop.call_later(CHECK_EVERY_S, self._check_deadlines)

    def data_received(self, data: bytes) -> None:
        now = self.loop.time()
        before = self.conn.their_state
        super().data_received(data)
        after = self.conn.their_state
        self._last_data = now
        if after is h11.SEND_BODY:
            if before is not h11.SEND_BODY:
                self._body_started, self._body_bytes = now, 0
            self._body_bytes += len(data)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._waiting_since = self.loop.time()  # keep-alive: the next request's headers have a deadline too

    def _check_deadlines(self) -> None:
        if self.transport.is_closing():
            return
        now = self.loop.time()
        state = self.conn.their_state
        too_slow = ""
        if state is h11.IDLE and (self.cycle is None or self.cycle.response_complete):
            if now - self._waiting_since > self.header_timeout_s:
                too_slow = "request headers"
        elif state is h11.SEND_BODY and self._body_started:
            elapsed = now - self._body_started
            if now - self._last_data > self.body_timeout_s:
                too_slow = "request body (stalled)"
            elif elapsed > BODY_GRACE_S and self._body_bytes < (elapsed - BODY_GRACE_S) * MIN_BODY_RATE:
                too_slow = "request body (too slow)"
        if too_slow:
            logger.info("closing a connection from %s: %s did not arrive in time", self.client, too_slow)
            self.transport.close()
            return
        self._guard = self.loop.call_later(CHECK_EVERY_S, self._check_deadlines)

    def connection_lost(self, exc: Exception | None) -> None:
        self._guard.cancel()
        super().connection_lost(exc)


def build_server(app: Any, config: Config) -> NotifyingServer:
    """The server `appliance serve` runs: HTTPS when tls_cert is configured."""
    scheme = "https" if config.tls_cert else "http"
    return NotifyingServer(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            log_level=config.log_level.lower(),
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
            http=type(
                "SlowClientGuard",
                (SlowClientGuard,),
                {
                    "header_timeout_s": config.http_header_timeout_s,
                    "body_timeout_s": config.http_body_timeout_s,
                },
            ),
            # Connections and requests at once before new requests get 503; the unit's LimitNOFILE is higher.
            limit_concurrency=config.http_max_concurrency,
            timeout_keep_alive=5,
            ssl_certfile=config.tls_cert or None,
            ssl_keyfile=config.tls_key or None,
        ),
        status=f"serving on {scheme}://{config.host}:{config.port}",
    )
