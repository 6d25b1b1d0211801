"""Bad input gets its status and a clear message, and the server stays healthy after each."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import pytest
from litestar.testing import TestClient

from appliance.config import load_config
from appliance.server import create_app
from tests.helpers import API, LOCAL_URL, create_dataset, image_bytes, setup_admin, upload


def png_claiming(width: int, height: int) -> bytes:
    """A valid, tiny PNG file whose IHDR claims width x height: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def small(tmp_path) -> Any:
    """The app with small limits: 2 MB request bodies, 1 MB images, 1 megapixel."""
    config = load_config(
        env={}, data_dir=str(tmp_path / "small"), max_upload_mb=2, max_image_mb=1, max_image_pixels=1_000_000
    )
    with TestClient(base_url=LOCAL_URL, app=create_app(config), raise_server_exceptions=False) as client:
        headers = setup_admin(client)
        dataset = create_dataset(client, headers, classes=["bolt", "nut"])
        yield client, headers, dataset["id"]


def healthy(client: TestClient[Any]) -> bool:
    return client.get(f"{API}/health").json() == {"status": "ok"}


def send(
    client, headers, dataset_id: int, name: str, data: bytes, mime: str = "application/octet-stream"
) -> Any:
    return client.post(
        f"{API}/datasets/{dataset_id}/images", files=[("files", (name, data, mime))], headers=headers
    )


@pytest.mark.parametrize(
    ("name", "data", "mime", "status_code", "words"),
    [
        ("notes.txt", b"just some text", "text/plain", 415, "not an image"),
        ("fake.jpg", b"GIF89a" + b"\0" * 100, "image/jpeg", 415, "not an image"),  # name and type lie
        ("script.png", b"<script>alert(1)</script>", "image/png", 415, "not an image"),
        ("empty.jpg", b"", "image/jpeg", 415, "not an image"),
        ("bomb.png", png_claiming(50_000, 50_000), "image/png", 413, "pixels"),
        ("wide.png", png_claiming(2_000, 1_000), "image/png", 413, "pixels"),  # over the 1 MP limit here
        ("zero.png", png_claiming(0, 10), "image/png", 422, "size"),
        ("truncated.jpg", image_bytes(200, 150, seed=3)[:600], "image/jpeg", 422, "truncated"),
        ("truncated.png", image_bytes(200, 150, ".png", seed=4)[:500], "image/png", 422, "truncated"),
        ("headless.jpg", b"\xff\xd8\xff\xd9", "image/jpeg", 422, "corrupt"),
    ],
)
def test_bad_files_are_refused_with_a_reason(small, name, data, mime, status_code, words):
    client, headers, dataset_id = small
    response = send(client, headers, dataset_id, name, data, mime)
    assert response.status_code == status_code, response.text
    body = response.json()
    assert set(body) == {"status_code", "detail"} and body["status_code"] == status_code
    assert words in body["detail"].lower() and name in body["detail"]
    assert healthy(client)
    page = client.get(f"{API}/datasets/{dataset_id}/images", headers=headers).json()
    assert page["total"] == 0  # nothing half-stored


