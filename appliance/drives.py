"""Paths on the drives a user may point the box at (USB sticks under `import_roots`), checked safely.

A path is checked against the roots as written BEFORE anything on the disk is looked at, so an answer never
tells whether a file outside them exists (a 404 for one path and a 403 for another would); then its links
are resolved and the real path is checked again (a link under a root that leads out of it is refused).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import msgspec

from appliance.config import Config
from appliance.errors import Forbidden, Invalid, NotFound

MAX_PATH_CHARS = 4096
# A path a client names on the box, as the API takes it: absolute (or from ~), no NUL byte.
DrivePath = Annotated[
    str,
    msgspec.Meta(
        min_length=1, max_length=MAX_PATH_CHARS, pattern=r"^[/~][^\x00]*$", examples=["/media/usb0"]
    ),
]


def configured_roots(config: Config) -> list[Path]:
    """The import roots that exist, links resolved."""
    roots = []
    for root in config.import_roots:
        try:
            roots.append(Path(root).expanduser().resolve(strict=True))
        except OSError:
            continue
    return roots


def is_under(path: Path, roots: list[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def resolve_under_roots(config: Config, raw: str, *, example: str, allow_any: bool = False) -> Path:
    """The real path of `raw` under one of the import roots (NotFound when it does not exist)."""
    if not raw or "\x00" in raw or len(raw) > MAX_PATH_CHARS:
        raise Invalid("path is empty, too long or contains a NUL byte")
    try:
        path = Path(raw).expanduser()
    except RuntimeError:  # ~name, and no user of that name on this box
        raise Invalid(
            f"{raw[:300]}: no such user's home folder; give an absolute path, e.g. {example}"
        ) from None
    if not path.is_absolute():
        raise Invalid(f"{raw[:300]}: give an absolute path, e.g. {example}")
    roots = configured_roots(config)
    written = [Path(os.path.normpath(Path(r).expanduser())) for r in config.import_roots]
    outside = Forbidden(
        f"{raw[:300]} is outside the import folders ({', '.join(config.import_roots) or 'none configured'})"
    )
    if not allow_any and not is_under(Path(os.path.normpath(path)), [*roots, *written]):
        raise outside
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise NotFound(f"{raw[:300]} does not exist") from None
    if not allow_any and not is_under(real, roots):
        raise outside
    return real
