"""Datasets, uploads, annotations and stats through the real app on a SQLite file."""

from __future__ import annotations

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
    assert thumb.content[:4] == b"RIFF"
