"""uvicorn for `appliance serve`, talking to systemd: READY=1 after startup, WATCHDOG=1 from the event loop."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import uvicorn

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
            ssl_certfile=config.tls_cert or None,
            ssl_keyfile=config.tls_key or None,
        ),
        status=f"serving on {scheme}://{config.host}:{config.port}",
    )
