"""Shared fixtures: a fresh catalog on disk, the real app through TestClient, a real server, a real browser."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from appliance.config import Config, load_config
from appliance.db import Database, migrate, open_database
from appliance.server import create_app
from tests.helpers import LOCAL_URL, ServerProcess, setup_admin

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return load_config(env={}, data_dir=str(tmp_path / "data"), runtime_dir=str(tmp_path / "run"))


@pytest.fixture
def fresh_db(config: Config) -> Iterator[Database]:
    """The catalog file of `config`, migrated, with this process's pragmas; the app under test shares it."""
    db = open_database(config.db_path)
    migrate(db, config.db_path)
    yield db
    db.conn.close()


@pytest.fixture
def client(config: Config) -> Iterator[TestClient[Any]]:
    with TestClient(app=create_app(config), base_url=LOCAL_URL, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def admin(client: TestClient[Any]) -> dict[str, str]:
    """Authorization headers of the first admin."""
    return setup_admin(client)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A real `appliance serve` on 127.0.0.1 with a fresh data folder."""
    process = ServerProcess(tmp_path / "data")
    process.start()
    yield process
    process.stop()


# --- browser (pytest-playwright with Debian's Chromium) --------------------------------------


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not found at {CHROMIUM}: apt-get install -y chromium")
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": [
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-sync",
            "--disable-background-networking",
            "--disable-component-update",
        ],
    }


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Screenshots and other outputs kept after the run (not committed)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


# --- models -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_yolo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """best.pt of a yolov8n trained for 2 epochs at 64 px on synthetic shapes; trained once per session."""
    from tests.models import train_tiny_model

    return train_tiny_model(tmp_path_factory.mktemp("tiny-yolo"))


@pytest.fixture(scope="session")
def tiny_onnx(tiny_yolo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """model_64.onnx of the tiny YOLO, exported once per session (camera tests)."""
    from tests.camera_sources import export_tiny_onnx

    return export_tiny_onnx(tiny_yolo, tmp_path_factory.mktemp("tiny-onnx"))


@pytest.fixture
def watched(page: Any) -> dict[str, list[str]]:
    """Dialogs (alert/confirm) and console errors seen during the test: none are expected."""
    seen: dict[str, list[str]] = {"dialogs": [], "errors": []}

    def on_dialog(dialog: Any) -> None:
        seen["dialogs"].append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("console", lambda m: seen["errors"].append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.set_viewport_size({"width": 1366, "height": 768})
    return seen
