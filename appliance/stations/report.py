"""The counters and the shift report: OK/NG per bucket, the NG rate, the top failing rules, per camera and
for all, over any range, and as CSV; and the periods a line engineer asks for (this shift, the previous one,
today, yesterday, the last 7 days) from the configured shift starts, in the box's time zone.

Everything here is read from the counts per minute and hour (`stations.counts`), never by counting rows.
"""

from __future__ import annotations

import csv
import datetime
import io
import math
from collections import defaultdict
from dataclasses import dataclass

from appliance.db import Database
from appliance.errors import Invalid
from appliance.stations import counts
from appliance.stations.schemas import (
    CameraCounters,
    CameraReport,
    CountersRead,
    EventReport,
    ReportBucket,
    ReportPeriod,
    ReportPeriods,
    ReportPoint,
    RuleCount,
)

BUCKET_S: dict[str, int] = {"minute": 60, "hour": 3600, "day": 86_400}
MAX_POINTS = 1000
TOP_RULES = 10
CSV_RULE_COLUMNS = 50


def camera_names(db: Database) -> dict[int, str]:
    return {row[0]: row[1] for row in db.execute("SELECT id, name FROM cameras ORDER BY id")}


def _camera_ids(names: dict[int, str], found: set[int], camera_id: int | None) -> list[int]:
    """The camera asked for, or every camera, then cameras deleted since whose counts are in the range."""
    if camera_id is not None:
        return [camera_id]
    return [*names, *sorted(found - set(names))]


def counters_read(db: Database, since: float, until: float | None, camera_id: int | None) -> CountersRead:
    found = counts.range_counts(db, since, until, camera_id)
    ids = _camera_ids(camera_names(db), set(found.cameras), camera_id)
    rows = []
    for camera in ids:
        tally = found.cameras.get(camera, counts.Tally())
        rows.append(CameraCounters(camera_id=camera, ok=tally.ok, ng=tally.ng))
    no_end = until is None and found.counted_until == counts.END_OF_TIME
    return CountersRead(
        since=since,
        until=until,
        cameras=rows,
        counted_since=found.counted_since,
        counted_until=None if no_end else found.counted_until,
        exact=found.exact,
    )


def _rate(ok: int, ng: int) -> float | None:
    return round(ng / (ok + ng), 6) if ok + ng else None


def _top(rules: dict[str, int], limit: int = TOP_RULES) -> list[RuleCount]:
    ordered = sorted(rules.items(), key=lambda item: (-item[1], item[0]))
    return [RuleCount(rule=rule, ng=ng) for rule, ng in ordered[:limit]]


def report_edges(since: float, until: float, bucket: ReportBucket) -> list[float]:
    """Bucket edges from `since` (the last bucket may be shorter), at most MAX_POINTS buckets. Days are
    calendar days of the box's time zone (23 or 25 hours across a DST change), minutes and hours fixed."""
    if until <= since:  # each allowed alone by the document, not together: a 422
        raise Invalid("until must be after since")
    step = BUCKET_S[bucket]
    points = math.ceil((until - since) / step)
    if points > MAX_POINTS:
        raise Invalid(
            f"{points} {bucket}s from since to until: at most {MAX_POINTS} per report (choose a larger bucket)"
        )
    if bucket == "day":
        start = datetime.datetime.fromtimestamp(since)  # local wall clock
        edges = [(start + datetime.timedelta(days=i)).timestamp() for i in range(points + 1)]
        edges = [edge for edge in edges if edge < until]
    else:
        edges = [since + i * step for i in range(points)]
    return [*edges, until]


@dataclass(frozen=True)
class ReportQuery:
    since: float
    until: float
    camera_id: int | None
    bucket: ReportBucket


def build_report(db: Database, query: ReportQuery) -> EventReport:
    return _build(db, query)[0]


FOLDED = 0  # the row of the deleted cameras past MAX_REPORT_CAMERAS (camera ids start at 1)
MAX_REPORT_CAMERAS = 32  # rows per report: the box's cameras (16 at most), then deleted ones, the rest folded


def _rows(ids: list[int], names: dict[int, str]) -> tuple[list[int], dict[int, int]]:
    """The report's camera rows and each camera's row: past MAX_REPORT_CAMERAS, the deleted cameras share one
    row (FOLDED), so a box that went through thousands of cameras answers a report as large as any other,
    with every count still in it."""
    if len(ids) <= MAX_REPORT_CAMERAS:
        return ids, {camera: camera for camera in ids}
    kept = ids[: MAX_REPORT_CAMERAS - 1]
    return [*kept, FOLDED], {camera: (camera if camera in set(kept) else FOLDED) for camera in ids}


