"""HTTP routes of the audit log (admins only): pages of entries with filters, the export as JSON lines, and the
chain's verification."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency, Provide
from litestar.params import QueryParameter
from litestar.response import Stream

from appliance.audit.log import iter_entries, list_entries
from appliance.audit.schemas import AuditFilters, AuditPage, Outcome, VerifyReport
from appliance.audit.verify import verify
from appliance.caller import require_admin
from appliance.config import Config
from appliance.db import open_database
from appliance.dependencies import DB, Caller, Settings
from appliance.ids import MAX_ID

Text = Annotated[str | None, QueryParameter(min_length=1, max_length=200)]
Time = Annotated[float | None, QueryParameter(ge=0, le=1e11, description="unix time (seconds)")]


def export_lines(config: Config, filters: AuditFilters) -> Iterator[bytes]:
    """Oldest first, one entry per line, on a connection of its own (the stream outlives the request's)."""
    db = open_database(config.db_path, readonly=True)
    encoder = msgspec.json.Encoder()
    try:
        for entry in iter_entries(db, filters):
            yield encoder.encode(entry) + b"\n"
    finally:
        db.conn.close()


def _filters(
    actor: Text = None,
    action: Text = None,
    outcome: Annotated[Outcome | None, QueryParameter()] = None,
    address: Text = None,
    since: Time = None,
    until: Time = None,
    text: Text = None,
) -> AuditFilters:
    """The query's filters, the same for a page and an export. `outcome`: ok (answered below 400), refused (4xx),
    error (5xx); `text` is looked for in the target, the path and the details."""
    return AuditFilters(
        actor=actor, action=action, outcome=outcome, address=address, since=since, until=until, text=text
    )


Filters = NamedDependency[AuditFilters]


class AuditController(Controller):
    path = "/audit"
    tags = ["audit"]
    dependencies = {"filters": Provide(_filters, sync_to_thread=False)}

    @get("/", operation_id="listAuditEntries", sync_to_thread=True)
    def list_entries(
        self,
        db: DB,
        user: Caller,
        filters: Filters,
        before_seq: Annotated[int | None, QueryParameter(gt=0, le=MAX_ID)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
    ) -> AuditPage:
        """Newest first, with the filters; `next_before_seq` pages back."""
        require_admin(user)
        rows = list_entries(db, filters, before_seq=before_seq, limit=limit + 1)
        items = rows[:limit]
        return AuditPage(items=items, next_before_seq=items[-1].seq if len(rows) > limit else None)

    @get("/export", operation_id="exportAuditLog", sync_to_thread=True, media_type="application/x-ndjson")
    def export(self, user: Caller, config: Settings, filters: Filters) -> Stream:
        """The entries (same filters) as JSON lines, oldest first, with their hashes: without a filter the file
        is the chain itself, which `appliance audit verify --file` checks offline."""
        require_admin(user)
        return Stream(
            export_lines(config, filters),
            media_type="application/x-ndjson",
            headers={
                "Content-Disposition": 'attachment; filename="audit.jsonl"',
                "Cache-Control": "no-store",
            },
        )

    @get("/verify", operation_id="verifyAuditLog", sync_to_thread=True)
    def verify_chain(self, db: DB, user: Caller) -> VerifyReport:
        """Every entry's hash and link recomputed: whether the chain holds and where it breaks."""
        require_admin(user)
        return verify(db)


__all__ = ["AuditController"]
