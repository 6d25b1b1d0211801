"""Proof that a training made no network connection: an audit hook recording every attempt off the box."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgspec

from appliance.training.contracts import NetworkAttempt

logger = logging.getLogger(__name__)


def is_loopback(host: Any) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    host = str(host).strip("[]")
    if host in ("", "localhost", "localhost.localdomain"):
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False  # a host name other than localhost would need DNS
    return address.is_loopback or address.is_unspecified


class NetworkAudit:
    """An audit hook that records every socket.connect / getaddrinfo to a non-loopback address."""

    PROBE = "appliance.network_audit.probe"

    def __init__(self, record_path: Path | None = None) -> None:
        self.attempts: list[NetworkAttempt] = []
        self.record_path = record_path
        self.active = False  # set once a probe event went through the installed hook
        self._lock = threading.Lock()

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        if event == self.PROBE:
            self.active = True
            return
        if event == "socket.connect":
            address = args[1] if len(args) > 1 else None
            if not isinstance(address, tuple) or not address:
                return  # AF_UNIX paths and the like stay on the box
            host, port = address[0], address[1] if len(address) > 1 else None
        elif event == "socket.getaddrinfo":
            host, port = args[0], args[1] if len(args) > 1 else None
        else:
            return
        if is_loopback(host):
            return
        if isinstance(port, bytes):
            port = port.decode(errors="replace")
        attempt = NetworkAttempt(event=event, host=str(host), port=port, at=time.time())
        with self._lock:
            self.attempts.append(attempt)
        logger.warning("network attempt during training: %s %s:%s", event, host, port)
        if self.record_path is not None:
            with contextlib.suppress(OSError), self.record_path.open("ab") as handle:
                handle.write(msgspec.json.encode(attempt) + b"\n")

    def install(self) -> NetworkAudit:
        sys.addaudithook(self.hook)
        # An empty attempt list proves nothing unless the hook really sees this process's events.
        sys.audit(self.PROBE)
        return self
