"""Talking to the supervisor: sd_notify (systemd-python when installed, else the plain NOTIFY_SOCKET
datagram protocol) and stopping cleanly on SIGTERM / SIGINT."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from typing import Any

logger = logging.getLogger(__name__)

try:  # pragma: no cover - only on the device
    from systemd import daemon as _systemd_daemon  # type: ignore
except ImportError:
    _systemd_daemon = None


def notify(message: str) -> bool:
    """Send one notification ("READY=1", "WATCHDOG=1", "STATUS=..."); False when not under systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if _systemd_daemon is not None:
        try:
            return bool(_systemd_daemon.notify(message))
        except OSError:
            logger.warning("sd_notify through systemd-python failed", exc_info=True)
            return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
        return True
    except OSError:
        logger.warning("sd_notify to %s failed", address, exc_info=True)
        return False


def stop_on_signals(stop: threading.Event, what: str) -> None:
    """SIGTERM (systemd, `appliance run`) and SIGINT (Ctrl+C) set `stop`; the process finishes its step."""

    def on_signal(signum: int, frame: Any) -> None:
        logger.info("signal %s: stopping %s", signal.Signals(signum).name, what)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def watchdog_interval_s() -> float | None:
    """Half of WatchdogSec (as systemd recommends), or None when no watchdog is asked for."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid.isdigit() and int(pid) != os.getpid()):
        return None
    try:
        return int(usec) / 1_000_000 / 2
    except ValueError:
        return None
