"""End to end: a real `appliance serve` on 127.0.0.1, driven over HTTP like the console and API clients."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.helpers import ADMIN, API, image_bytes


def test_setup_login_dataset_upload_annotate_stats(server):
    base = f"{server.url}{API}"
    with httpx.Client(base_url=base, timeout=30) as anonymous:
        assert anonymous.get("/health").json() == {"status": "ok"}
        assert anonymous.get("/auth/setup").json()["needs_setup"] is True
        assert anonymous.get("/datasets").status_code == 401
        assert anonymous.post("/auth/setup", json=ADMIN).status_code == 403  # no setup code
        assert anonymous.post("/auth/setup", json=server.setup_body()).status_code == 201
        assert anonymous.post("/auth/setup", json=server.setup_body()).status_code == 409
        login = anonymous.post("/auth/login", json=ADMIN)
        assert login.status_code == 200
        token = login.json()["access_token"]
        assert "httponly" in login.headers["set-cookie"].lower()

    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as api:
        dataset = api.post("/datasets", json={"name": "line 3", "classes": ["scratch", "dent"]}).json()
        files = [
            ("files", ("a.jpg", image_bytes(320, 240, seed=1), "image/jpeg")),
            ("files", ("b.png", image_bytes(320, 240, ".png", seed=2), "image/png")),
            ("files", ("a-copy.jpg", image_bytes(320, 240, seed=1), "image/jpeg")),
        ]
        uploaded = api.post(f"/datasets/{dataset['id']}/images", files=files)
        assert uploaded.status_code == 201, uploaded.text
        result = uploaded.json()
        assert len(result["added"]) == 2 and len(result["duplicates"]) == 1
        first, second = (item["id"] for item in result["added"])

        boxes = [
            {"class_id": 0, "x1": 10, "y1": 10, "x2": 100, "y2": 80},
            {"class_id": 1, "x1": 150, "y1": 20, "x2": 300, "y2": 200},
        ]
        put = api.put(f"/images/{first}/annotations", json={"version": 0, "boxes": boxes})
        assert put.status_code == 200 and put.json()["version"] == 1
        stale = api.put(f"/images/{first}/annotations", json={"version": 0, "boxes": []})
        assert stale.status_code == 409
        reviewed = api.put(
            f"/images/{second}/annotations", json={"version": 0, "boxes": boxes[:1], "status": "reviewed"}
        )
        assert reviewed.status_code == 200

        stats = api.get(f"/datasets/{dataset['id']}/stats").json()
        assert stats["images"] == 2 and stats["boxes"] == 3
        assert stats["by_status"] == {"unlabeled": 0, "labeled": 1, "reviewed": 1}
        assert [(c["name"], c["boxes"], c["images"]) for c in stats["classes"]] == [
            ("scratch", 2, 2),
            ("dent", 1, 1),
        ]
        page = api.get(f"/datasets/{dataset['id']}/images", params={"status": "reviewed"}).json()
        assert [item["id"] for item in page["items"]] == [second] and page["total"] == 1

        original = api.get(f"/images/{first}/file")
        assert original.content == image_bytes(320, 240, seed=1)
        assert original.headers["content-type"] == "image/jpeg"
        assert original.headers["x-content-type-options"] == "nosniff"
        thumbnail = api.get(f"/images/{first}/thumbnail")
        assert thumbnail.headers["content-type"] == "image/jpeg" and thumbnail.content[:3] == b"\xff\xd8\xff"
        assert api.post("/auth/logout").status_code == 204
        assert api.get("/datasets").status_code == 401

    data_dir: Path = server.data_dir
    sha = result["added"][0]["sha256"]
    assert (data_dir / "images" / sha[:2] / f"{sha}.jpg").exists()
    assert (data_dir / "thumbs" / sha[:2] / f"{sha}.jpg").exists()


def test_web_process_never_imports_torch(server):
    assert server.process is not None
    httpx.get(f"{server.url}{API}/health", timeout=10)
    maps = Path(f"/proc/{server.process.pid}/maps").read_text()
    assert "torch" not in maps and "ultralytics" not in maps
