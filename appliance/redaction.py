"""Credentials out of every string that leaves the box's code: statuses, errors, trigger reasons, log lines.

A camera source may carry a password (`rtsp://user:password@host/...`, or a GStreamer pipeline's `user-pw=`);
OpenCV, FFmpeg and our own messages quote that source back ("could not open url source 'rtsp://...'"). One
function, `redact_credentials`, masks the password part of any URL and any password-like pipeline property, and
every secret this process was told about (`remember_secrets`: the passwords of the sources it opened, as typed
and percent-decoded), wherever it appears. The capture code applies it where its strings leave it; the log
handler of every process applies it to each record (message, arguments, traceback), journald included.
"""

from __future__ import annotations

import logging
import re
import threading
from urllib.parse import unquote

MASK = "***"
MIN_SECRET = 4  # shorter secrets are masked only where they stand in a URL or property (not as bare text)
MAX_SECRETS = 256

# scheme://authority: everything up to the path, query, fragment or whitespace. The userinfo ends at the
# authority's last '@' (as FFmpeg and urllib read it), so a password may itself contain '@'. The scheme's length
# is bounded: an unbounded one backtracks quadratically over a long string without "://".
_URL = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]{0,31}://)(?P<authority>[^/\s?#]*)")
_PROPERTY = re.compile(
    r"(?P<head>\b(?:[a-z0-9_]+-pw|password|passphrase|passwd|pass|pwd)\s*=\s*)(?P<secret>\"[^\"]*\"|'[^']*'|[^\s!]+)",
    re.IGNORECASE,
)  # user-pw, proxy-pw and any other GStreamer *-pw property
# A secret in a URL's query (webhook tokens, signed links) and an HTTP authorization header's credentials.
_QUERY = re.compile(
    r"(?P<head>[?&](?:access_token|token|api_key|apikey|key|secret|sig|signature|auth|password|passphrase|pwd)=)"
    r"(?P<secret>[^&\s#'\"]+)",
    re.IGNORECASE,
)
_AUTHORIZATION = re.compile(
    r"(?P<head>\bAuthorization:\s*(?:Basic|Bearer|Digest)\s+)(?P<secret>[^\s\"',;]+)", re.I
)

_WORD_END = re.compile(r"\s")

_secrets: set[str] = set()
_lock = threading.Lock()


def _mask_authority(match: re.Match[str]) -> str:
    authority = match.group("authority")
    at = authority.rfind("@")
    if at < 0 or ":" not in authority[:at]:
        return match.group(0)
    user = authority[: authority.index(":")]
    return f"{match.group('scheme')}{user}:{MASK}{authority[at:]}"


def source_secrets(text: str) -> set[str]:
    """The passwords a source string carries (URL userinfo, pipeline properties), as written and decoded."""
    found: set[str] = set()
    for match in _URL.finditer(text):
        authority = match.group("authority")
        at = authority.rfind("@")
        if at > 0 and ":" in authority[:at]:
            found.add(authority[authority.index(":") + 1 : at])
    for match in _PROPERTY.finditer(text):
        found.add(match.group("secret").strip("\"'"))
    return {s for secret in found if secret for s in (secret, unquote(secret))}


def has_unreadable_password(text: str) -> bool:
    """A URL in `text` whose password holds a raw / ? # or space: the authority ends there
    (`rtsp://admin:pa/ss@cam` is host "admin", port "pa"), so neither the camera's client nor the redaction
    reads a password, and the rest of it would be shown. Such a source is refused when it is saved."""
    for match in _URL.finditer(text):
        authority = match.group("authority")
        if "@" in authority:
            continue
        host_port = authority.split("]", 1)[-1] if authority.startswith("[") else authority  # [IPv6]:port
        if ":" not in host_port:
            continue
        if not host_port.rsplit(":", 1)[1].isdigit():  # "admin:pa" is no port
            return True
        # "admin:123/x@cam" reads as host admin, port 123, path "/x@cam": an '@' later in the same word (up to
        # whitespace only: a quote may be part of the password, `admin:00?"@cam`).
        if "@" in _WORD_END.split(text[match.end() :], maxsplit=1)[0]:
            return True
    return False


def remember_secrets(text: str) -> None:
    """Mask the passwords of this source wherever they turn up in this process from now on."""
    found = {s for s in source_secrets(text) if len(s) >= MIN_SECRET}
    if found:
        with _lock:
            if len(_secrets) + len(found) > MAX_SECRETS:
                _secrets.clear()  # bounded; the patterns still mask every URL and property
            _secrets.update(found)


def redact_credentials(text: str) -> str:
    """`text` with the password of every URL and pipeline property, and every remembered secret, as ***."""
    if not text:
        return text
    text = _URL.sub(_mask_authority, text)
    for pattern in (_PROPERTY, _QUERY, _AUTHORIZATION):
        text = pattern.sub(lambda m: m.group("head") + MASK, text)
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """On a handler: each record leaves with its message, arguments and traceback redacted. The record is
    rewritten in place (message formatted, args dropped, traceback as redacted text), so handlers that send
    the arguments or the exception on their own (systemd's JournalHandler: CODE_ARGS, EXCEPTION_INFO) carry
    nothing either."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what there is, redacted
            message = f"{record.msg} {record.args}"
        record.msg = redact_credentials(message)
        record.args = None
        if record.exc_info:
            record.exc_text = redact_credentials(self._formatter.formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact_credentials(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_credentials(record.stack_info)
        return True


__all__ = [
    "MASK",
    "RedactingFilter",
    "has_unreadable_password",
    "redact_credentials",
    "remember_secrets",
    "source_secrets",
]
