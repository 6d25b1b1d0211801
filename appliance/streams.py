"""Long-lived responses (server-sent events, MJPEG, WebSockets) per account: a cap, so one user or one
stolen token cannot hold the web process's connections. Beyond `streams_per_user` a new stream is a 429."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from appliance.errors import TooManyRequests

T = TypeVar("T")


class StreamSlots:
    def __init__(self, per_user: int) -> None:
        self.per_user = per_user
        self.open: Counter[int] = Counter()
        self._lock = threading.Lock()

    def take(self, user_id: int) -> Callable[[], None]:
        """Hold one slot of the user's; returns the release (safe to call more than once)."""
        with self._lock:
            if self.open[user_id] >= self.per_user:
                raise TooManyRequests(
                    f"you already have {self.per_user} live streams open (config key streams_per_user); "
                    "close one (another tab?) and try again",
                    headers={"Retry-After": "5"},
                )
            self.open[user_id] += 1
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if not released:
                    released = True
                    self.open[user_id] -= 1
                    if self.open[user_id] <= 0:
                        del self.open[user_id]

        return release

    async def hold_while(self, release: Callable[[], None], stream: AsyncIterator[T]) -> AsyncIterator[T]:
        """Yield the stream's items; the slot is released when the stream ends or the client leaves."""
        try:
            async for item in stream:
                yield item
        finally:
            release()


def stream_slots(state: Any) -> StreamSlots:
    """The web process's slots (made on first use from the config)."""
    slots = state.get("stream_slots")
    if slots is None:
        slots = StreamSlots(state.config.streams_per_user)
        state.stream_slots = slots
    return slots
