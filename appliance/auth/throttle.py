"""Failed-login throttling per account and client address, and the clients that logged in before."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from appliance.db import Database, write_transaction
from appliance.errors import TooManyRequests


@dataclass
class _Failures:
    count: int = 0
    first_at: float = 0.0
    locked_until: float = 0.0


@dataclass
class LoginThrottle:
    """Failed logins per (account, client), per client and per account, with temporary, capped locks.

    The tight limits apply to the attacker's own address (per account+client, then per client). The
    per-account limit across all clients is high, its lock short (at most `account_lock_s`), and it
    does not apply to a client that logged into that account successfully before (remembered for
    `trusted_s`): an attacker spraying the admin account from many addresses slows down strangers,
    never the admin's own workstation, and nobody is locked out for good. Pass `now` (monotonic
    seconds) to drive it in tests.
    """

    pair_limit: int = 5
    client_limit: int = 20
    account_limit: int = 50
    window_s: float = 15 * 60
    max_lock_s: float = 15 * 60
    account_lock_s: float = 30
    trusted_s: float = 30 * 24 * 3600
    max_entries: int = 100_000
    _entries: dict[tuple[str, str], _Failures] = field(default_factory=dict)
    _trusted: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @staticmethod
    def _pair(username: str, client: str) -> str:
        return f"{username.lower()}|{client}"

    def _keys(self, username: str, client: str) -> list[tuple[tuple[str, str], int, float]]:
        return [
            (("pair", self._pair(username, client)), self.pair_limit, self.max_lock_s),
            (("client", client), self.client_limit, self.max_lock_s),
            (("account", username.lower()), self.account_limit, self.account_lock_s),
        ]

    def retry_after(self, username: str, client: str, now: float | None = None) -> float:
        """Seconds this client must wait before trying this account again (0: go ahead)."""
        now = time.monotonic() if now is None else now
        wait = 0.0
        with self._lock:
            trusted = self._trusted.get(self._pair(username, client), 0.0) > now
            for key, _limit, _cap in self._keys(username, client):
                if key[0] == "account" and trusted:
                    continue
                entry = self._entries.get(key)
                if entry and entry.locked_until > now:
                    wait = max(wait, entry.locked_until - now)
        return wait

    def check(self, username: str, client: str, now: float | None = None) -> None:
        wait = self.retry_after(username, client, now)
        if wait > 0:
            seconds = int(wait) + 1
            raise TooManyRequests(
                f"too many failed logins; try again in {seconds} s", headers={"Retry-After": str(seconds)}
            )

    def failed(self, username: str, client: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            for key, limit, cap in self._keys(username, client):
                entry = self._entries.setdefault(key, _Failures(first_at=now))
                if now - entry.first_at > self.window_s:
                    entry.count, entry.first_at, entry.locked_until = 0, now, 0.0
                entry.count += 1
                if entry.count >= limit:
                    # Doubling lock from 1 s, capped: 1, 2, 4 ... seconds.
                    entry.locked_until = now + min(cap, 2.0 ** min(entry.count - limit, 32))
            if len(self._entries) > self.max_entries:  # bounded memory under a spray of names
                stale = [
                    k
                    for k, v in self._entries.items()
                    if now - v.first_at > self.window_s and v.locked_until <= now
                ]
                for k in stale:
                    del self._entries[k]

    def succeeded(self, username: str, client: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        pair = self._pair(username, client)
        with self._lock:
            self._entries.pop(("pair", pair), None)
            if len(self._trusted) > self.max_entries:
                self._trusted = {k: v for k, v in self._trusted.items() if v > now}
            self._trusted[pair] = now + self.trusted_s

    # The trusted clients survive a restart in the catalog (table login_trusted, wall-clock times): an
    # attacker who makes the box restart must not make the admin's own workstation a stranger again.

    def remember(self, db: Database, username: str, client: str) -> None:
        """Record a successful login in the catalog (call after succeeded())."""
        until = time.time() + self.trusted_s
        with write_transaction(db):
            db.execute(
                "INSERT INTO login_trusted (pair, until) VALUES (?, ?) "
                "ON CONFLICT (pair) DO UPDATE SET until = excluded.until",
                [self._pair(username, client), until],
            )
            db.execute("DELETE FROM login_trusted WHERE until < ?", [time.time()])

    def load_trusted(self, db: Database) -> int:
        """The catalog's trusted clients into memory (at web start); returns how many."""
        wall, mono = time.time(), time.monotonic()
        rows = db.execute(
            "SELECT pair, until FROM login_trusted WHERE until > ? ORDER BY until DESC LIMIT ?",
            [wall, self.max_entries],
        ).fetchall()
        with self._lock:
            for pair, until in rows:
                self._trusted[pair] = max(self._trusted.get(pair, 0.0), mono + (until - wall))
        return len(rows)
