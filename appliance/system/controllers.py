"""GET /health (public), GET /system and the manuals the console links to."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Response, get
from litestar.params import Parameter

from appliance.auth.middleware import PUBLIC
from appliance.dependencies import DB, Settings
from appliance.system.manuals import read_manual
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

    @get("/manuals/{name:str}", operation_id="getManual", sync_to_thread=True, media_type="text/markdown")
    def manual(self, name: Annotated[str, Parameter(max_length=64)]) -> Response[str]:
        """A manual of docs/ as Markdown (`outputs`, `stations`, ...), for the console's manual page."""
        return Response(
            read_manual(name),
            media_type="text/markdown; charset=utf-8",
            headers={"Cache-Control": "private, max-age=300", "X-Content-Type-Options": "nosniff"},
        )
