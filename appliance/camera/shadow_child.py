"""The candidate model's process of a shadowed camera: `python -m appliance.camera.shadow_child MODEL IMGSZ NAMES`.

Why a process of its own, at the lowest CPU priority (Linux's SCHED_IDLE policy, and nice 19 where that
policy is refused; its inference threads inherit both): the deployed model's verdict must never wait for the
candidate. Threads of the camera process would share its interpreter lock and its scheduling weight; an idle-
class process only gets the CPU the camera process leaves idle (a normal thread that wakes preempts it at
once, where nice 19 alone lets a candidate thread finish its time slice first: 1.18x trigger p99 measured
with nice alone), and a crash or a leak in it cannot touch the cameras.

Protocol on stdin/stdout (the camera process's shadow thread is the other end):
- at start, one line: {"ready": true, "backend": KEY} or {"error": MESSAGE} (then it exits);
- per frame in: one JSON line {"seq", "height", "width", "channels", "conf", "iou"}, then the raw pixels
  (uint8, BGR, height x width x channels bytes);
- per frame out: one JSON line {"seq", "detections": [[class_id, confidence, x1, y1, x2, y2], ...], "ms"}.
It ends at the end of its input, or with the camera process (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time
from typing import Any

import msgspec
import numpy as np

PRIORITY = 19  # nice: the scheduler gives the candidate only what others leave


class FrameHeader(msgspec.Struct):
    seq: int
    height: int
    width: int
    channels: int
    conf: float
    iou: float


class Reply(msgspec.Struct, omit_defaults=True):
    seq: int = 0
    detections: list[tuple[int, float, float, float, float, float]] = msgspec.field(default_factory=list)
    ms: float = 0.0
    ready: bool = False
    backend: str | None = None
    error: str | None = None


def _write(out: Any, reply: Reply) -> None:
    out.write(msgspec.json.encode(reply) + b"\n")
    out.flush()


def lowest_priority() -> str:
    """Put the calling thread (and the threads it starts later) at the lowest CPU priority; says which."""
    os.nice(PRIORITY)
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux, or a sandbox that refuses it: nice 19 stays
        return "nice"
    return "idle"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    lowest_priority()  # before any inference thread exists: they all inherit it
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    try:
        from appliance.inference.pipeline import load_detector

        names = msgspec.json.decode(argv[2], type=list[str])
        detector = load_detector(argv[0], class_names=names, imgsz=int(argv[1]))
    except Exception as exc:  # the camera process shows it as the shadow's error
        _write(sink, Reply(error=f"{type(exc).__name__}: {exc}"[:500]))
        return 2
    _write(sink, Reply(ready=True, backend=detector.key))
    while True:
        line = source.readline()
        if not line:
            return 0
        header = msgspec.json.decode(line, type=FrameHeader)
        size = header.height * header.width * header.channels
        data = source.read(size)
        if len(data) != size:
            return 0
        shape = (
            (header.height, header.width, header.channels)
            if header.channels > 1
            else (header.height, header.width)
        )
        image = np.frombuffer(data, np.uint8).reshape(shape)
        started = time.perf_counter()
        try:
            found = detector.detect(image, conf=header.conf, iou=header.iou)
        except Exception as exc:
            _write(sink, Reply(seq=header.seq, error=f"{type(exc).__name__}: {exc}"[:500]))
            continue
        boxes = [(d.class_id, d.confidence, d.x1, d.y1, d.x2, d.y2) for d in found.detections]
        _write(sink, Reply(seq=header.seq, detections=boxes, ms=(time.perf_counter() - started) * 1000))


if __name__ == "__main__":
    sys.exit(main())
