"""HTTP routes of the inspection events: the history (keyset pages, filters), one event, its snapshot, a live
stream (SSE), the shift counters and the shift report (JSON and CSV), and "send to dataset"."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody, QueryParameter
from litestar.response import ServerSentEvent

from appliance.camera.service import save_frame
from appliance.db import Database
from appliance.dependencies import DB, Caller, Id, OptionalId, Settings
from appliance.errors import NotFound
from appliance.ids import MAX_ID
from appliance.stations import events, report, revisions
from appliance.stations.contracts import EventRow
from appliance.stations.retention import snapshot_path
from appliance.stations.revisions import RevisionRead, RevisionSummary
from appliance.stations.schemas import (
    CaptureRequest,
    CaptureResult,
    CountersRead,
    EventReport,
    ReportBucket,
    ReportPeriods,
)
from appliance.storage import read_capped
from appliance.streams import Polled, last_event_id, polled_events, sse_response, stream_slots

MAX_SNAPSHOT_BYTES = 32 * 1024 * 1024
SSE_POLL_S = 0.25
SSE_BATCH = 200
Time = Annotated[float, QueryParameter(ge=0, le=1e11, description="unix time (seconds)")]
OptionalTime = Annotated[float | None, QueryParameter(ge=0, le=1e11, description="unix time (seconds)")]
CameraFilter = OptionalId
Bucket = Annotated[ReportBucket, QueryParameter(description="width of a report point")]


def _report_query(
    since: Time, until: OptionalTime = None, camera_id: CameraFilter = None, bucket: Bucket = "hour"
) -> report.ReportQuery:
    """The report's parameters, for the JSON and the CSV alike (until: default now)."""
    return report.ReportQuery(since, time.time() if until is None else until, camera_id, bucket)


class EventPage(msgspec.Struct, kw_only=True):
    items: list[EventRow]
    next_before_id: int | None  # pass as before_id for the next (older) page; null at the end
    next_before_ts: float | None = None  # and this as before_ts


def _newer(db: Database, camera_id: int | None, cursor: int) -> Polled:
    rows = events.list_events(db, camera_id=camera_id, after_id=cursor, limit=SSE_BATCH)
    return Polled([(row.id, msgspec.json.encode(row).decode()) for row in rows])


