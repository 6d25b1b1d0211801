"""Logging to journald through systemd-python when installed and running under systemd, else stderr."""

from __future__ import annotations

import logging
import os
import sys
import threading
from types import TracebackType

from appliance.redaction import RedactingFilter

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def under_journald() -> bool:
    """True when systemd connected our stderr to the journal (JOURNAL_STREAM names it)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    if not stream or ":" not in stream:
        return False
    try:
        device, inode = (int(part) for part in stream.split(":", 1))
        stat = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError):
        return False
    return (stat.st_dev, stat.st_ino) == (device, inode)


def log_handler() -> logging.Handler:
    """A JournalHandler (structured fields: priority, logger name, code location) when possible, credentials
    redacted from every record (appliance.redaction).

    Without systemd-python, or outside systemd, a plain stderr handler: journald captures a service's
    stderr anyway, only without the structured fields.
    """
    handler = _handler()
    handler.addFilter(RedactingFilter())
    return handler


def route_uncaught_errors() -> None:
    """A thread or the main program dying on an exception goes through logging (and so through the redaction):
    Python's own hooks print the traceback straight to stderr, which is the journal, with whatever the
    exception carried (a camera URL with its password, say)."""
    crash = logging.getLogger("appliance.crash")

    def thread_died(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit or args.exc_value is None:
            return
        name = args.thread.name if args.thread is not None else "a thread"
        crash.error("%s died", name, exc_info=(args.exc_type, args.exc_value, args.exc_traceback))

    def program_died(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, value, tb)
            return
        crash.critical("the process died", exc_info=(kind, value, tb))

    threading.excepthook = thread_died
    sys.excepthook = program_died


def _handler() -> logging.Handler:
    if under_journald():
        try:
            from systemd.journal import JournalHandler  # type: ignore[import-not-found]
        except ImportError:
            pass
        else:
            handler: logging.Handler = JournalHandler(SYSLOG_IDENTIFIER="appliance")
            handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
            return handler
    handler = logging.StreamHandler(sys.stderr)
    # journald adds its own timestamp; keep the format short there.
    handler.setFormatter(
        logging.Formatter(
            "%(levelname)s %(name)s: %(message)s" if os.environ.get("JOURNAL_STREAM") else FORMAT
        )
    )
    return handler
