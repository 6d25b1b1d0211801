"""Base weights from a USB drive: only a file whose sha256 is in the pinned list is imported (under the name the
list gives it, atomically, by an admin); anything else is refused and leaves nothing behind."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from appliance.config import Config, load_config
from appliance.server import create_app
from appliance.training.base_weights import PINNED_LIST, checksums_path, pinned_checksums
from tests.helpers import API, LOCAL_URL, REPO, create_user, setup_admin

GOOD = b"pretend weights: a small file whose checksum the test's list pins"
BAD = b"an arbitrary .pt nobody pinned"


@pytest.fixture
def box(tmp_path: Path) -> Iterator[tuple[TestClient[Any], dict[str, str], Config, Path]]:
    usb = tmp_path / "media" / "STICK"
    (usb / "models").mkdir(parents=True)
    (usb / "models" / "renamed-on-the-stick.pt").write_bytes(GOOD)
    (usb / "bad.pt").write_bytes(BAD)
    (usb / "notes.txt").write_text("not weights")
    listing = tmp_path / "weights.sha256"
    listing.write_text(
        "# test list (sha256sum format, as fetch-weights.sh reads it)\n"
        f"{hashlib.sha256(GOOD).hexdigest()}  yolo-test.pt\n"
        f"{'0' * 64}  other.pt\n"
    )
    config = load_config(
        env={},
        data_dir=str(tmp_path / "data"),
        import_roots=[str(tmp_path / "media")],
        weights_checksums=str(listing),
        disk_min_free_mb=1,
    )
    with TestClient(app=create_app(config), base_url=LOCAL_URL, raise_server_exceptions=False) as client:
        yield client, setup_admin(client), config, usb


def weights_files(config: Config) -> list[str]:
    folder = config.data_path / "weights"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_a_pinned_file_is_imported_under_its_listed_name(
    box: tuple[TestClient[Any], dict[str, str], Config, Path],
) -> None:
    client, admin, config, usb = box
    found = client.get(f"{API}/models/base/weights/usb", headers=admin)
    assert found.status_code == 200, found.text
    names = {c["name"]: c for c in found.json()}
    assert set(names) == {"renamed-on-the-stick.pt", "bad.pt"}  # .pt files only
    imported = client.post(
        f"{API}/models/base/weights",
        json={"path": str(usb / "models" / "renamed-on-the-stick.pt")},
        headers=admin,
    )
    assert imported.status_code == 201, imported.text
    body = imported.json()
    assert body["name"] == "yolo-test.pt" and body["pinned"] is True
    assert body["sha256"] == hashlib.sha256(GOOD).hexdigest() and body["size"] == len(GOOD)
    assert weights_files(config) == ["yolo-test.pt"]  # no temp file left
    assert (config.data_path / "weights" / "yolo-test.pt").read_bytes() == GOOD
    present = client.get(f"{API}/models/base/weights", headers=admin).json()
    assert [(w["id"], w["pinned"]) for w in present] == [("weights:yolo-test.pt", True)]
    bases = {b["id"] for b in client.get(f"{API}/models/base", headers=admin).json()}
    assert "weights:yolo-test.pt" in bases
    # Importing it again replaces it with the same bytes.
    again = client.post(
        f"{API}/models/base/weights",
        json={"path": str(usb / "models" / "renamed-on-the-stick.pt")},
        headers=admin,
    )
    assert again.status_code == 201 and weights_files(config) == ["yolo-test.pt"]


def test_an_unknown_file_is_refused_and_leaves_nothing(
    box: tuple[TestClient[Any], dict[str, str], Config, Path],
) -> None:
    client, admin, config, usb = box
    refused = client.post(f"{API}/models/base/weights", json={"path": str(usb / "bad.pt")}, headers=admin)
    assert refused.status_code == 422, refused.text
    detail = refused.json()["detail"]
    assert hashlib.sha256(BAD).hexdigest() in detail and "never an arbitrary .pt" in detail
    assert weights_files(config) == []
    # A weights file placed by hand that the list does not know is shown as such.
    (config.data_path / "weights" / "hand-made.pt").write_bytes(BAD)
    present = client.get(f"{API}/models/base/weights", headers=admin).json()
    assert [(w["name"], w["pinned"]) for w in present] == [("hand-made.pt", False)]


def test_paths_roles_and_kinds_are_checked_before_anything_is_read(
    box: tuple[TestClient[Any], dict[str, str], Config, Path], tmp_path: Path
) -> None:
    client, admin, config, usb = box
    outside = tmp_path / "elsewhere.pt"
    outside.write_bytes(GOOD)
    (usb / "link.pt").symlink_to(outside)
    url = f"{API}/models/base/weights"
    cases = {
        str(outside): 403,  # not under an import root
        "/etc/shadow": 403,  # outside: never says whether it exists
        str(usb / "link.pt"): 403,  # a link on the stick that leads out of it
        str(usb / "missing.pt"): 404,
        str(usb / "notes.txt"): 422,
        "relative/yolo.pt": 400,  # not absolute: the document says so
    }
    for path, status in cases.items():
        response = client.post(url, json={"path": path}, headers=admin)
        assert response.status_code == status, (path, response.text)
    assert (
        client.post(url, json={"path": str(usb / "bad.pt"), "name": "x.pt"}, headers=admin).status_code == 400
    )
    labeler = create_user(client, admin, "lab", "labeler")
    assert (
        client.post(
            url, json={"path": str(usb / "models" / "renamed-on-the-stick.pt")}, headers=labeler
        ).status_code
        == 403
    )
    assert client.get(f"{url}/usb", headers=labeler).status_code == 403
    assert weights_files(config) == []


def test_the_default_list_is_the_one_fetch_weights_uses(tmp_path: Path) -> None:
    config = load_config(env={}, data_dir=str(tmp_path / "data"))
    assert checksums_path(config) == PINNED_LIST == REPO / "firmware_scripts" / "weights.sha256"
    assert 'CHECKSUMS="$HERE/weights.sha256"' in (REPO / "firmware_scripts" / "fetch-weights.sh").read_text()
    pinned = pinned_checksums(config)
    assert "yolo11n.pt" in pinned.values() and all(len(sha) == 64 for sha in pinned)
