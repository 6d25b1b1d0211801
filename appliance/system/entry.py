"""The start every long-running process shares (`appliance camera | outputs | fleet`): the catalog opened and
migrated, the runtime folder made, SIGTERM and SIGINT wired to the process's stop, then its run loop."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from appliance.config import Config
from appliance.db import Database, migrate, open_database
from appliance.system.notify import stop_on_signals


class Service(Protocol):
    stop: threading.Event

    def run(self) -> int: ...


def run_service(
    config: Config, what: str, make: Callable[[Database], Service], *, keep_catalog: bool = True
) -> int:
    """`make` builds the process on the migrated catalog; with keep_catalog false the connection is closed first
    (a process that opens its own, per thread) and `make` gets it closed. `what` names it in the stop message."""
    db = open_database(config.db_path)
    migrate(db, config.db_path)
    if not keep_catalog:
        db.conn.close()
    config.runtime_path.mkdir(parents=True, exist_ok=True)
    process = make(db)
    stop_on_signals(process.stop, what)
    return process.run()
