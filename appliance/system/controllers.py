"""GET /health (public) and GET /system."""

from __future__ import annotations

from typing import Any

from litestar import Controller, get

from appliance.auth.middleware import PUBLIC
from appliance.dependencies import DB, Settings
from appliance.system.processes import ProcessesRead, processes_read
from appliance.system.service import system_report


class SystemController(Controller):
    path = "/"
    tags = ["system"]

    @get("/health", operation_id="health", opt={PUBLIC: True}, sync_to_thread=True)
    def health(self, db: DB) -> dict[str, Any]:
        db.execute("SELECT 1").fetchone()
        return {"status": "ok"}

    @get("/system", operation_id="getSystem", sync_to_thread=True)
    def system(self, config: Settings) -> dict[str, Any]:
        return system_report(config)

    @get("/system/processes", operation_id="getProcesses", sync_to_thread=True)
    def processes(self, config: Settings) -> ProcessesRead:
        """What runs (web, worker, camera) and whether training is possible: cheap, for the console's banner."""
        return processes_read(config.runtime_path)
