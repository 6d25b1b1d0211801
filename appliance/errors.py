"""Application errors raised by services, and the one handler that turns any error into {status_code, detail}."""

from __future__ import annotations

import logging
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


def error_body(status_code: int, detail: str) -> dict[str, Any]:
    return {"status_code": status_code, "detail": detail}
