"""Timestamps in one format: ISO 8601, UTC, millisecond precision."""

import datetime


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
