"""Application errors raised by services, and the one handler that turns any error into {status_code, detail}."""

from __future__ import annotations

import errno
import logging
import sqlite3
from typing import Any

logger = logging.getLogger(__name__)


class ConfigError(Exception):
    """The configuration cannot be used; the process stops with this message."""


class AppError(Exception):
    """Base of every error a service raises on purpose; maps to one HTTP status."""

    status_code = 400

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}


class Invalid(AppError):
    status_code = 422


class BadRequest(AppError):
    status_code = 400


class Unauthorized(AppError):
    status_code = 401


class Forbidden(AppError):
    status_code = 403


class NotFound(AppError):
    status_code = 404


class Conflict(AppError):
    status_code = 409


class TooLarge(AppError):
    status_code = 413


class UnsupportedType(AppError):
    status_code = 415


class TooManyRequests(AppError):
    status_code = 429


class InsufficientStorage(AppError):
    status_code = 507


class Unavailable(AppError):
    status_code = 503


DISK_FULL = "the data disk is full: free space (delete datasets, old models or exports) and try again"


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC from a file write, or SQLite's SQLITE_FULL ("database or disk is full")."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(exc, sqlite3.OperationalError) and "database or disk is full" in str(exc)


def error_body(status_code: int, detail: str) -> dict[str, Any]:
    return {"status_code": status_code, "detail": detail}
