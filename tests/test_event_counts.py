"""Counts per camera per minute and hour: any range's totals equal a recount of the rows whenever both exist,
and stay what they were after the retention removed the rows (hypothesis over random events, ranges and
retention); the planner of a range's pieces; the counts of an existing catalog filled by the migration."""

from __future__ import annotations

import math
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from appliance.db import Database, migrate, open_database
from appliance.db.registry import migrations
from appliance.stations import counts, events, retention
from appliance.stations.contracts import InspectionEvent

BASE = 1_700_000_000.0 - 1_700_000_000.0 % 3600 + 1800  # half past some hour
WINDOW = 4 * 3600.0
RULES = ["screws", "label", "gasket"]

# --- the planner (pure) -------------------------------------------------------------------------------


def available(piece: counts.Piece, cov: counts.Coverage) -> bool:
    if piece.source == "rows":
        return piece.start > cov.rows_after
    span = counts.SPANS[piece.source]
    kept = cov.minutes_from if piece.source == "minute" else cov.hours_from
    return piece.start % span == 0 and piece.end % span == 0 and piece.start >= kept


times = st.floats(min_value=BASE - 3600, max_value=BASE + WINDOW, allow_nan=False)
aligned = st.integers(-2, 8).map(lambda k: BASE - 1800 + k * 3600.0) | st.integers(-60, 300).map(
    lambda k: BASE + k * 60.0
)
edge = times | aligned | aligned.map(lambda t: math.nextafter(t, -math.inf))
marks = st.none() | aligned


@settings(max_examples=2000, deadline=None)
@given(since=edge, length=st.floats(0, WINDOW) | st.none(), rows=st.none() | edge, minutes=marks, hours=marks)
def test_a_range_is_planned_from_complete_sources_only(
    since: float, length: float | None, rows: float | None, minutes: float | None, hours: float | None
) -> None:
    minutes_from = minutes if minutes is not None and minutes % 3600 == 0 else None
    hours_from = hours if hours is not None and hours % 3600 == 0 else None
    if minutes_from is not None and hours_from is not None and hours_from > minutes_from:
        minutes_from, hours_from = hours_from, minutes_from
    cov = counts.Coverage(
        rows_after=-math.inf if rows is None else rows,
        minutes_from=-math.inf if minutes_from is None else minutes_from,
        hours_from=-math.inf if hours_from is None else hours_from,
    )
    until = None if length is None else since + length
    plan = counts.plan_range(since, until, cov)
    end = counts.END_OF_TIME if until is None else until
    if end <= since:
        assert plan.empty
        return
    if plan.empty:
        # Nothing kept reaches the range: it ends before the oldest kept hour.
        assert not (cov.rows_after < since) and end <= max(cov.hours_from, since) + 3600
        return
    # The pieces tile the counted range, each from a source that holds all of its part.
    assert plan.pieces[0].start == plan.since and plan.pieces[-1].end == plan.until
    for before, after in zip(plan.pieces, plan.pieces[1:], strict=False):
        assert before.end == after.start
    assert all(p.start < p.end and available(p, cov) for p in plan.pieces)
    # Exact whenever the rows are all there, or the ends are on kept minute edges; otherwise widened to a
    # whole minute or hour (or started at the oldest kept hour).
    if cov.rows_after < since or (since % 60 == 0 and end % 60 == 0 and since >= cov.minutes_from):
        assert (plan.since, plan.until) == (since, end)
    assert plan.since <= since or plan.since == cov.hours_from
    assert plan.until >= end and plan.until - end < 3600
    assert plan.since in (since, counts.bucket_of(since, 60), counts.bucket_of(since, 3600), cov.hours_from)


def test_bucket_of_is_an_exact_floor_next_to_an_edge() -> None:
    edge = 1_700_000_040.0
    assert counts.bucket_of(math.nextafter(edge, 0), 60) == edge - 60
    assert counts.bucket_of(edge, 60) == edge
    assert counts.bucket_of(-0.5, 60) == -60


# --- against the catalog --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def template() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="counts-template-"))
    path = folder / "template.db"
    db = open_database(path)
    migrate(db, path)
    db.conn.close()
    yield path
    shutil.rmtree(folder, ignore_errors=True)


def fresh_copy(template: Path) -> tuple[Database, Path]:
    folder = Path(tempfile.mkdtemp(prefix="counts-"))
    shutil.copy(template, folder / "appliance.db")
    return open_database(folder / "appliance.db"), folder


