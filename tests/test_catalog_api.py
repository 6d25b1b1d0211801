"""Datasets, uploads, annotations and stats through the real app on a SQLite file."""

from __future__ import annotations

import cv2
import numpy as np

from tests.helpers import API, create_dataset, image_bytes, upload


def test_dataset_upload_annotate_stats(client, admin):
    dataset = create_dataset(client, admin, classes=["bolt", "nut"])
    result = upload(
        client,
        admin,
        dataset["id"],
        [
            ("a.jpg", image_bytes(seed=1)),
            ("b.png", image_bytes(fmt=".png", seed=2)),
            ("a-again.jpg", image_bytes(seed=1)),
            ("notes.txt", b"hello"),
        ],
    )
    assert len(result["added"]) == 2
    assert [d["name"] for d in result["duplicates"]] == ["a-again.jpg"]
    assert result["rejected"][0]["status_code"] == 415
    image = result["added"][0]
    put = client.put(
        f"{API}/images/{image['id']}/annotations",
        headers=admin,
        json={"version": 0, "boxes": [{"class_id": 1, "x1": 1, "y1": 2, "x2": 30, "y2": 40}]},
    )
    assert put.status_code == 200, put.text
    assert put.json()["version"] == 1
    stale = client.put(
        f"{API}/images/{image['id']}/annotations", headers=admin, json={"version": 0, "boxes": []}
    )
    assert stale.status_code == 409
    stats = client.get(f"{API}/datasets/{dataset['id']}/stats", headers=admin).json()
    assert stats["by_status"] == {"unlabeled": 1, "labeled": 1, "reviewed": 0}
    assert stats["classes"][1]["boxes"] == 1 and stats["classes"][1]["images"] == 1
    page = client.get(f"{API}/datasets/{dataset['id']}/images", params={"class_id": 1}, headers=admin).json()
    assert [i["id"] for i in page["items"]] == [image["id"]]
    file = client.get(f"{API}/images/{image['id']}/file", headers=admin)
    assert (
        file.headers["content-type"] == "image/jpeg" and file.headers["x-content-type-options"] == "nosniff"
    )
    thumb = client.get(f"{API}/images/{image['id']}/thumbnail", headers=admin)
    assert thumb.headers["content-type"] == "image/jpeg" and thumb.content[:3] == b"\xff\xd8\xff"
    assert thumb.headers["x-content-type-options"] == "nosniff"
    assert "immutable" in thumb.headers["cache-control"]


def test_missing_thumbnail_is_made_again_from_the_original(client, admin, config):
    """A data dir from a version with WebP thumbnails (or a lost file) heals on first view, no 404."""
    dataset = create_dataset(client, admin)
    image = upload(client, admin, dataset["id"], [("big.png", image_bytes(640, 480, ".png", seed=5))])[
        "added"
    ][0]
    sha = image["sha256"]
    thumb = config.data_path / "thumbs" / sha[:2] / f"{sha}.jpg"
    assert thumb.stat().st_size > 0
    thumb.rename(thumb.with_suffix(".webp"))  # what an older version left behind
    response = client.get(f"{API}/images/{image['id']}/thumbnail", headers=admin)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg" and response.content == thumb.read_bytes()
    decoded = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape[:2] == (192, 256)  # at most thumbnail_px on the long side, aspect kept
    assert not list(thumb.parent.glob(".*.tmp"))
    # Deleting the image removes both the new thumbnail and the legacy one.
    assert client.delete(f"{API}/images/{image['id']}", headers=admin).status_code == 204
    assert not thumb.exists() and not thumb.with_suffix(".webp").exists()


# --- keyset pagination, filters, counts kept by triggers --------------------------------------


