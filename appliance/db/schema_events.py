"""Catalog migrations m055-m059: OK/NG counts per camera per minute and hour, the event list's indexes, the
failing rules of each event as rows (the "rule" filter), and the running totals the retention reads."""

from __future__ import annotations

from sqlite_utils import Database

from appliance.db.registry import migrations, run_statements

# floor(ts) to the start of its bucket, for any sign (SQLite's integer division truncates toward zero, and the
# math functions are not in every build); the same as appliance.stations.counts.bucket_of.
_FLOOR_TS = "(CAST(ts AS INTEGER) - (ts < CAST(ts AS INTEGER)))"


def _bucket_sql(span: int) -> str:
    return f"({_FLOOR_TS} - ((({_FLOOR_TS} % {span}) + {span}) % {span}))"


@migrations()
def m055_event_counts(db: Database) -> None:
    """Counts that do not count rows: per camera per minute and per hour (OK, NG, NG per failing rule), kept
    in the transaction that writes the events and never touched by the event retention; `event_history`
    holds the totals of the rows still stored (the retention's budget) and how far each source is complete.
    An existing catalog's counts are filled from the events it holds."""
    tables = ""
    for span in ("minute", "hour"):
        tables += f"""
CREATE TABLE event_counts_{span} (
  bucket INTEGER NOT NULL,
  camera_id INTEGER NOT NULL,
  ok INTEGER NOT NULL DEFAULT 0,
  ng INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (bucket, camera_id)
) WITHOUT ROWID;
CREATE TABLE event_rule_counts_{span} (
  bucket INTEGER NOT NULL,
  camera_id INTEGER NOT NULL,
  rule TEXT NOT NULL,
  ng INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (bucket, camera_id, rule)
) WITHOUT ROWID;
"""
    run_statements(
        db,
        tables
        + """
CREATE TABLE event_history (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  events INTEGER NOT NULL DEFAULT 0,
  snapshot_bytes INTEGER NOT NULL DEFAULT 0,
  rows_after REAL,
  minutes_from INTEGER,
  hours_from INTEGER
);
INSERT INTO event_history (id, events, snapshot_bytes)
  SELECT 1, COUNT(*), COALESCE(SUM(snapshot_bytes), 0) FROM inspection_events;
""",
    )
    for span, seconds in (("minute", 60), ("hour", 3600)):
        bucket = _bucket_sql(seconds)
        db.execute(
            f"INSERT INTO event_counts_{span} (bucket, camera_id, ok, ng) "
            f"SELECT {bucket}, camera_id, SUM(verdict = 'ok'), SUM(verdict = 'ng') FROM inspection_events "
            "GROUP BY 1, 2"
        )
        db.execute(
            f"INSERT INTO event_rule_counts_{span} (bucket, camera_id, rule, ng) "
            f"SELECT {bucket}, e.camera_id, j.value, COUNT(DISTINCT e.id) "
            "FROM inspection_events e, json_each(e.failing_rules) j WHERE e.failing_rules != '[]' "
            "GROUP BY 1, 2, 3"
        )


@migrations()
def m056_event_list_indexes(db: Database) -> None:
    """The event list is ordered by time (ts, then id) so that every filter is one index range read in
    order: camera, verdict, camera and verdict, time; the failing rules of each event are rows of their own
    (filled with the event, removed with it) for the "rule" filter. The snapshot index keeps the
    retention's disk budget and the orphan sweep from reading events that have no snapshot."""
    run_statements(
        db,
        """
DROP INDEX inspection_events_counters;
CREATE INDEX inspection_events_camera_ts ON inspection_events (camera_id, ts);
CREATE INDEX inspection_events_verdict_ts ON inspection_events (verdict, ts);
CREATE INDEX inspection_events_camera_verdict_ts ON inspection_events (camera_id, verdict, ts);
CREATE INDEX inspection_events_snapshots ON inspection_events (id) WHERE snapshot IS NOT NULL;
CREATE TABLE inspection_event_rules (
  event_id INTEGER NOT NULL,
  rule TEXT NOT NULL,
  camera_id INTEGER NOT NULL,
  ts REAL NOT NULL,
  PRIMARY KEY (event_id, rule)
) WITHOUT ROWID;
CREATE INDEX inspection_event_rules_rule ON inspection_event_rules (rule, ts);
CREATE INDEX inspection_event_rules_camera ON inspection_event_rules (camera_id, rule, ts);
INSERT OR IGNORE INTO inspection_event_rules (event_id, rule, camera_id, ts)
  SELECT e.id, j.value, e.camera_id, e.ts FROM inspection_events e, json_each(e.failing_rules) j
  WHERE e.failing_rules != '[]';
""",
    )
