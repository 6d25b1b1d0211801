"""One list of system packages (requirements/apt.txt): installed here, installed by `make system-deps` only when
missing, and a plain user without sudo is told the exact command instead of a failure halfway through."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
APT_LIST = REPO / "requirements" / "apt.txt"
SCRIPT = REPO / "requirements" / "system-deps.sh"


def listed_packages(path: Path = APT_LIST) -> list[str]:
    names = []
    for line in path.read_text().splitlines():
        names += line.split("#", 1)[0].split()
    return names


def test_every_listed_package_is_installed():
    packages = listed_packages()
    assert "chromium" in packages and "mosquitto" in packages
    missing = [
        name
        for name in packages
        if subprocess.run(
            ["dpkg-query", "-W", "-f=${db:Status-Status}", name], capture_output=True, text=True
        ).stdout
        != "installed"
    ]
    assert missing == [], f"run `make system-deps`: {missing}"


def test_ci_has_no_package_list_of_its_own():
    ci = (REPO / ".ci" / "run").read_text()
    assert "apt-get" not in ci and "apt " not in ci
    assert "make test" in ci
    makefile = (REPO / "Makefile").read_text()
    assert "apt-get" not in makefile  # the Makefile calls the script; the list lives in one file


def fake_apt(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A PATH whose apt-get only records its arguments (the real one is never called by these tests)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "apt-calls"
    (bin_dir / "apt-get").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "apt-get").chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}, calls


def run_script(env: dict[str, str], apt_list: Path, user: list[str] | None = None):
    return subprocess.run(
        [*(user or []), "bash", str(SCRIPT)],
        env={**env, "APT_LIST": str(apt_list)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_nothing_is_installed_when_every_package_is_there(tmp_path):
    env, calls = fake_apt(tmp_path)
    result = run_script(env, APT_LIST)
    assert result.returncode == 0, result.stderr
    assert not calls.exists()  # no apt-get update, no network


@pytest.mark.skipif(os.geteuid() != 0, reason="installs as root only when run as root")
def test_root_installs_exactly_the_missing_packages(tmp_path):
    apt_list = tmp_path / "apt.txt"
    apt_list.write_text("# comment\nbash  coreutils\nno-such-package-xyz  # what needs it\n")
    env, calls = fake_apt(tmp_path)
    result = run_script(env, apt_list)
    assert result.returncode == 0, result.stderr
    lines = calls.read_text().splitlines()
    assert lines == ["update -q", "install -y -q no-such-package-xyz"]


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to become another user"
)
def test_a_user_without_sudo_gets_the_exact_command(tmp_path):
    shared = Path(tempfile.mkdtemp(prefix="system-deps-"))  # pytest's tmp_path is private to root
    shared.chmod(0o755)
    apt_list = shared / "apt.txt"
    apt_list.write_text("bash\nno-such-package-xyz\nother-missing-pkg\n")
    apt_list.chmod(0o644)
    env, calls = fake_apt(tmp_path)
    env["PATH"] = (
        "/usr/bin:/bin"  # no sudo reachable for the user: /usr/bin/sudo is absent here or needs a password
    )
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    result = run_script(env, apt_list, user=nobody)
    assert result.returncode == 1
    assert "apt-get update && apt-get install -y no-such-package-xyz other-missing-pkg" in result.stderr
    assert not calls.exists()
    shutil.rmtree(shared)
