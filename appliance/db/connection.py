"""Opening catalog connections (WAL, foreign keys, synchronous=FULL, busy timeout) and write transactions."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from sqlite_utils import Database

BUSY_TIMEOUT_MS = 10_000
# SQLite's own page cache, per connection (KiB). Each process sets it once from `catalog_cache_mb`
# (set_page_cache_mb): a box runs for months and a process holds several connections, so the cache that a
# full pass over a large catalog fills stays bounded; the kernel's page cache still serves repeated reads.
_page_cache_kib = 8 * 1024

_WRITE_LOCKS: dict[str, threading.RLock] = {}
_WRITE_LOCKS_GUARD = threading.Lock()


class CatalogConnection(sqlite3.Connection):
    """A connection that knows the in-process writer lock of its database file."""

    write_lock: threading.RLock | None = None


def _write_lock_for(path: Path) -> threading.RLock:
    key = str(path.resolve())
    with _WRITE_LOCKS_GUARD:
        return _WRITE_LOCKS.setdefault(key, threading.RLock())


def _fresh_locks_in_child() -> None:
    # A forked child opens its own connections; a lock some parent thread held at fork time
    # would never be released there.
    global _WRITE_LOCKS_GUARD
    _WRITE_LOCKS_GUARD = threading.Lock()
    _WRITE_LOCKS.clear()


os.register_at_fork(after_in_child=_fresh_locks_in_child)


def set_page_cache_mb(megabytes: int) -> None:
    """The page cache of every catalog connection this process opens from now on."""
    global _page_cache_kib
    _page_cache_kib = max(1, megabytes) * 1024


def open_database(path: str | Path, *, readonly: bool = False) -> Database:
    """One connection with the pragmas every process sets for itself.

    isolation_level=None leaves transactions to us: write_transaction() issues
    BEGIN IMMEDIATE so a writer takes the lock up front instead of failing to
    upgrade a read lock later.
    """
    path = Path(path)
    conn: CatalogConnection
    if readonly:
        conn = sqlite3.connect(
            f"file:{path}?mode=ro",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
            timeout=10,
            factory=CatalogConnection,
        )
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False, timeout=10, factory=CatalogConnection
        )
        conn.write_lock = _write_lock_for(path)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    if not readonly and conn.execute("PRAGMA page_count").fetchone()[0] == 0:
        # A new catalog can give pages freed by the retention back (incremental vacuum); an existing one
        # keeps its mode (changing it takes a VACUUM of the whole file: `appliance vacuum`).
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA temp_store = MEMORY")
    conn.execute(f"PRAGMA cache_size = -{_page_cache_kib}")
    _check_pragmas(conn, path, readonly)
    return Database(conn)


# Test hook (no APPLIANCE_ prefix: those are config keys): every process appends the pragmas of every
# connection it opens to this file, so a test can prove them for web, worker, camera and training child.
PRAGMA_LOG_ENV = "CATALOG_PRAGMA_LOG"
EXPECTED = {"journal_mode": "wal", "foreign_keys": 1, "synchronous": 2, "busy_timeout": BUSY_TIMEOUT_MS}


def connection_pragmas(conn: sqlite3.Connection) -> dict[str, object]:
    return {name: conn.execute(f"PRAGMA {name}").fetchone()[0] for name in EXPECTED}


def _check_pragmas(conn: sqlite3.Connection, path: Path, readonly: bool) -> None:
    """Read the pragmas back: a catalog that silently fell back to another journal mode (a file system
    without shared memory, say) or lost foreign keys would break the durability every writer relies on."""
    found = connection_pragmas(conn)
    wrong = {k: v for k, v in found.items() if v != EXPECTED[k] and not (readonly and k == "journal_mode")}
    log = os.environ.get(PRAGMA_LOG_ENV)
    if log:
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(
                json.dumps({"pid": os.getpid(), "argv": sys.argv[:3], "db": str(path), **found}) + "\n"
            )
    if wrong:
        conn.close()
        raise sqlite3.OperationalError(f"catalog {path}: pragmas not applied: {wrong} (expected {EXPECTED})")


@contextlib.contextmanager
def write_transaction(db: Database) -> Iterator[Database]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error; nests as a savepoint.

    Writers of one process queue on a lock first: SQLite's busy handler sleeps in growing steps
    (up to 100 ms) while it waits, which made 16 concurrent writers slow; the lock wakes the next
    writer at once. Other processes (worker, camera) still meet the busy timeout.
    """
    conn = db.conn
    if conn.in_transaction:
        with db.atomic():
            yield db
        return
    lock = getattr(conn, "write_lock", None)
    with lock if lock is not None else contextlib.nullcontext():
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        else:
            try:
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise


class ConnectionPool:
    """Connections handed to one request at a time (sqlite3 objects must not be shared concurrently).

    At most `keep` stay open between requests (each holds up to its page cache); a burst beyond them opens
    connections that are closed when they are handed back."""

    def __init__(self, path: str | Path, keep: int = 4) -> None:
        self.path = Path(path)
        self.keep = keep
        self._idle: list[Database] = []
        self._lock = threading.Lock()
        self._closed = False

    def acquire(self) -> Database:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return open_database(self.path)

    def release(self, db: Database) -> None:
        if db.conn.in_transaction:  # a handler died mid-transaction: never reuse that state
            db.conn.execute("ROLLBACK")
        with self._lock:
            if not self._closed and len(self._idle) < self.keep:
                self._idle.append(db)
                return
        db.conn.close()

    @contextlib.contextmanager
    def connection(self) -> Iterator[Database]:
        db = self.acquire()
        try:
            yield db
        finally:
            self.release(db)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for db in idle:
            db.conn.close()


__all__ = ["CatalogConnection", "ConnectionPool", "Database", "open_database", "write_transaction"]