def _put(client, headers, image_id: int, boxes: list[tuple[int, float, float, float, float]], status=None):
    current = client.get(f"{API}/images/{image_id}/annotations", headers=headers).json()["version"]
    body = {
        "version": current,
        "boxes": [{"class_id": c, "x1": x1, "y1": y1, "x2": x2, "y2": y2} for c, x1, y1, x2, y2 in boxes],
    }
    if status:
        body["status"] = status
    response = client.put(f"{API}/images/{image_id}/annotations", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def _all_pages(client, headers, dataset_id: int, **params) -> tuple[list[int], list[int]]:
    ids: list[int] = []
    totals: list[int] = []
    after = 0
    while True:
        page = client.get(
            f"{API}/datasets/{dataset_id}/images",
            params={**params, "after": after, "limit": 3},
            headers=headers,
        ).json()
        ids += [item["id"] for item in page["items"]]
        totals.append(page["total"])
        assert len(page["items"]) <= 3
        if page["next_cursor"] is None:
            return ids, totals
        assert page["next_cursor"] == page["items"][-1]["id"]
        after = page["next_cursor"]


def _truth(db, dataset_id: int) -> dict[str, object]:
    """Counts recomputed from scratch, to compare with what the triggers kept."""
    status = dict(
        db.execute("SELECT status, COUNT(*) FROM images WHERE dataset_id = ? GROUP BY status", [dataset_id])
    )
    per_class = {
        c: (b, i)
        for c, b, i in db.execute(
            "SELECT class_id, COUNT(*), COUNT(DISTINCT image_id) FROM annotations WHERE dataset_id = ? GROUP BY class_id",
            [dataset_id],
        )
    }
    kept = {
        (c, s): n
        for c, s, n in db.execute(
            "SELECT class_id, status, images FROM dataset_class_status_stats WHERE dataset_id = ? AND images != 0",
            [dataset_id],
        )
    }
    real = {
        (c, s): n
        for c, s, n in db.execute(
            "SELECT a.class_id, i.status, COUNT(DISTINCT a.image_id) FROM annotations a JOIN images i ON i.id = a.image_id "
            "WHERE a.dataset_id = ? GROUP BY a.class_id, i.status",
            [dataset_id],
        )
    }
    assert kept == real
    return {"status": status, "per_class": per_class}


def _check_stats(client, headers, db, dataset_id: int) -> dict:
    stats = client.get(f"{API}/datasets/{dataset_id}/stats", headers=headers).json()
    truth = _truth(db, dataset_id)
    assert stats["by_status"] == {s: truth["status"].get(s, 0) for s in ("unlabeled", "labeled", "reviewed")}
    assert stats["images"] == sum(truth["status"].values())
    for entry in stats["classes"]:
        assert (entry["boxes"], entry["images"]) == truth["per_class"].get(entry["class_id"], (0, 0))
    assert stats["boxes"] == sum(b for b, _ in truth["per_class"].values())
    assert sum(bucket["boxes"] for bucket in stats["box_sizes"]) == stats["boxes"]
    return stats


def test_keyset_pagination_and_filters_across_pages(client, admin, fresh_db):
    dataset = create_dataset(client, admin, classes=["bolt", "nut", "washer"])
    added = upload(
        client, admin, dataset["id"], [(f"{n}.png", image_bytes(fmt=".png", seed=10 + n)) for n in range(10)]
    )
    ids = [item["id"] for item in added["added"]]
    assert len(ids) == 10
    # image k gets class k % 3 (and class 2 as well when k is even); status alternates.
    expected_class: dict[int, list[int]] = {0: [], 1: [], 2: []}
    expected_status: dict[str, list[int]] = {"unlabeled": [], "labeled": [], "reviewed": []}
    for k, image_id in enumerate(ids):
        if k == 9:
            expected_status["unlabeled"].append(image_id)
            continue
        boxes = [(k % 3, 1, 1, 20, 20)] + ([(2, 5, 5, 30, 30)] if k % 2 == 0 else [])
        status = "reviewed" if k % 4 == 0 else "labeled"
        _put(client, admin, image_id, boxes, status)
        expected_status[status].append(image_id)
        for c in {b[0] for b in boxes}:
            expected_class[c].append(image_id)
    everything, totals = _all_pages(client, admin, dataset["id"])
    assert everything == ids and set(totals) == {10}
    for status, wanted in expected_status.items():
        got, totals = _all_pages(client, admin, dataset["id"], status=status)
        assert got == wanted and set(totals) == {len(wanted)}, status
    for class_id, wanted in expected_class.items():
        got, totals = _all_pages(client, admin, dataset["id"], class_id=class_id)
        assert got == sorted(wanted) and set(totals) == {len(wanted)}, class_id
        for status, in_status in expected_status.items():
            both = sorted(set(wanted) & set(in_status))
            got, totals = _all_pages(client, admin, dataset["id"], class_id=class_id, status=status)
            assert got == both and set(totals) == {len(both)}, (class_id, status)
    unknown = client.get(f"{API}/datasets/{dataset['id']}/images", params={"status": "done"}, headers=admin)
    assert unknown.status_code == 400
    _check_stats(client, admin, fresh_db, dataset["id"])


def test_stats_follow_edits_and_deletes(client, admin, fresh_db):
    dataset = create_dataset(client, admin, classes=["bolt", "nut"])
    other = create_dataset(client, admin, "other", classes=["bolt"])
    images = upload(client, admin, dataset["id"], [(f"{n}.jpg", image_bytes(seed=40 + n)) for n in range(4)])[
        "added"
    ]
    shared = upload(client, admin, other["id"], [("0.jpg", image_bytes(seed=40))])["added"][0]  # same file
    a, b, c, d = (image["id"] for image in images)
    _put(client, admin, a, [(0, 0, 0, 10, 10), (0, 10, 10, 40, 40), (1, 0, 0, 60, 40)])
    _put(client, admin, b, [(1, 0, 0, 5, 5)], "reviewed")
    _put(client, admin, shared["id"], [(0, 0, 0, 10, 10)])
    stats = _check_stats(client, admin, fresh_db, dataset["id"])
    assert stats["by_status"] == {"unlabeled": 2, "labeled": 1, "reviewed": 1}
    assert [(s["boxes"], s["images"]) for s in stats["classes"]] == [(2, 1), (2, 2)]
    _put(client, admin, a, [(1, 0, 0, 10, 10)], "reviewed")  # class 0 leaves image a
    stats = _check_stats(client, admin, fresh_db, dataset["id"])
    assert [(s["boxes"], s["images"]) for s in stats["classes"]] == [(0, 0), (2, 2)]
    _put(client, admin, c, [])  # no boxes, but looked at
    assert _check_stats(client, admin, fresh_db, dataset["id"])["by_status"]["labeled"] == 1
    assert client.delete(f"{API}/images/{b}", headers=admin).status_code == 204
    stats = _check_stats(client, admin, fresh_db, dataset["id"])
    assert stats["images"] == 3 and stats["classes"][1]["images"] == 1
    page = client.get(f"{API}/datasets/{dataset['id']}/images", params={"class_id": 1}, headers=admin).json()
    assert [item["id"] for item in page["items"]] == [a] and page["total"] == 1
    assert client.get(f"{API}/datasets/{dataset['id']}", headers=admin).json()["image_count"] == 3
    # The file of image a is shared with the other dataset: deleting this dataset keeps it there.
    assert client.delete(f"{API}/datasets/{dataset['id']}", headers=admin).status_code == 204
    assert client.get(f"{API}/datasets/{dataset['id']}/stats", headers=admin).status_code == 404
    assert client.get(f"{API}/images/{shared['id']}/file", headers=admin).status_code == 200
    other_stats = _check_stats(client, admin, fresh_db, other["id"])
    assert other_stats["classes"][0]["boxes"] == 1 and other_stats["by_status"]["labeled"] == 1
    del d


def test_dataset_class_edits(client, admin):
    dataset = create_dataset(client, admin, classes=["bolt", "nut", "washer"])
    image = upload(client, admin, dataset["id"], [("a.jpg", image_bytes(seed=70))])["added"][0]
    _put(client, admin, image["id"], [(1, 0, 0, 10, 10)])
    url = f"{API}/datasets/{dataset['id']}"
    renamed = client.patch(
        url,
        json={"classes": ["bolt", "hex nut", "washer", {"name": "pin", "color": "#00ff00"}]},
        headers=admin,
    )
    assert renamed.status_code == 200
    assert [(c["name"], c["color"]) for c in renamed.json()["classes"]][1:] == [
        ("hex nut", renamed.json()["classes"][1]["color"]),
        ("washer", renamed.json()["classes"][2]["color"]),
        ("pin", "#00ff00"),
    ]
    assert (
        client.patch(url, json={"classes": ["bolt", "hex nut"]}, headers=admin).status_code == 200
    )  # unused
    blocked = client.patch(url, json={"classes": ["bolt"]}, headers=admin)
    assert blocked.status_code == 409 and "class 1" in blocked.json()["detail"]
    assert client.patch(url, json={"classes": ["a", "A"]}, headers=admin).status_code == 422
    assert (
        client.patch(url, json={"classes": [{"name": "x", "color": "red"}]}, headers=admin).status_code == 400
    )
    _put(client, admin, image["id"], [])
    assert client.patch(url, json={"classes": ["bolt"]}, headers=admin).status_code == 200
    wrong_class = client.put(
        f"{API}/images/{image['id']}/annotations",
        json={"version": 2, "boxes": [{"class_id": 1, "x1": 0, "y1": 0, "x2": 5, "y2": 5}]},
        headers=admin,
    )
    assert wrong_class.status_code == 422


def test_upload_rewrites_a_file_a_concurrent_delete_removed(client, admin, config, monkeypatch):
    """Delete of the last copy unlinks the file; an upload of the same bytes racing it still ends with its file."""
    import appliance.catalog.files as catalog_files

    dataset = create_dataset(client, admin)
    data = image_bytes(seed=90)
    original = catalog_files.store_image_file
    calls = []

    def store_then_lose_it(store, cfg, blob):
        prepared = original(store, cfg, blob)
        if not calls:  # between the check and the catalog transaction, a delete unlinks the file
            store.image_path(prepared.sha256, "jpg").unlink()
        calls.append(prepared.sha256)
        return prepared

    monkeypatch.setattr(catalog_files, "store_image_file", store_then_lose_it)
    image = upload(client, admin, dataset["id"], [("a.jpg", data)])["added"][0]
    assert len(calls) == 2
    assert client.get(f"{API}/images/{image['id']}/file", headers=admin).content == data
