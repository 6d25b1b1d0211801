"""Spare time for shadow candidates: their processes are paused while any camera of this process judges a frame.

A candidate at the lowest CPU priority (SCHED_IDLE) still slowed the deployed model: on a 2-core box the two
models share caches, memory bandwidth and, on SMT hosts, the core itself, so the camera's inference took up to
a third longer while a candidate ran beside it (issue 26: trigger -> verdict p99 1.2x). A paused process costs
nothing, so the camera loops mark the time they judge a frame (`busy()`) and the time a trigger waits for its
verdict (frame, decode and all: `hold()` to `release()`); while at least one does, every candidate process
is stopped (SIGSTOP), and it is continued (SIGCONT) when the last one is done. The
candidates get exactly the time between frames; what they cannot finish is counted as skipped by the shadow.

Signals go through a pidfd where the kernel has them, so a candidate that ended and was reaped can never have
its pid reused by another process that would then be stopped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator


class _Candidate:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.pidfd: int | None = None
        with contextlib.suppress(AttributeError, OSError):
            self.pidfd = os.pidfd_open(pid)

    def send(self, signum: int) -> None:
        try:
            if self.pidfd is not None:
                signal.pidfd_send_signal(self.pidfd, signum)
            else:
                os.kill(self.pid, signum)
        except (ProcessLookupError, PermissionError):  # it ended: nothing to pause or continue
            pass

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


class SpareTime:
    """The camera process's one gate between its cameras' frames and the shadow candidates' processes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy = 0
        self._candidates: dict[int, _Candidate] = {}
        self.pauses = 0  # how many times the candidates were stopped (status, tests)

    def add(self, pid: int) -> None:
        """A candidate's process to pause while the cameras work (stopped at once if they do now)."""
        with self._lock:
            candidate = _Candidate(pid)
            self._candidates[pid] = candidate
            if self._busy:
                candidate.send(signal.SIGSTOP)

    def remove(self, pid: int) -> None:
        """Before a candidate is ended or reaped: it is continued so that it can read its end of input."""
        with self._lock:
            candidate = self._candidates.pop(pid, None)
            if candidate is not None:
                candidate.send(signal.SIGCONT)
                candidate.close()

    def hold(self) -> None:
        """A camera starts work the verdict waits for: candidates stop until every hold is released."""
        with self._lock:
            self._busy += 1
            if self._busy == 1 and self._candidates:
                self.pauses += 1
                for candidate in self._candidates.values():
                    candidate.send(signal.SIGSTOP)

    def release(self) -> None:
        with self._lock:
            self._busy -= 1
            if self._busy == 0:
                for candidate in self._candidates.values():
                    candidate.send(signal.SIGCONT)

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Around one camera's judging of one frame."""
        self.hold()
        try:
            yield
        finally:
            self.release()
