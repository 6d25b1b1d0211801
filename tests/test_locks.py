"""The installs are pinned by hash: every dependency pinned in pyproject.toml is in the locks at that version,
and every package line of the locks carries hashes."""

from __future__ import annotations

import re
import tomllib

from tests.helpers import REPO

LOCK_LINE = re.compile(r"^([A-Za-z0-9_.\-]+)==([^ \\]+)")


def locked(path: str) -> dict[str, str]:
    text = (REPO / path).read_text()
    found: dict[str, str] = {}
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text)
    for block in blocks:
        match = LOCK_LINE.match(block.strip())
        if match:
            assert "--hash=sha256:" in block, f"{path}: {match.group(1)} has no hash"
            found[match.group(1).lower().replace("_", "-")] = match.group(2)
    return found


def pinned(*extras: str) -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in extras:
        lines += project["optional-dependencies"][extra]
    pins = {}
    for line in lines:
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^ ;]+)", line)
        assert match, f"pyproject.toml: {line!r} is not pinned with =="
        pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def test_the_locks_hold_every_pin_of_pyproject_with_hashes() -> None:
    for lock, extras in (("requirements/run.lock", ("train",)), ("requirements/test.lock", ("train", "dev"))):
        have = locked(lock)
        for name, version in pinned(*extras).items():
            assert have.get(name) == version, (
                f"{lock}: {name}=={version} (found {have.get(name)}); run `make lock`"
            )


def test_make_and_ci_install_from_the_locks() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert "--require-hashes -r requirements/run.lock" in makefile
    assert "--require-hashes -r requirements/test.lock" in makefile
    assert "make test" in (REPO / ".ci" / "run").read_text()
