"""The catalog's migration registry and the helper migrations use to run SQL; schema modules import only this."""

from __future__ import annotations

import sqlite3

from sqlite_utils import Database, Migrations

migrations = Migrations("appliance")


def run_statements(db: Database, statements: str) -> None:
    # executescript() would COMMIT the migration's transaction; run one complete statement at a time.
    pending = ""
    for line in statements.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            db.execute(pending)
            pending = ""
    if pending.strip():
        db.execute(pending)