def _build(db: Database, query: ReportQuery) -> tuple[EventReport, list[dict[tuple[int, str], int]]]:
    """The report and, per bucket, NG by (row, rule)."""
    since, until, camera_id, bucket = query.since, query.until, query.camera_id, query.bucket
    edges = report_edges(since, until, bucket)
    intervals = counts.count_intervals(db, edges, camera_id, rules=True)
    names = camera_names(db)
    present = {camera for interval in intervals for camera in interval.cameras}
    rows, row_of = _rows(_camera_ids(names, present, camera_id), names)
    folded = sum(1 for row in row_of.values() if row == FOLDED)
    points = {row: [ReportPoint(start=i.since, ok=0, ng=0) for i in intervals] for row in rows}
    row_rules: list[dict[tuple[int, str], int]] = []
    for index, interval in enumerate(intervals):
        for camera, tally in interval.cameras.items():
            if camera in row_of:
                point = points[row_of[camera]][index]
                point.ok += tally.ok
                point.ng += tally.ng
        by_row: dict[tuple[int, str], int] = defaultdict(int)
        for (rule_camera, rule), ng in interval.rules.items():
            if rule_camera in row_of:
                by_row[(row_of[rule_camera], rule)] += ng
        row_rules.append(by_row)
    all_points = [ReportPoint(start=interval.since, ok=0, ng=0) for interval in intervals]
    all_rules: dict[str, int] = defaultdict(int)
    cameras = []
    for row in rows:
        rules: dict[str, int] = defaultdict(int)
        for index, point in enumerate(points[row]):
            all_points[index].ok += point.ok
            all_points[index].ng += point.ng
        for by_row in row_rules:
            for (rule_row, rule), ng in by_row.items():
                if rule_row == row:
                    rules[rule] += ng
                    all_rules[rule] += ng
        ok, ng = sum(p.ok for p in points[row]), sum(p.ng for p in points[row])
        cameras.append(
            CameraReport(
                camera_id=row,
                name=f"{folded} more deleted cameras" if row == FOLDED else names.get(row),
                ok=ok,
                ng=ng,
                ng_rate=_rate(ok, ng),
                points=points[row],
                top_rules=_top(rules),
            )
        )
    ok, ng = sum(p.ok for p in all_points), sum(p.ng for p in all_points)
    report = EventReport(
        since=since,
        until=until,
        bucket=bucket,
        bucket_s=BUCKET_S[bucket],
        counted_since=min(interval.counted_since for interval in intervals),
        counted_until=max(interval.counted_until for interval in intervals),
        exact=all(interval.exact for interval in intervals),
        ok=ok,
        ng=ng,
        ng_rate=_rate(ok, ng),
        points=all_points,
        top_rules=_top(all_rules),
        cameras=cameras,
    )
    return report, row_rules


def _cell(value: object) -> object:
    """A name as a spreadsheet reads it: never a formula (names are typed by users)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _local(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def report_csv(db: Database, query: ReportQuery) -> str:
    """One row per bucket and camera: start, end (local time with its offset), camera, OK, NG, NG rate in
    percent, then NG per failing rule (the most frequent rules of the range, one column each)."""
    report, row_rules = _build(db, query)
    edges = [p.start for p in report.points] + [report.until]
    rule_totals: dict[str, int] = defaultdict(int)
    for by_row in row_rules:
        for (_row, rule), ng in by_row.items():
            rule_totals[rule] += ng
    rules = [r.rule for r in _top(rule_totals, CSV_RULE_COLUMNS)]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(
        [
            "start",
            "end",
            "camera_id",
            "camera",
            "ok",
            "ng",
            "ng_rate_percent",
            *(_cell(f"NG {r}") for r in rules),
        ]
    )
    for camera in report.cameras:
        for index, point in enumerate(camera.points):
            rate = _rate(point.ok, point.ng)
            per_rule = row_rules[index]
            writer.writerow(
                [
                    _local(point.start),
                    _local(edges[index + 1]),
                    camera.camera_id,
                    _cell(camera.name or f"camera {camera.camera_id} (deleted)"),
                    point.ok,
                    point.ng,
                    "" if rate is None else round(rate * 100, 3),
                    *(per_rule.get((camera.camera_id, rule), 0) for rule in rules),
                ]
            )
    return out.getvalue()


# --- periods --------------------------------------------------------------------------------------


def _at(day: datetime.date, hhmm: str) -> float:
    """A local wall-clock time of a day as a unix time (the box's time zone, DST included)."""
    hour, minute = (int(part) for part in hhmm.split(":"))
    return datetime.datetime.combine(day, datetime.time(hour, minute)).timestamp()


def periods(shift_starts: list[str], now: float) -> ReportPeriods:
    local = datetime.datetime.fromtimestamp(now).astimezone()
    today = local.date()
    day = datetime.timedelta(days=1)
    midnight = _at(today, "00:00")
    found: list[ReportPeriod] = []
    starts = sorted({_at(today + k * day, s) for k in (-2, -1, 0, 1) for s in shift_starts})
    current = max((i for i, start in enumerate(starts) if start <= now), default=None)
    if current is not None and current >= 1:

        def shift(key: str, label: str, i: int) -> ReportPeriod:
            since, until = starts[i], starts[i + 1]
            span = f"{_clock(since)}–{_clock(until)}"
            return ReportPeriod(key=key, label=f"{label} ({span})", since=since, until=until, bucket="hour")

        found += [
            shift("shift", "This shift", current),
            shift("previous-shift", "Previous shift", current - 1),
        ]
    found += [
        ReportPeriod(
            key="today", label="Today", since=midnight, until=_at(today + day, "00:00"), bucket="hour"
        ),
        ReportPeriod(
            key="yesterday", label="Yesterday", since=_at(today - day, "00:00"), until=midnight, bucket="hour"
        ),
        ReportPeriod(
            key="week",
            label="Last 7 days",
            since=_at(today - 6 * day, "00:00"),
            until=_at(today + day, "00:00"),
            bucket="day",
        ),
    ]
    return ReportPeriods(timezone=local.tzname() or "local", shift_starts=list(shift_starts), periods=found)


def _clock(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts).strftime("%H:%M")