event_times = (
    st.floats(min_value=BASE, max_value=BASE + WINDOW, allow_nan=False)
    | st.integers(0, int(WINDOW // 60)).map(lambda k: BASE + k * 60.0)
    | st.integers(1, int(WINDOW // 60)).map(lambda k: math.nextafter(BASE + k * 60.0, 0))
)
an_event = st.tuples(
    st.integers(1, 3), event_times, st.lists(st.sampled_from(RULES), max_size=3)
)  # no failing rule: OK
step = st.one_of(
    st.tuples(st.just("write"), st.lists(an_event, min_size=1, max_size=40)),
    st.tuples(st.just("keep"), st.integers(0, 60)),  # retention by count: keep the newest n
    st.tuples(st.just("age"), st.floats(0, WINDOW)),  # retention by age: drop ts < BASE + x
    st.tuples(st.just("buckets"), st.floats(0, WINDOW), st.floats(0, WINDOW)),  # the counts' own retention
)
ranges = st.lists(
    st.tuples(edge | event_times, st.floats(0, WINDOW) | st.none(), st.none() | st.integers(1, 3)),
    min_size=1,
    max_size=8,
)


def model_counts(
    written: list[tuple[int, float, list[str]]], since: float, until: float, camera: int | None
) -> tuple[dict[int, tuple[int, int]], dict[tuple[int, str], int]]:
    tallies: dict[int, list[int]] = {}
    rules: Counter[tuple[int, str]] = Counter()
    for cam, ts, failing in written:
        if since <= ts < until and camera in (None, cam):
            tallies.setdefault(cam, [0, 0])[bool(failing)] += 1
            for rule in set(failing):
                rules[(cam, rule)] += 1
    return {c: (ok, ng) for c, (ok, ng) in tallies.items()}, dict(rules)


def recount(db: Database, since: float, until: float, camera: int | None) -> dict[int, tuple[int, int]]:
    sql = "SELECT camera_id, SUM(verdict = 'ok'), SUM(verdict = 'ng') FROM inspection_events WHERE ts >= ? AND ts < ?"
    args: list[object] = [since, until]
    if camera is not None:
        sql += " AND camera_id = ?"
        args.append(camera)
    return {c: (ok, ng) for c, ok, ng in db.execute(sql + " GROUP BY camera_id", args)}


def found(result: counts.IntervalCounts) -> tuple[dict[int, tuple[int, int]], dict[tuple[int, str], int]]:
    tallies = {c: (t.ok, t.ng) for c, t in result.cameras.items() if t.ok or t.ng}
    return tallies, {k: n for k, n in result.rules.items() if n}


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(
    first=st.lists(an_event, min_size=1, max_size=60),
    steps=st.lists(step, min_size=1, max_size=8),
    queries=ranges,
)
def test_counts_equal_a_recount_of_the_rows_and_outlive_them(
    template: Path,
    first: list[tuple[int, float, list[str]]],
    steps: list[tuple],
    queries: list[tuple[float, float | None, int | None]],
) -> None:
    steps = [("write", first), *steps]
    db, folder = fresh_copy(template)
    written: list[tuple[int, float, list[str]]] = []
    try:
        for action, *args in steps:
            if action == "write":
                batch = [
                    InspectionEvent(
                        camera_id=cam,
                        ts=ts,
                        mode="interval",
                        verdict="ng" if failing else "ok",
                        failing_rules=list(dict.fromkeys(failing)),
                    )
                    for cam, ts, failing in args[0]
                ]
                events.record_events(db, batch)
                written += [(e.camera_id, e.ts, e.failing_rules) for e in batch]
            elif action == "keep":
                limits = retention.Limits(max_bytes=10**12, max_count=args[0], max_age_s=1e12)
                retention.enforce(db, folder, limits, batch=retention.BatchSize(start=7, low=7, high=7))
            elif action == "age":
                limits = retention.Limits(max_bytes=10**12, max_count=10**9, max_age_s=1.0)
                retention.enforce(db, folder, limits, now=BASE + args[0] + 1.0)
            else:
                minute_age, hour_age = sorted(args)
                now = BASE + WINDOW
                counts.prune_buckets(db, now, minute_age / 86_400, hour_age / 86_400, batch=16)
        stored, _bytes = retention.totals(db)
        assert stored == db.execute("SELECT COUNT(*) FROM inspection_events").fetchone()[0]
        cov = counts.coverage(db)
        event(f"rows removed: {cov.rows_after > -math.inf}, buckets removed: {cov.hours_from > -math.inf}")
        for since, length, camera in queries:
            until = None if length is None else since + length
            result = counts.range_counts(db, since, until, camera, rules=True)
            end = counts.END_OF_TIME if until is None else until
            assert result.exact == ((result.counted_since, result.counted_until) == (since, end))
            event(f"exact: {result.exact}")
            # What was counted is what was written in the range counted, rows removed or not.
            expected = model_counts(written, result.counted_since, result.counted_until, camera)
            assert found(result) == expected, (since, until, camera, cov, result)
            if cov.rows_after < since:
                # Every row of the range is there: exact, and the same as counting them.
                assert result.exact
                assert found(result)[0] == recount(db, since, end, camera)
            if until is not None:
                # A report's buckets: consecutive counted ranges that never overlap, each what was written there.
                edges = [since, since + length / 3, since + 2 * length / 3, until]
                intervals = counts.count_intervals(db, edges, camera, rules=True)
                for before, after in zip(intervals, intervals[1:], strict=False):
                    assert after.counted_since >= before.counted_until, (edges, cov, intervals)
                for interval in intervals:
                    expected = model_counts(written, interval.counted_since, interval.counted_until, camera)
                    assert found(interval) == expected, (edges, cov, interval)
    finally:
        db.conn.close()
        shutil.rmtree(folder, ignore_errors=True)


def test_rule_rows_and_totals_follow_the_events(fresh_db: Database, tmp_path: Path) -> None:
    batch = [
        InspectionEvent(
            camera_id=1, ts=BASE + i, mode="interval", verdict="ng", failing_rules=["a", "a", "b"]
        )
        for i in range(10)
    ]
    ids = events.record_events(fresh_db, batch)
    assert fresh_db.execute("SELECT COUNT(*) FROM inspection_event_rules").fetchone()[0] == 20
    got = counts.range_counts(fresh_db, BASE, None, rules=True)
    assert got.rules == {(1, "a"): 10, (1, "b"): 10} and got.cameras[1].ng == 10
    retention.enforce(fresh_db, tmp_path, retention.Limits(10**9, 4, 1e12))
    left = {r[0] for r in fresh_db.execute("SELECT DISTINCT event_id FROM inspection_event_rules")}
    assert left == set(ids[6:]) and retention.totals(fresh_db) == (4, 0)
    assert counts.coverage(fresh_db).rows_after == BASE + 5
    again = counts.range_counts(fresh_db, BASE, None, rules=True)
    assert again.rules == got.rules and again.cameras[1].ng == 10  # the history stays


def test_the_migration_fills_the_counts_of_an_existing_catalog(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = open_database(path)
    names = [m.name for m in migrations._migrations]  # noqa: SLF001
    first = names.index("m055_event_counts")
    for migration in migrations._migrations[:first]:  # noqa: SLF001
        migration.fn(db)
    rows = []
    for i in range(500):
        ts = BASE + i * 37.3
        failing = '["screws", "label"]' if i % 7 == 0 else "[]"
        rows.append((1 + i % 3, ts, "ng" if i % 7 == 0 else "ok", failing, 10 if i % 5 == 0 else 0))
    db.conn.executemany(
        "INSERT INTO inspection_events (camera_id, ts, mode, verdict, failing_rules, snapshot_bytes) "
        "VALUES (?, ?, 'interval', ?, ?, ?)",
        rows,
    )
    for migration in migrations._migrations[first:]:  # noqa: SLF001
        migration.fn(db)
    assert retention.totals(db) == (500, 100 * 10)
    for since, until in ((BASE, None), (BASE + 100.5, BASE + 9000.25), (BASE + 3000, BASE + 3001)):
        result = counts.range_counts(db, since, until, rules=True)
        end = counts.END_OF_TIME if until is None else until
        assert result.exact and found(result)[0] == recount(db, since, end, None)
        assert sum(n for (_c, rule), n in result.rules.items() if rule == "label") == sum(
            1 for cam, ts, verdict, _f, _b in rows if verdict == "ng" and since <= ts < end
        )
    assert db.execute("SELECT COUNT(*) FROM inspection_event_rules").fetchone()[0] == 2 * 72
    db.conn.close()
