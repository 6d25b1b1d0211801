"""Password work (argon2, 64 MiB and a few hundred ms each) kept off the event loop and bounded.

At most `slots` hashes run at once, each in a worker thread; requests beyond that wait on the event loop
without holding a thread (so /health and every other route keep their threads), and past `max_waiting`
they get 503 at once. Requests from one client address run one at a time: the throttle's check, the
hash and the recording of a failure are then one step, and 40 concurrent guesses from one address meet
the lock after the fifth instead of all passing the check together.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread

from appliance.errors import Unavailable

T = TypeVar("T")


class PasswordGate:
    def __init__(self, slots: int = 2, max_waiting: int = 64) -> None:
        self.slots = slots
        self.max_waiting = max_waiting
        self.waiting = 0
        self._semaphore: asyncio.Semaphore | None = None
        self._clients: dict[str, tuple[asyncio.Lock, int]] = {}

    def _client_lock(self, client: str) -> asyncio.Lock:
        lock, users = self._clients.get(client, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._clients[client] = (lock, users + 1)
        return lock

    def _release_client(self, client: str) -> None:
        lock, users = self._clients[client]
        if users <= 1:
            del self._clients[client]
        else:
            self._clients[client] = (lock, users - 1)

    async def run(self, client: str, fn: Callable[..., T], *args: Any) -> T:
        if self.waiting >= self.max_waiting:
            raise Unavailable(
                "too many password checks at once; try again in a few seconds", headers={"Retry-After": "2"}
            )
        if self._semaphore is None:  # made inside the event loop that uses it
            self._semaphore = asyncio.Semaphore(self.slots)
        self.waiting += 1
        lock = self._client_lock(client)
        try:
            async with lock, self._semaphore:
                return await anyio.to_thread.run_sync(fn, *args)
        finally:
            self.waiting -= 1
            self._release_client(client)
