"""Web side: per camera, one shared reader of its runtime files that fans the latest frame out to every viewer.

Viewers never queue: each takes the newest frame when it is ready for one, so a slow viewer skips frames and
cannot slow the others or the camera (the camera never waits for the web process at all). The reader runs
only while someone watches and stops a few seconds after the last viewer left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from appliance.camera.publish import PublishedFrame, meta_stamp, read_frame

logger = logging.getLogger(__name__)

POLL_S = 0.005  # a stat() every 5 ms: ~1/6 of a frame at 30 fps, negligible CPU
IDLE_STOP_S = 5.0
BOUNDARY = "frame"


class FrameHub:
    def __init__(self, folder: Path, poll_s: float = POLL_S) -> None:
        self.folder = folder
        self.poll_s = poll_s
        self.latest: PublishedFrame | None = None
        self.version = 0  # bumped for every new frame (seq restarts when the camera process does)
        self.viewers = 0
        self._changed: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def _ensure_reader(self) -> None:
        if self._changed is None:
            self._changed = asyncio.Event()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._read_loop(), name="camera-hub")

    async def _read_loop(self) -> None:
        stamp: int | None = None
        idle_since: float | None = None
        loop = asyncio.get_running_loop()
        try:
            while True:
                if self.viewers <= 0:
                    idle_since = idle_since or loop.time()
                    if loop.time() - idle_since > IDLE_STOP_S:
                        return
                else:
                    idle_since = None
                try:
                    current = meta_stamp(self.folder)
                    if current != stamp:
                        frame = await asyncio.to_thread(read_frame, self.folder) if current else None
                        if frame is not None or current is None:
                            stamp = current
                            # The stamp may lag the files by one frame (read between two renames): no repeats.
                            if (
                                frame is None
                                or self.latest is None
                                or frame.meta_json != self.latest.meta_json
                            ):
                                self._publish(frame)
                except OSError:  # runtime folder unreadable for a moment: viewers keep waiting, we retry
                    logger.exception("reading the camera's runtime files failed")
                    await asyncio.sleep(1.0)
                await asyncio.sleep(self.poll_s)
        except asyncio.CancelledError:
            raise

    def _publish(self, frame: PublishedFrame | None) -> None:
        self.latest = frame
        self.version += 1
        assert self._changed is not None
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def next_frame(
        self, after_version: int, timeout: float | None = None
    ) -> tuple[int, PublishedFrame | None]:
        """(version, frame) of the newest frame newer than after_version; (after_version, None) on timeout."""
        self._ensure_reader()
        assert self._changed is not None
        while self.version <= after_version or self.latest is None:
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), timeout)
            except TimeoutError:
                return after_version, None
        return self.version, self.latest

    @contextlib.asynccontextmanager
    async def viewer(self) -> AsyncIterator[None]:
        self.viewers += 1
        self._ensure_reader()
        try:
            yield
        finally:
            self.viewers -= 1


def mjpeg_part(jpeg: bytes) -> bytes:
    # The boundary goes right after the image: browsers show a part only once the next boundary arrives.
    head = f"Content-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
    return head + jpeg + f"\r\n--{BOUNDARY}\r\n".encode()


async def mjpeg_stream(hub: FrameHub) -> AsyncIterator[bytes]:
    async with hub.viewer():
        yield f"--{BOUNDARY}\r\n".encode()
        version = 0
        while True:
            version, frame = await hub.next_frame(version)
            if frame is not None:
                yield mjpeg_part(frame.jpeg)
