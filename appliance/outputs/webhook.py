"""Webhook output: each event's JSON POSTed to a URL, one request per event, in order, signed with HMAC-SHA256.

Signature (docs/outputs.md): `X-Appliance-Timestamp: <unix seconds>` and
`X-Appliance-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>." + body with the shared key>`; a receiver
recomputes it, compares in constant time and refuses old timestamps (replays). Any 2xx is delivery; anything
else (3xx included: redirects are not followed) is retried by the sender with exponential backoff.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import logging
import ssl
import time
from urllib.parse import urlsplit

from appliance import __version__
from appliance.db import Database
from appliance.outputs.camera_live import CameraLive
from appliance.outputs.connector import DeliveryError
from appliance.outputs.contracts import ConnectorState, OutboxItem
from appliance.outputs.schemas import WebhookSettings

logger = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 64 * 1024


def signature(key: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(key.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def signed_headers(key: str, body: bytes, event_id: int | None, kind: str = "event") -> dict[str, str]:
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"appliance/{__version__}",
        "X-Appliance-Timestamp": str(timestamp),
        "X-Appliance-Signature": signature(key, timestamp, body),
        "X-Appliance-Kind": kind,
    }
    if event_id is not None:
        headers["X-Appliance-Event-Id"] = str(event_id)
    return headers


class WebhookClient:
    """One keep-alive connection to the receiver, opened again after any error."""

    def __init__(self, settings: WebhookSettings) -> None:
        self.settings = settings
        parts = urlsplit(settings.url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self.https:
                context = ssl.create_default_context(cafile=self.settings.ca_file or None)
                if not self.settings.verify_tls:
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                self._conn = http.client.HTTPSConnection(
                    self.host, self.port, timeout=self.settings.timeout_s, context=context
                )
            else:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.settings.timeout_s)
        return self._conn

    def post(self, body: bytes, headers: dict[str, str]) -> int:
        """The response status; OSError / HTTPException when the request did not complete."""
        conn = self._connection()
        try:
            conn.request("POST", self.path, body=body, headers=headers)
            response = conn.getresponse()
            response.read(MAX_RESPONSE_BYTES)
            if response.will_close or response.length:  # unread rest or a closing server: start afresh
                self.close()
            return response.status
        except (OSError, http.client.HTTPException):
            self.close()
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class WebhookConnector:
    def __init__(self, output_id: int, settings: WebhookSettings) -> None:
        self.output_id = output_id
        self.settings = settings
        self.state = ConnectorState(detail=f"POST {settings.url}")
        self.client = WebhookClient(settings)

    def start(self) -> None:
        return None

    def deliver(self, items: list[OutboxItem]) -> int:
        done = 0
        for item in items:
            headers = signed_headers(self.settings.secret or "", item.payload, item.event_id)
            try:
                status = self.client.post(item.payload, headers)
            except (OSError, http.client.HTTPException) as exc:
                failure = f"POST {self.settings.url} failed: {exc}"
                break
            if not 200 <= status < 300:
                failure = f"POST {self.settings.url} answered {status}"
                break
            done += 1
        else:
            failure = ""
        self.state.connected = done > 0 or not failure
        if done:
            self.state.delivered_session += done
            self.state.detail = f"POST {self.settings.url}: delivered"
        if failure:
            self.state.detail = failure
        if failure and not done:
            raise DeliveryError(failure)
        return done

    def persist(self, db: Database) -> None:
        return None

    def cameras_changed(self, cameras: dict[int, CameraLive], changed: set[int]) -> None:
        return None  # a webhook carries events only

    def close(self) -> None:
        self.client.close()
