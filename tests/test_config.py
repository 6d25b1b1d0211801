"""Configuration: TOML file, APPLIANCE_* overrides, unknown keys refused at start, the generated JWT key."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.config import Config, ensure_jwt_secret, load_config
from appliance.errors import ConfigError
from tests.helpers import REPO, free_port


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_without_file_or_env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(env={})
    assert (config.host, config.port, config.data_dir) == ("127.0.0.1", 8000, "./var")
    assert config.data_path == (tmp_path / "var").resolve()
    assert config.runtime_path == config.data_path / "run"
    assert config.db_path == config.data_path / "appliance.db"


def test_toml_file_then_env_then_explicit_overrides(tmp_path):
    path = write_toml(
        tmp_path / "appliance.toml",
        f'data_dir = "{tmp_path / "data"}"\nport = 9000\nimport_roots = ["/media/usb"]\n'
        "registration_enabled = true\nmax_upload_mb = 10\n",
    )
    config = load_config(path, env={})
    assert (config.port, config.import_roots, config.registration_enabled) == (9000, ["/media/usb"], True)
    env = {
        "APPLIANCE_PORT": "9100",
        "APPLIANCE_IMPORT_ROOTS": "/a, /b",
        "APPLIANCE_REGISTRATION_ENABLED": "false",
        "APPLIANCE_WORKER_POLL_S": "0.25",
        "APPLIANCE_RUNTIME_DIR": str(tmp_path / "rt"),
        "HOME": "/ignored",  # not ours
    }
    config = load_config(path, env=env)
    assert config.port == 9100 and config.import_roots == ["/a", "/b"]
    assert config.registration_enabled is False and config.worker_poll_s == 0.25
    assert config.max_upload_mb == 10  # from the file, untouched by env
    assert config.runtime_path == (tmp_path / "rt").resolve()
    assert load_config(path, env={"APPLIANCE_IMPORT_ROOTS": '["/x", "/y"]'}).import_roots == ["/x", "/y"]
    assert load_config(path, env=env, port=9200).port == 9200  # --port wins


def test_config_path_from_environment(tmp_path):
    path = write_toml(tmp_path / "a.toml", "port = 8123\n")
    assert load_config(env={"APPLIANCE_CONFIG": str(path)}).port == 8123


@pytest.mark.parametrize(
    ("toml", "env", "words"),
    [
        ("colour = 'red'\n", {}, "unknown config key(s)"),
        ("[server]\nport = 1\n", {}, "server"),
        ("", {"APPLIANCE_COLOUR": "red"}, "APPLIANCE_COLOUR"),
        ("port = 'eighty'\n", {}, "invalid configuration"),
        ("port = 70000\n", {}, "port"),
        ("", {"APPLIANCE_PORT": "eighty"}, "APPLIANCE_PORT"),
        ("", {"APPLIANCE_COOKIE_SECURE": "maybe"}, "APPLIANCE_COOKIE_SECURE"),
        ("port = \n", {}, "appliance.toml"),  # not TOML at all
    ],
)
def test_bad_configuration_is_a_clear_error(tmp_path, toml, env, words):
    path = write_toml(tmp_path / "appliance.toml", toml)
    with pytest.raises(ConfigError) as error:
        load_config(path, env=env)
    assert words in str(error.value)


def test_missing_config_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", env={})


def _serve(tmp_path: Path, extra_env: dict[str, str], args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.update({"APPLIANCE_DATA_DIR": str(tmp_path / "data"), **extra_env})
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args, "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


def test_serve_refuses_to_start_on_unknown_keys(tmp_path):
    path = write_toml(tmp_path / "appliance.toml", "prot = 8000\n")
    from_file = _serve(tmp_path, {}, ["--config", str(path)])
    assert from_file.returncode != 0
    assert "unknown config key(s)" in from_file.stderr and "prot" in from_file.stderr
    from_env = _serve(tmp_path, {"APPLIANCE_PROT": "8000"}, [])
    assert from_env.returncode != 0
    assert "APPLIANCE_PROT" in from_env.stderr
    assert "Traceback" not in from_file.stderr + from_env.stderr
    assert not (tmp_path / "data" / "appliance.db").exists()  # stopped before touching anything


def test_a_short_configured_jwt_secret_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        load_config(env={"APPLIANCE_JWT_SECRET": "changeme"}, data_dir=str(tmp_path))
    strong = "k" * 32
    assert load_config(env={"APPLIANCE_JWT_SECRET": strong}, data_dir=str(tmp_path)).jwt_secret == strong


def test_jwt_key_is_generated_once_with_0600(tmp_path):
    config = load_config(env={}, data_dir=str(tmp_path / "data"))
    secret = ensure_jwt_secret(config)
    key = config.data_path / "jwt.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(secret) >= 32 and key.read_text() == secret
    assert ensure_jwt_secret(config) == secret  # same key on the next start
    other = load_config(env={}, data_dir=str(tmp_path / "other"))
    assert ensure_jwt_secret(other) != secret


def test_jwt_key_file_is_never_left_empty(tmp_path):
    config = load_config(env={}, data_dir=str(tmp_path / "data"))
    ensure_jwt_secret(config)
    assert [p.name for p in config.data_path.iterdir()] == ["jwt.key"]  # no temp file left behind
    (config.data_path / "jwt.key").write_text("")  # as a crash of an older version could leave it
    with pytest.raises(ConfigError, match="empty"):
        ensure_jwt_secret(config)  # never sign tokens with an empty key


def test_configured_jwt_key_is_used_and_nothing_written(tmp_path):
    config = load_config(env={"APPLIANCE_JWT_SECRET": "x" * 40}, data_dir=str(tmp_path / "data"))
    assert ensure_jwt_secret(config) == "x" * 40
    assert not (config.data_path / "jwt.key").exists()


def test_every_key_has_a_default():
    Config()  # a new key without a default would break every existing install
