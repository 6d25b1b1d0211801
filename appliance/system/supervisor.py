"""`appliance run`: the whole box in one terminal (development twin of systemd's appliance.target).

Starts web, worker, camera and outputs as child processes of this one, prefixes each line they print with the
child's name, restarts a child that dies (after a pause that doubles from 1 s up to 30 s, back to 1 s
once it has run a minute), and stops all of them on Ctrl+C or SIGTERM: SIGTERM each, SIGKILL whoever is
still there after `STOP_TIMEOUT_S`. On the device systemd does all this instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
HEALTHY_AFTER_S = 60.0
STOP_TIMEOUT_S = 15.0
NAME_WIDTH = 6


def _die_with_supervisor() -> None:  # pragma: no cover - runs in the child between fork and exec
    """A child gets SIGTERM when the supervisor dies, even by SIGKILL (PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    backoff_s: float = FIRST_BACKOFF_S
    restart_at: float = 0.0  # monotonic time of the next start after a death; 0 = running or never died
    restarts: int = 0
    pumps: list[threading.Thread] = field(default_factory=list)


class Supervisor:
    def __init__(
        self,
        commands: dict[str, list[str]],
        *,
        env: dict[str, str] | None = None,
        out: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.children = [Child(name, argv) for name, argv in commands.items()]
        self.env = env
        self.out = out or sys.stdout
        self.clock = clock
        self.stopping = threading.Event()
        self._write_lock = threading.Lock()

    def say(self, name: str, line: str) -> None:
        with self._write_lock:
            self.out.write(f"{name:<{NAME_WIDTH}}| {line}\n")
            self.out.flush()

    def _pump(self, name: str, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            self.say(name, raw.decode("utf-8", "replace").rstrip("\n"))
        stream.close()

    def start(self, child: Child) -> None:
        child.process = subprocess.Popen(
            child.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_supervisor,
            start_new_session=True,  # Ctrl+C reaches the supervisor only; it stops the children in order
        )
        child.started_at = self.clock()
        child.restart_at = 0.0
        assert child.process.stdout is not None
        pump = threading.Thread(
            target=self._pump, args=(child.name, child.process.stdout), name=f"out-{child.name}", daemon=True
        )
        pump.start()
        child.pumps = [pump]
        self.say("run", f"started {child.name} (pid {child.process.pid})")

    def check(self, child: Child) -> None:
        """Notice a death and schedule the restart; start it when its pause is over."""
        now = self.clock()
        if child.process is not None and child.restart_at == 0.0:
            code = child.process.poll()
            if code is None:
                if now - child.started_at >= HEALTHY_AFTER_S:
                    child.backoff_s = FIRST_BACKOFF_S
                return
            for pump in child.pumps:
                pump.join(timeout=1)
            how = f"signal {-code}" if code < 0 else f"exit code {code}"
            self.say("run", f"{child.name} died ({how}); restarting in {child.backoff_s:.0f} s")
            child.restart_at = now + child.backoff_s
            child.backoff_s = min(MAX_BACKOFF_S, child.backoff_s * 2)
            return
        if child.restart_at and now >= child.restart_at:
            child.restarts += 1
            self.start(child)

    def stop_all(self) -> None:
        self.stopping.set()
        running = [c for c in self.children if c.process is not None and c.process.poll() is None]
        for child in running:
            self.say("run", f"stopping {child.name}")
            with contextlib.suppress(ProcessLookupError):
                assert child.process is not None
                child.process.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for child in running:
            assert child.process is not None
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say("run", f"{child.name} did not stop in {STOP_TIMEOUT_S:.0f} s: killing it")
                child.process.kill()
                child.process.wait()
            for pump in child.pumps:
                pump.join(timeout=2)

    def run(self, poll_s: float = 0.2) -> int:
        for child in self.children:
            self.start(child)
        try:
            while not self.stopping.wait(poll_s):
                for child in self.children:
                    self.check(child)
        finally:
            self.stop_all()
        self.say("run", "all stopped")
        return 0


def child_commands(
    config_path: str | None, host: str | None, port: int | None, *, fleet: bool = False
) -> dict[str, list[str]]:
    """The children's command lines; `fleet`: the box is in a fleet (docs/fleet.md), so the fleet process runs too."""
    base = [sys.executable, "-m", "appliance"] + (["--config", config_path] if config_path else [])
    serve = [*base, "serve"]
    if host:
        serve += ["--host", host]
    if port:
        serve += ["--port", str(port)]
    return {
        "web": serve,
        "worker": [*base, "worker"],
        "camera": [*base, "camera"],
        "outputs": [*base, "outputs"],
        **({"fleet": [*base, "fleet"]} if fleet else {}),
    }


def stopping_message(names: list[str]) -> str:
    """ "stopping web, worker, camera and outputs": every child by name."""
    return "stopping " + (", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else "".join(names))


def run_supervisor(
    config_path: str | None, host: str | None, port: int | None, *, fleet: bool = False
) -> int:
    commands = child_commands(config_path, host, port, fleet=fleet)
    # As the systemd units do: glibc's per-thread heap arenas (up to 8 per core) made the web's memory grow in
    # steps as its thread pool turned over (issue 28's soak); two arenas keep it flat.
    supervisor = Supervisor(commands, env={"MALLOC_ARENA_MAX": "2", **os.environ})

    def on_signal(signum: int, frame: Any) -> None:
        supervisor.say("run", f"signal {signal.Signals(signum).name}: {stopping_message(list(commands))}")
        supervisor.stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return supervisor.run()