class EventsController(Controller):
    path = "/events"
    tags = ["events"]

    @get("/", operation_id="listEvents", sync_to_thread=True)
    def list_events(
        self,
        db: DB,
        user: Caller,
        camera_id: CameraFilter = None,
        verdict: Annotated[Literal["ok", "ng"] | None, QueryParameter()] = None,
        rule: Annotated[
            str | None, QueryParameter(min_length=1, max_length=64, description="a failing rule's name")
        ] = None,
        since: OptionalTime = None,
        until: OptionalTime = None,
        before_id: OptionalId = None,
        before_ts: OptionalTime = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
    ) -> EventPage:
        """Newest first (by time); filters by camera, verdict, failing rule and time (unix seconds, `since`
        included); the next page from `next_before_id` and `next_before_ts`."""
        rows = events.list_events(
            db,
            camera_id=camera_id,
            verdict=verdict,
            rule=rule,
            since=since,
            until=until,
            before_id=before_id,
            before_ts=before_ts,
            limit=limit + 1,
        )
        more = len(rows) > limit
        items = rows[:limit]
        last = items[-1] if more and items else None
        return EventPage(
            items=items,
            next_before_id=last.id if last else None,
            next_before_ts=last.ts if last else None,
        )

    @get("/counters", operation_id="getEventCounters", sync_to_thread=True)
    def counters(
        self,
        db: DB,
        user: Caller,
        since: Time,
        until: OptionalTime = None,
        camera_id: CameraFilter = None,
    ) -> CountersRead:
        """OK / NG totals per camera from a unix time (a shift's start) to `until` (default: no end), from
        the counts per minute and hour: the same cost whatever the number of events."""
        return report.counters_read(db, since, until, camera_id)

    @get(
        "/report",
        operation_id="getEventReport",
        sync_to_thread=True,
        dependencies={"asked": Provide(_report_query, sync_to_thread=False)},
    )
    def get_report(self, db: DB, user: Caller, asked: NamedDependency[report.ReportQuery]) -> EventReport:
        """The shift report: OK/NG per bucket, NG rate, top failing rules, for all cameras (or one) and per
        camera, over [since, until) (default until: now); at most 1000 buckets."""
        return report.build_report(db, asked)

    @get(
        "/report/csv",
        operation_id="getEventReportCsv",
        sync_to_thread=True,
        media_type="text/csv",
        dependencies={"asked": Provide(_report_query, sync_to_thread=False)},
    )
    def get_report_csv(
        self, db: DB, user: Caller, asked: NamedDependency[report.ReportQuery]
    ) -> Response[str]:
        """The shift report as CSV: one row per bucket and camera, NG per failing rule in columns."""
        stamp = time.strftime("%Y%m%d-%H%M", time.localtime(asked.since))
        return Response(
            report.report_csv(db, asked),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="events-report-{stamp}.csv"',
                "Cache-Control": "no-store",
            },
        )

    @get("/periods", operation_id="getEventReportPeriods", sync_to_thread=False)
    def get_periods(self, user: Caller, config: Settings) -> ReportPeriods:
        """This shift, the previous one, today, yesterday and the last 7 days as unix times, from the
        configured `shift_starts` in the box's time zone."""
        return report.periods(config.shift_starts, time.time())

    @get("/stream", operation_id="streamEvents", sync_to_thread=True, media_type="text/event-stream")
    def stream(
        self,
        request: Request[Any, Any, Any],
        user: Caller,
        config: Settings,
        after_id: Annotated[
            int | None,
            QueryParameter(ge=0, le=MAX_ID, description="events after this id (default: new ones)"),
        ] = None,
        camera_id: OptionalId = None,
    ) -> ServerSentEvent:
        """Server-sent events, one per stored inspection event (`id:` = event id; reconnects resume)."""
        header = request.headers.get("last-event-id")
        cursor = (
            last_event_id(request, after_id or 0)
            if header or after_id is not None
            else events.latest_event_id
        )
        slots = stream_slots(request.app.state)
        stream = polled_events(
            config.db_path,
            cursor,
            lambda db, at: _newer(db, camera_id, at),
            batch=SSE_BATCH,
            poll_s=SSE_POLL_S,
        )
        return sse_response(slots.hold_while(slots.take(user.id), stream))

    @get("/{event_id:int}", operation_id="getEvent", sync_to_thread=True)
    def get_event(self, event_id: Id, db: DB, user: Caller) -> EventRow:
        return events.get_event(db, event_id)

    @get(
        "/{event_id:int}/snapshot",
        operation_id="getEventSnapshot",
        sync_to_thread=True,
        media_type="image/jpeg",
    )
    def snapshot(self, event_id: Id, db: DB, user: Caller, config: Settings) -> Response[bytes]:
        return Response(
            _snapshot_bytes(events.get_event(db, event_id), config.data_path),
            media_type="image/jpeg",
            headers={"Cache-Control": "private, max-age=86400"},
        )

    @post("/{event_id:int}/dataset", operation_id="sendEventToDataset", sync_to_thread=True, status_code=201)
    def to_dataset(
        self,
        event_id: Id,
        data: JSONBody[CaptureRequest],
        db: DB,
        user: Caller,
        config: Settings,
        state: State,
    ) -> CaptureResult:
        """The event's frame into a dataset, with the model's boxes as pre-labels to review."""
        event = events.get_event(db, event_id)
        jpeg = _snapshot_bytes(event, config.data_path)
        name = f"event{event.id}-camera{event.camera_id}-{event.verdict}.jpg"
        return save_frame(
            db, state.image_store, config, data.dataset_id, user, jpeg, list(event.detections), name
        )


def _snapshot_bytes(event: EventRow, data_path: Path) -> bytes:
    if not event.snapshot:
        raise NotFound(f"event {event.id} has no snapshot (snapshots off, or the disk was full)")
    try:
        data = read_capped(snapshot_path(data_path, event.snapshot), MAX_SNAPSHOT_BYTES)
    except (OSError, ValueError):
        raise NotFound(f"the snapshot of event {event.id} is gone") from None
    return data


class RevisionsController(Controller):
    """The camera settings that judged events: kept while an event names them (stations/revisions.py)."""

    path = "/cameras/{camera_id:int}/revisions"
    tags = ["cameras"]

    @get("/", operation_id="listCameraRevisions", sync_to_thread=True)
    def list_revisions(
        self,
        camera_id: Id,
        db: DB,
        user: Caller,
        before_id: OptionalId = None,
        limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
    ) -> list[RevisionSummary]:
        """Newest first: the camera's current settings and the earlier ones events still name."""
        return revisions.list_revisions(db, camera_id, before_id=before_id, limit=limit)

    @get("/{revision_id:int}", operation_id="getCameraRevision", sync_to_thread=True)
    def get_revision(self, camera_id: Id, revision_id: Id, db: DB, user: Caller) -> RevisionRead:
        """The settings (zones, rules, thresholds, mode, camera settings) an event's `settings_revision` names."""
        return revisions.get_revision(db, camera_id, revision_id)


__all__ = ["EventsController", "RevisionsController"]
