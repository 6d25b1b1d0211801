"""`appliance fleet`: the process that takes part in the fleet. Its own process (not a thread of the web or the
camera process): a broker or a store that hangs cannot slow a request or a camera, and it restarts on its own.

Its main loop: this box's status on the broker (every STATUS_EVERY_S and when something changed), the other
boxes' statuses into the Fleet page's view file, this box's step in the newest rollout that names it (every
`fleet_poll_s`, every half second while one is under way, at once when the broker says something changed),
the hard cases the sampling rules pick and the upload queue, its key in the store, and its heartbeat.
A box in no fleet (no broker, no store) runs it idle, so that one unit file serves every box.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from appliance.config import Config
from appliance.db import Database, open_database
from appliance.fleet import hardcases
from appliance.fleet.keys import box_key
from appliance.fleet.participant import Participant, current_rollout
from appliance.fleet.presence import STATUS_EVERY_S, Presence, box_status, notify
from appliance.fleet.store import FleetStore, StoreError, store_configured
from appliance.fleet.view import fleet_configured
from appliance.outputs.outbox import box_id as configured_box_id
from appliance.system.entry import run_service
from appliance.system.notify import notify as sd_notify
from appliance.system.notify import watchdog_interval_s
from appliance.system.processes import beat, heartbeat_path

logger = logging.getLogger(__name__)

ACTIVE_POLL_S = 0.5
HARD_CASES_EVERY_S = 1.0
KEY_EVERY_S = 3600.0


class FleetProcess:
    def __init__(self, config: Config, *, db: Database | None = None) -> None:
        self.config = config
        self.db = db or open_database(config.db_path)
        self.box = configured_box_id(config)
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.presence = Presence(config, self.wake) if config.fleet_broker_host else None
        self.participant: Participant | None = None
        self.sampler = hardcases.Sampler(config, self.db)
        self.since = time.time()
        self.doing = "starting"
        self.last_error: str | None = None
        self._next = {"status": 0.0, "poll": 0.0, "cases": 0.0, "key": 0.0, "beat": 0.0}
        self._woken = False
        self._last_fresh = 0.0

    # --- steps ------------------------------------------------------------------------------------------

    def publish_status(self) -> None:
        if self.presence is None:
            return
        status = box_status(
            self.db, self.config, self.since, current_rollout(self.db), box_key(self.config).public.id
        )
        self.presence.publish_status(status)

    def poll_rollouts(self) -> None:
        if not store_configured(self.config):
            return
        if self.participant is None:
            self.participant = Participant(self.config, self.db, on_change=self._changed)
        before = current_rollout(self.db)
        now = time.monotonic()
        fresh = self._woken or now - self._last_fresh >= self.config.fleet_poll_s
        if fresh:
            self._last_fresh = now
        self.participant.poll(fresh=fresh)
        if current_rollout(self.db) != before:
            self._next["status"] = 0.0  # the rollout moved: say so on the broker now

    def _changed(self, kind: str, rollout_id: str) -> None:
        notify(self.config, kind, rollout_id)

    def hard_cases(self) -> None:
        self.sampler.scan()
        if store_configured(self.config):
            hardcases.upload_pending(self.db, self.config, FleetStore(self.config))

    def publish_key(self) -> None:
        if store_configured(self.config):
            FleetStore(self.config).put_bytes(
                f"keys/{self.box}.pub", box_key(self.config).public.text().encode(), "text/plain"
            )

    def step(self) -> None:
        now = time.monotonic()
        woken = self._woken = self.wake.is_set()
        self.wake.clear()
        for name, action, every in (
            ("key", self.publish_key, KEY_EVERY_S),
            ("poll", self.poll_rollouts, None),
            ("cases", self.hard_cases, HARD_CASES_EVERY_S),
            ("status", self.publish_status, STATUS_EVERY_S),
        ):
            if now < self._next[name] and not (woken and name in ("poll", "status")):
                continue
            if every is None:
                active = self.participant is not None and self.participant.active
                every = ACTIVE_POLL_S if active else self.config.fleet_poll_s
            self._next[name] = now + every
            try:
                action()
                if name == "poll":
                    self.last_error = None
            except StoreError as exc:
                self.last_error = exc.detail
                logger.warning("fleet %s: %s", name, exc.detail)
            except Exception:
                logger.exception("fleet %s failed", name)
        if self.participant is not None and self.participant.active:
            self._next["poll"] = min(self._next["poll"], now + ACTIVE_POLL_S)
        if self.presence is not None:
            self.presence.write_view()
        if now >= self._next["beat"]:
            self._next["beat"] = now + self.config.heartbeat_s
            self.doing = self._doing()
            beat(self.config.runtime_path, "fleet", self.doing)
            sd_notify(f"STATUS={self.doing}")

    def _doing(self) -> str:
        parts = []
        if self.presence is not None:
            parts.append("broker connected" if self.presence.view.connected else "broker not connected")
        if store_configured(self.config):
            parts.append(f"store error: {self.last_error[:200]}" if self.last_error else "store reachable")
        rollout = current_rollout(self.db)
        if rollout is not None:
            parts.append(f"rollout {rollout.id}: {rollout.state}")
        return "; ".join(parts)

    # --- the loop ------------------------------------------------------------------------------------------

    def run(self) -> int:
        sd_notify("READY=1")
        watchdog = watchdog_interval_s()
        next_ping = 0.0
        if not fleet_configured(self.config):
            logger.info("this box is in no fleet (fleet_broker_host and fleet_store_bucket are empty): idle")
        elif self.presence is not None:
            self.presence.start()
        logger.info("fleet process of box %s ready (pid %s)", self.box, os.getpid())
        try:
            while not self.stop.is_set():
                if fleet_configured(self.config):
                    try:
                        self.step()
                    except Exception:
                        logger.exception("fleet process loop error")
                        self.stop.wait(0.5)
                elif time.monotonic() >= self._next["beat"]:
                    self._next["beat"] = time.monotonic() + self.config.heartbeat_s
                    beat(self.config.runtime_path, "fleet", "in no fleet (no broker, no store configured)")
                if watchdog and time.monotonic() >= next_ping:
                    sd_notify("WATCHDOG=1")
                    next_ping = time.monotonic() + watchdog
                self.wake.wait(0.2)  # a signal sets `stop`: seen within this pause
        finally:
            self.close()
        return 0

    def close(self) -> None:
        self.stop.set()
        if self.presence is not None:
            try:
                self.presence.stop()
            except Exception:
                logger.exception("leaving the broker failed")
        heartbeat_path(self.config.runtime_path, "fleet").unlink(missing_ok=True)


def run_fleet(config: Config) -> int:
    return run_service(config, "the fleet process", lambda db: FleetProcess(config, db=db))
