"""OK/NG counts per camera per minute and per hour, and the totals of any time range without counting rows.

`count_written` runs inside the transaction that writes the events (`events.record_events`): it adds them
to their minute and hour buckets (OK, NG, and NG per failing rule), files their failing rules as rows of
`inspection_event_rules` (the event list's "rule" filter) and adds them to the running totals the retention
reads. The event retention never touches the buckets (`forget_events` only moves the totals and the
watermark below which rows are incomplete); the buckets have their own retention (`prune_buckets`).

A range [since, until) is answered from the coarsest source that is complete for each part of it: whole
hours from the hour buckets, whole minutes from the minute buckets, and only the partial minutes at its two
ends from the rows themselves (at most two minutes of events). Where the rows of an end are gone (retention),
that end is widened to its whole minute, or hour when those minute buckets are gone too, and the answer says
so (`exact` false and the range it counted); before the oldest kept hour there is nothing left to count.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from appliance.db import Database, write_transaction
from appliance.stations.contracts import EventRow

MINUTE = 60
HOUR = 3600
# "No end": past any event (the API takes times up to 1e11), and a whole hour so that it needs no edge.
END_OF_TIME = 10**11 // HOUR * HOUR + HOUR
SPANS = {"minute": MINUTE, "hour": HOUR}
_PIECES_PER_QUERY = 300  # 3 parameters each, far below SQLite's limit


def bucket_of(ts: float, span: int) -> int:
    """The start of the bucket holding `ts`: an exact floor, also next to a bucket's edge (never ts // span,
    whose rounding can put a time just before an edge into the next bucket)."""
    return math.floor(ts) // span * span


def _ceil(ts: float, span: int) -> int:
    start = bucket_of(ts, span)
    return start if start == ts else start + span


# --- writing ----------------------------------------------------------------------------------------


def count_written(db: Database, rows: Sequence[EventRow]) -> None:
    """Add freshly written events to their buckets, rule rows and totals (inside their transaction)."""
    minute: dict[tuple[int, int], list[int]] = defaultdict(lambda: [0, 0])
    rules: dict[tuple[int, int, str], int] = defaultdict(int)
    rule_rows: list[tuple[int, str, int, float]] = []
    snapshot_bytes = 0
    for row in rows:
        bucket = bucket_of(row.ts, MINUTE)
        minute[(bucket, row.camera_id)][row.verdict == "ng"] += 1
        snapshot_bytes += row.snapshot_bytes
        for rule in dict.fromkeys(row.failing_rules):  # a name once per event, in order
            rules[(bucket, row.camera_id, rule)] += 1
            rule_rows.append((row.id, rule, row.camera_id, row.ts))
    hour: dict[tuple[int, int], list[int]] = defaultdict(lambda: [0, 0])
    for (bucket, camera_id), (ok, ng) in minute.items():
        tally = hour[(bucket_of(bucket, HOUR), camera_id)]
        tally[0] += ok
        tally[1] += ng
    hour_rules: dict[tuple[int, int, str], int] = defaultdict(int)
    for (bucket, camera_id, rule), ng in rules.items():
        hour_rules[(bucket_of(bucket, HOUR), camera_id, rule)] += ng
    for span, tallies, per_rule in (("minute", minute, rules), ("hour", hour, hour_rules)):
        db.conn.executemany(
            f"INSERT INTO event_counts_{span} (bucket, camera_id, ok, ng) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (bucket, camera_id) DO UPDATE SET ok = ok + excluded.ok, ng = ng + excluded.ng",
            [(bucket, camera_id, ok, ng) for (bucket, camera_id), (ok, ng) in tallies.items()],
        )
        db.conn.executemany(
            f"INSERT INTO event_rule_counts_{span} (bucket, camera_id, rule, ng) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (bucket, camera_id, rule) DO UPDATE SET ng = ng + excluded.ng",
            [(*key, ng) for key, ng in per_rule.items()],
        )
    db.conn.executemany(
        "INSERT OR IGNORE INTO inspection_event_rules (event_id, rule, camera_id, ts) VALUES (?, ?, ?, ?)",
        rule_rows,
    )
    db.execute(
        "UPDATE event_history SET events = events + ?, snapshot_bytes = snapshot_bytes + ? WHERE id = 1",
        [len(rows), snapshot_bytes],
    )


def forget_events(db: Database, removed: Sequence[tuple[int, float, int]]) -> None:
    """Inside the retention's transaction that deleted these events (id, ts, snapshot_bytes): their rule
    rows go, the totals shrink, and the rows are incomplete from now on up to the newest time removed.
    The buckets keep counting them."""
    if not removed:
        return
    ids = [event_id for event_id, _ts, _size in removed]
    for start in range(0, len(ids), 900):
        chunk = ids[start : start + 900]
        db.execute(
            f"DELETE FROM inspection_event_rules WHERE event_id IN ({', '.join('?' for _ in chunk)})", chunk
        )
    newest = max(ts for _id, ts, _size in removed)
    db.execute(
        "UPDATE event_history SET events = events - ?, snapshot_bytes = snapshot_bytes - ?, "
        "rows_after = max(COALESCE(rows_after, ?), ?) WHERE id = 1",
        [len(removed), sum(size for _id, _ts, size in removed), newest, newest],
    )


def stored_totals(db: Database) -> tuple[int, int]:
    """(events, snapshot bytes) still stored, kept by the writer and the retention: no count of rows."""
    events, size = db.execute("SELECT events, snapshot_bytes FROM event_history WHERE id = 1").fetchone()
    return int(events), int(size)


MAX_CAMERAS = 16  # per bucket (stations.cameras allows no more)


def prune_buckets(
    db: Database,
    now: float,
    minute_days: float,
    hour_days: float,
    batch: int = 2000,
    pause: Callable[[], bool] | None = None,
) -> int:
    """Remove buckets past their own retention, oldest first, about `batch` rows per transaction; returns
    how many went. Each level's watermark (hour-aligned) moves in the transaction of its first delete, so a
    range read meanwhile never sums a level that is being emptied."""
    removed = 0
    for span, days in (("minute", minute_days), ("hour", hour_days)):
        cutoff = bucket_of(now - days * 86_400, HOUR)
        column = f"{span}s_from"
        step = SPANS[span] * max(1, batch // MAX_CAMERAS)  # whole buckets at a time
        tables = (f"event_counts_{span}", f"event_rule_counts_{span}")
        while True:
            done = 0
            if not _older_than(db, column, tables, cutoff):
                break  # nothing to do: no write lock taken
            if removed and pause is not None and not pause():
                return removed
            with write_transaction(db):
                db.execute(
                    f"UPDATE event_history SET {column} = max(COALESCE({column}, ?), ?) WHERE id = 1",
                    [cutoff, cutoff],
                )
                for table in tables:
                    oldest = db.execute(f"SELECT MIN(bucket) FROM {table}").fetchone()[0]
                    if oldest is not None and oldest < cutoff:
                        bound = min(cutoff, oldest + step)
                        done += db.execute(f"DELETE FROM {table} WHERE bucket < ?", [bound]).rowcount
            removed += done
            if not done:
                break
    return removed


def _older_than(db: Database, column: str, tables: tuple[str, ...], cutoff: int) -> bool:
    """Whether the watermark is behind `cutoff` or a table still holds a bucket before it."""
    mark = db.execute(f"SELECT {column} FROM event_history WHERE id = 1").fetchone()[0]
    if mark is None or mark < cutoff:
        return True
    return any(
        db.execute(f"SELECT 1 FROM {table} WHERE bucket < ? LIMIT 1", [cutoff]).fetchone() for table in tables
    )


# --- coverage: how far back each source is complete -------------------------------------------------


@dataclass(frozen=True)
class Coverage:
    rows_after: float = -math.inf  # every event later than this is still a row
    minutes_from: float = -math.inf  # minute buckets are kept from here on (hour-aligned)
    hours_from: float = -math.inf


def coverage(db: Database) -> Coverage:
    rows_after, minutes_from, hours_from = db.execute(
        "SELECT rows_after, minutes_from, hours_from FROM event_history WHERE id = 1"
    ).fetchone()
    return Coverage(
        rows_after=-math.inf if rows_after is None else rows_after,
        minutes_from=-math.inf if minutes_from is None else minutes_from,
        hours_from=-math.inf if hours_from is None else hours_from,
    )


# --- planning a range ---------------------------------------------------------------------------------

Source = Literal["rows", "minute", "hour"]


@dataclass(frozen=True)
class Piece:
    source: Source
    start: float
    end: float


@dataclass(frozen=True)
class Plan:
    pieces: list[Piece]
    since: float  # the range counted: the asked one, or wider where the rows of an end are gone
    until: float

    @property
    def empty(self) -> bool:
        return self.since >= self.until


def _walk(since: float, until: float, cov: Coverage) -> list[Piece] | None:
    """[since, until) as pieces of the coarsest complete source, or None when some part has none."""
    pieces: list[Piece] = []

    def add(source: Source, start: float, end: float) -> None:
        if pieces and pieces[-1].source == source and pieces[-1].end == start:
            pieces[-1] = Piece(source, pieces[-1].start, end)
        else:
            pieces.append(Piece(source, start, end))

    x = since
    end: float
    while x < until:
        hour_end = bucket_of(x, HOUR) + HOUR
        if x == hour_end - HOUR and hour_end <= until and x >= cov.hours_from:
            end = bucket_of(until, HOUR)  # every later hour is kept too
            add("hour", x, end)
            x = end
            continue
        minute_end = bucket_of(x, MINUTE) + MINUTE
        if x == minute_end - MINUTE and minute_end <= until and x >= cov.minutes_from:
            end = min(hour_end, bucket_of(until, MINUTE))
            add("minute", x, end)
            x = end
            continue
        if x > cov.rows_after:
            # Rows up to where a coarser source can take over (a whole minute or hour that is kept).
            end = min(until, max(minute_end, cov.minutes_from), max(hour_end, cov.hours_from))
            add("rows", x, end)
            x = end
            continue
        return None
    return pieces


def plan_range(since: float, until: float | None, cov: Coverage, not_before: float = -math.inf) -> Plan:
    """The pieces that count [since, until) exactly, or the narrowest wider range that can be counted; never
    reaching back before `not_before` (what the interval before it already counted)."""
    end = END_OF_TIME if until is None else until
    if end <= since:
        return Plan([], since, since)
    starts = [
        start
        for start in dict.fromkeys([since, float(bucket_of(since, MINUTE)), float(bucket_of(since, HOUR))])
        if start >= not_before
    ]
    ends = list(dict.fromkeys([end, float(_ceil(end, MINUTE)), float(_ceil(end, HOUR))]))
    for start in starts:
        for stop in ends:
            pieces = _walk(start, stop, cov)
            if pieces is not None:
                return Plan(pieces, start, stop)
    # The start is older than every kept source: count from the oldest kept hour, if the range reaches it.
    oldest = max(cov.hours_from, bucket_of(since, HOUR), not_before)
    if oldest < end:
        for stop in ends:
            pieces = _walk(oldest, stop, cov)
            if pieces is not None:
                return Plan(pieces, oldest, stop)
    return Plan([], end, end)


# --- reading ----------------------------------------------------------------------------------------


@dataclass
class Tally:
    ok: int = 0
    ng: int = 0


@dataclass
class IntervalCounts:
    """The counts of one interval: per camera OK/NG and NG per failing rule, and the range counted."""

    since: float
    until: float
    counted_since: float
    counted_until: float
    cameras: dict[int, Tally] = field(default_factory=dict)
    rules: dict[tuple[int, str], int] = field(default_factory=dict)

    @property
    def exact(self) -> bool:
        return self.counted_since == self.since and self.counted_until == self.until


def _camera_clause(camera_id: int | None, alias: str) -> tuple[str, list[object]]:
    return (f" AND {alias}.camera_id = ?", [camera_id]) if camera_id is not None else ("", [])


def _pieces_sql(chunk: list[tuple[int, Piece]]) -> tuple[str, list[object]]:
    values = ", ".join("(?, ?, ?)" for _ in chunk)
    args: list[object] = []
    for index, piece in chunk:
        args += [index, piece.start, piece.end]
    return f"WITH p(i, a, b) AS (VALUES {values}) ", args


def _chunks(pieces: list[tuple[int, Piece]]) -> Iterable[list[tuple[int, Piece]]]:
    for start in range(0, len(pieces), _PIECES_PER_QUERY):
        yield pieces[start : start + _PIECES_PER_QUERY]


def count_intervals(
    db: Database, edges: Sequence[float | None], camera_id: int | None = None, *, rules: bool = False
) -> list[IntervalCounts]:
    """Counts of consecutive intervals [edges[0], edges[1]), [edges[1], edges[2]), ...; the last edge may be
    None (no end). One query per source (rows, minute and hour buckets) for all intervals together."""
    cov = coverage(db)
    out: list[IntervalCounts] = []
    by_source: dict[Source, list[tuple[int, Piece]]] = defaultdict(list)
    counted_until = -math.inf
    for index, (since, until) in enumerate(zip(edges, edges[1:], strict=False)):
        assert since is not None
        end = END_OF_TIME if until is None else until
        # Where an interval had to be widened (its rows gone), the next one starts where it stopped: no event
        # is counted in two intervals (an interval swallowed whole counts nothing and says so: not exact).
        start = max(since, counted_until)
        plan = (
            plan_range(start, until, cov, not_before=counted_until) if start < end else Plan([], start, start)
        )
        counted_until = max(counted_until, plan.until)
        out.append(IntervalCounts(since=since, until=end, counted_since=plan.since, counted_until=plan.until))
        for piece in plan.pieces:
            by_source[piece.source].append((index, piece))
    camera_sql, camera_args = _camera_clause(camera_id, "t")

    def tally(index: int, camera: int) -> Tally:
        return out[index].cameras.setdefault(camera, Tally())

    for source, pieces in by_source.items():
        for chunk in _chunks(pieces):
            with_sql, args = _pieces_sql(chunk)
            if source == "rows":
                sql = (
                    with_sql + "SELECT p.i, t.camera_id, SUM(t.verdict = 'ok'), SUM(t.verdict = 'ng') "
                    "FROM p JOIN inspection_events t ON t.ts >= p.a AND t.ts < p.b"
                    + camera_sql
                    + " GROUP BY p.i, t.camera_id"
                )
            else:
                sql = (
                    with_sql
                    + f"SELECT p.i, t.camera_id, SUM(t.ok), SUM(t.ng) FROM p JOIN event_counts_{source} t "
                    "ON t.bucket >= p.a AND t.bucket < p.b" + camera_sql + " GROUP BY p.i, t.camera_id"
                )
            for index, camera, ok, ng in db.execute(sql, [*args, *camera_args]).fetchall():
                counts = tally(index, camera)
                counts.ok += ok
                counts.ng += ng
            if not rules:
                continue
            if source == "rows":
                sql = (
                    with_sql + "SELECT p.i, t.camera_id, j.value, COUNT(DISTINCT t.id) "
                    "FROM p JOIN inspection_events t ON t.ts >= p.a AND t.ts < p.b, json_each(t.failing_rules) j "
                    "WHERE t.failing_rules != '[]'" + camera_sql + " GROUP BY p.i, t.camera_id, j.value"
                )
            else:
                sql = (
                    with_sql
                    + f"SELECT p.i, t.camera_id, t.rule, SUM(t.ng) FROM p JOIN event_rule_counts_{source} t "
                    "ON t.bucket >= p.a AND t.bucket < p.b"
                    + camera_sql
                    + " GROUP BY p.i, t.camera_id, t.rule"
                )
            for index, camera, rule, ng in db.execute(sql, [*args, *camera_args]).fetchall():
                key = (camera, rule)
                out[index].rules[key] = out[index].rules.get(key, 0) + ng
    return out


def range_counts(
    db: Database,
    since: float,
    until: float | None = None,
    camera_id: int | None = None,
    *,
    rules: bool = False,
) -> IntervalCounts:
    """OK/NG per camera (and NG per failing rule) of the events in [since, until)."""
    return count_intervals(db, [since, until], camera_id, rules=rules)[0]
