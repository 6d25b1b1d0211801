"""Aravis' GigE Vision camera simulator (`arv-fake-gv-camera-0.8`, Debian's aravis-tools) on loopback.

GigE Vision control is UDP port 3956 on the camera's address, and the simulator only listens on an address
an interface has, so each simulator gets a loopback address of its own (a random 127.x.y.z/32 added to `lo`,
removed afterwards) and a serial number of its own: simulators of two test runs at once never meet, and
each run picks its own cameras out of a discovery that sees both. Adding an address needs root
(CAP_NET_ADMIN), which CI has; elsewhere the tests that need a simulator are skipped with the reason.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SIMULATOR = "arv-fake-gv-camera-0.8"
GVCP_PORT = 3956


def aravis_importable() -> str | None:
    """None when PyGObject and Aravis 0.8 load, else why not."""
    from appliance.camera.genicam import unavailable_reason

    return unavailable_reason()


def skip_reason() -> str | None:
    if shutil.which(SIMULATOR) is None:
        return f"{SIMULATOR} is missing: apt-get install aravis-tools"
    if reason := aravis_importable():
        return reason
    if shutil.which("ip") is None:
        return "the ip command is missing (iproute2): each simulator needs a loopback address of its own"
    if os.geteuid() != 0:
        return "adding a loopback address for the simulator (ip addr add 127.x.y.z/32 dev lo) needs root"
    return None


needs_simulator = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")


def _port_taken(address: str) -> bool:
    """Something is bound to <address>:3956 (read from /proc/net/udp: a bind to test it could collide
    with the simulator's own)."""
    packed = socket.inet_aton(address)[::-1].hex().upper() + f":{GVCP_PORT:04X}"
    with open("/proc/net/udp") as table:
        return any(line.split()[1] == packed for line in table.readlines()[1:])


def _loopback_addresses() -> set[str]:
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", "lo"], capture_output=True, text=True)
    return {part.split("/")[0] for part in out.stdout.split() if part.count(".") == 3 and "/" in part}


@contextlib.contextmanager
def loopback_address() -> Iterator[str]:
    """A 127.x.y.z/32 on lo that nothing else uses, removed on exit."""
    taken = _loopback_addresses()
    for _ in range(100):
        address = f"127.{random.randint(100, 254)}.{random.randint(0, 255)}.{random.randint(2, 254)}"
        if address not in taken and not _port_taken(address):
            break
    else:
        raise RuntimeError("no free loopback address for the simulator")
    added = subprocess.run(
        ["ip", "addr", "add", f"{address}/32", "dev", "lo"], capture_output=True, text=True
    )
    if added.returncode != 0:
        pytest.skip(f"could not add {address} to lo: {added.stderr.strip()}")
    try:
        yield address
    finally:
        subprocess.run(["ip", "addr", "del", f"{address}/32", "dev", "lo"], capture_output=True)


class Simulator:
    """One simulated camera: `start()`, `kill()` (a power cut), `start()` again at the same address."""

    def __init__(self, address: str, serial: str, log: Path, lost_per_1000: int = 0) -> None:
        self.address = address
        self.serial = serial
        self.log = log
        self.lost_per_1000 = lost_per_1000
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def source(self) -> str:
        return f"gige://{self.serial}"

    def start(self, timeout: float = 10.0) -> Simulator:
        command = [SIMULATOR, "-i", self.address, "-s", self.serial]
        if self.lost_per_1000:
            command += ["-r", str(self.lost_per_1000)]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not _port_taken(self.address):  # listening on <address>:3956
            if self.process.poll() is not None:
                raise RuntimeError(f"the simulator stopped: {self.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("the simulator did not start listening")
            time.sleep(0.02)
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None


@contextlib.contextmanager
def simulators(folder: Path, count: int = 1, lost_per_1000: int = 0) -> Iterator[list[Simulator]]:
    """`count` running simulators, each on its own loopback address with a serial unique to this run."""
    tag = f"{os.getpid() % 10_000:04d}{random.randint(0, 99):02d}"
    with contextlib.ExitStack() as stack:
        cams = []
        for n in range(count):
            address = stack.enter_context(loopback_address())
            sim = Simulator(address, f"T{tag}{n}", folder / f"simulator-{n}.log", lost_per_1000)
            stack.callback(sim.kill)
            cams.append(sim.start())
        yield cams


__all__ = ["Simulator", "needs_simulator", "simulators"]