def test_bomb_is_refused_before_decoding(small, monkeypatch):
    import appliance.catalog.files as catalog_files

    def must_not_decode(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("decoded a file that the header check should have refused")

    monkeypatch.setattr(catalog_files, "decode_for_thumbnail", must_not_decode)
    client, headers, dataset_id = small
    assert send(client, headers, dataset_id, "bomb.png", png_claiming(100_000, 100_000)).status_code == 413
    assert healthy(client)


def test_a_bad_file_in_a_batch_does_not_fail_the_good_ones(small):
    client, headers, dataset_id = small
    result = upload(
        client,
        headers,
        dataset_id,
        [("good.jpg", image_bytes(seed=5)), ("bomb.png", png_claiming(50_000, 50_000)), ("x.txt", b"hello")],
    )
    assert [item["original_name"] for item in result["added"]] == ["good.jpg"]
    assert [(r["name"], r["status_code"]) for r in result["rejected"]] == [("bomb.png", 413), ("x.txt", 415)]


def test_oversize_files_and_bodies_get_413(small):
    client, headers, dataset_id = small
    big_image = image_bytes(seed=6) + b"\0" * (1024 * 1024)  # over the 1 MB image limit, under nothing else
    response = send(client, headers, dataset_id, "big.jpg", big_image)
    assert response.status_code == 413 and "big.jpg" in response.json()["detail"]
    batch = upload(client, headers, dataset_id, [("big.jpg", big_image), ("fine.jpg", image_bytes(seed=7))])
    assert [item["original_name"] for item in batch["added"]] == ["fine.jpg"]  # one big file spoils nothing
    assert [(r["name"], r["status_code"]) for r in batch["rejected"]] == [("big.jpg", 413)]
    body = client.post(
        f"{API}/datasets",
        content=b"{" + b" " * (3 * 1024 * 1024) + b"}",
        headers={**headers, "content-type": "application/json"},
    )
    assert body.status_code == 413 and "2 MB" in body.json()["detail"]
    padded = [("files", (f"{n}.bin", bytes([n]) * 900_000, "image/jpeg")) for n in range(3)]  # 2.7 MB in all
    multipart = client.post(f"{API}/datasets/{dataset_id}/images", files=padded, headers=headers)
    assert multipart.status_code == 413 and "2 MB" in multipart.json()["detail"]
    assert healthy(client)


def test_empty_and_non_multipart_uploads(small):
    client, headers, dataset_id = small
    assert (
        client.post(f"{API}/datasets/{dataset_id}/images", json={"files": []}, headers=headers).status_code
        == 415  # a multipart route takes multipart only
    )
    empty = client.post(
        f"{API}/datasets/{dataset_id}/images", files=[("note", (None, "text"))], headers=headers
    )  # a form without files
    assert empty.status_code in (400, 422)
    assert healthy(client)


@pytest.mark.parametrize(
    ("ext", "fmt"), [(".jpg", "jpeg"), (".png", "png"), (".bmp", "bmp"), (".webp", "webp"), (".tiff", "tiff")]
)
def test_accepted_formats_are_stored_and_served_with_their_type(client, admin, ext, fmt):
    dataset = create_dataset(client, admin)
    data = image_bytes(80, 60, ext, seed=20)
    added = upload(client, admin, dataset["id"], [(f"x{ext}", data)])["added"]
    assert len(added) == 1
    image = added[0]
    assert (image["format"], image["width"], image["height"], image["size"]) == (fmt, 80, 60, len(data))
    file = client.get(f"{API}/images/{image['id']}/file", headers=admin)
    assert file.content == data
    mime = {
        "jpeg": "image/jpeg",
        "png": "image/png",
        "bmp": "image/bmp",
        "webp": "image/webp",
        "tiff": "image/tiff",
    }
    assert file.headers["content-type"] == mime[fmt]
    assert file.headers["x-content-type-options"] == "nosniff"
    thumb = client.get(f"{API}/images/{image['id']}/thumbnail", headers=admin)
    assert thumb.headers["content-type"] == "image/jpeg" and thumb.content[:3] == b"\xff\xd8\xff"


def test_duplicates_are_reported_not_stored_twice(client, admin, config):
    dataset = create_dataset(client, admin)
    data = image_bytes(seed=30)
    first = upload(client, admin, dataset["id"], [("one.jpg", data)])
    again = upload(client, admin, dataset["id"], [("copy.jpg", data)])
    assert again["added"] == [] and again["duplicates"][0]["image_id"] == first["added"][0]["id"]
    sha = first["added"][0]["sha256"]
    stored = list((config.data_path / "images").rglob(f"{sha}.*"))
    assert len(stored) == 1 and stored[0].read_bytes() == data
    assert not list((config.data_path / "images").rglob("*.tmp"))


def test_malformed_json_and_unknown_fields(client, admin):
    dataset = create_dataset(client, admin)
    url = f"{API}/datasets/{dataset['id']}"
    deep = b'{"classes": ' + b"[" * 2000 + b"]" * 2000 + b"}"  # 4 KB: past Python's recursion limit
    deeper = b"[" * 100_000 + b"]" * 100_000  # past msgspec's own
    for raw in (b"{", b"[1, 2", b"\xff\xfe", b"null", b'{"name": "a"} trailing', deep, deeper):
        response = client.patch(url, content=raw, headers={**admin, "content-type": "application/json"})
        assert response.status_code == 400, raw[:40]
    assert client.patch(url, json={"name": "b", "owner_id": 99}, headers=admin).status_code == 400
    assert client.patch(url, json={"is_public": "yes"}, headers=admin).status_code == 400
    assert client.patch(url, json={"name": "   "}, headers=admin).status_code == 422  # blank after strip
    assert client.post(f"{API}/datasets", json={"name": " "}, headers=admin).status_code == 422
    assert (
        client.post(
            f"{API}/auth/login", json={"username": "admin", "password": "x", "role": "admin"}
        ).status_code
        == 400
    )
    assert healthy(client)


def test_bad_boxes(client, admin):
    dataset = create_dataset(client, admin, classes=["bolt", "nut"])
    image = upload(client, admin, dataset["id"], [("a.jpg", image_bytes(64, 48, seed=40))])["added"][0]
    url = f"{API}/images/{image['id']}/annotations"

    def put(box: dict[str, Any], **extra: Any) -> Any:
        return client.put(url, json={"version": 0, "boxes": [box], **extra}, headers=admin)

    cases = [
        ({"class_id": 0, "x1": 10, "y1": 10, "x2": 65, "y2": 20}, 422, "outside"),  # past the right edge
        ({"class_id": 0, "x1": 10, "y1": 10, "x2": 20, "y2": 49}, 422, "outside"),  # past the bottom
        ({"class_id": 0, "x1": 10, "y1": 10, "x2": 10, "y2": 20}, 422, "greater"),  # zero width
        ({"class_id": 0, "x1": 30, "y1": 10, "x2": 20, "y2": 20}, 422, "greater"),  # negative width
        ({"class_id": 0, "x1": -1, "y1": 10, "x2": 20, "y2": 20}, 400, "x1"),  # negative coordinate
        ({"class_id": 2, "x1": 1, "y1": 1, "x2": 20, "y2": 20}, 422, "class 2"),  # unknown class id
        ({"class_id": -1, "x1": 1, "y1": 1, "x2": 20, "y2": 20}, 400, "class_id"),
        ({"class_id": 0, "x1": 1, "y1": 1, "x2": 20, "y2": 20, "angle": 5}, 400, "angle"),  # unknown field
        ({"class_id": 0, "x1": "a", "y1": 1, "x2": 20, "y2": 20}, 400, "x1"),
    ]
    for box, status_code, words in cases:
        response = put(box)
        assert response.status_code == status_code, (box, response.text)
        assert words in response.json()["detail"], (box, response.json())
        assert healthy(client)
    assert put({"class_id": 0, "x1": 1, "y1": 1, "x2": 2, "y2": 2}, status="done").status_code == 400
    nan = client.put(
        url,
        content=b'{"version": 0, "boxes": [{"class_id": 0, "x1": NaN, "y1": 1, "x2": 2, "y2": 2}]}',
        headers={**admin, "content-type": "application/json"},
    )
    assert nan.status_code == 400
    annotations = client.get(url, headers=admin).json()
    assert annotations["version"] == 0 and annotations["boxes"] == []  # nothing half-applied
    edge = put({"class_id": 1, "x1": 0, "y1": 0, "x2": 64, "y2": 48})  # the whole image is fine
    assert edge.status_code == 200 and edge.json()["version"] == 1
