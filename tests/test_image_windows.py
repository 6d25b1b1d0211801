"""Image list windows: before / around / offset next to after, with and without status and class filters."""

from __future__ import annotations

import random
from typing import Any

import pytest

from appliance.catalog import paging
from appliance.db import write_transaction
from tests.helpers import API, create_dataset, create_user

STATUSES = ("unlabeled", "labeled", "reviewed")
CLASSES = (0, 1, 2)
IMAGES = 300
LIMITS = (1, 7, 8)


def _assert_error(response: Any, status_code: int) -> str:
    assert response.status_code == status_code, response.text
    body = response.json()
    assert set(body) == {"status_code", "detail"} and body["status_code"] == status_code, body
    assert isinstance(body["detail"], str) and body["detail"]
    return body["detail"]


@pytest.fixture
def catalog(client, admin, fresh_db) -> dict[str, Any]:
    """Two datasets whose rows interleave (ids are not contiguous), statuses and classes at random.

    Rows go straight into SQLite (the triggers keep the counts, as for imports); the list API does not
    read the files. Returns the dataset id and, per filter, the image ids in list order.
    """
    dataset = create_dataset(client, admin, "windows", classes=["bolt", "nut", "washer"])
    other = create_dataset(client, admin, "other", classes=["bolt"])
    rnd = random.Random(7)
    now = "2026-01-01T00:00:00Z"
    members: dict[int, tuple[str, set[int]]] = {}
    with write_transaction(fresh_db):
        for n in range(IMAGES + IMAGES // 3):
            target = other["id"] if n % 4 == 3 else dataset["id"]
            file_id = fresh_db.execute(
                "INSERT INTO image_files (sha256, size, width, height, format, created_at) "
                "VALUES (?, 1, 64, 48, 'jpeg', ?)",
                [f"{n:064x}", now],
            ).lastrowid
            status = rnd.choice(STATUSES)
            image_id = fresh_db.execute(
                "INSERT INTO images (dataset_id, file_id, original_name, status, added_at) VALUES (?, ?, ?, ?, ?)",
                [target, file_id, f"{n}.jpg", status, now],
            ).lastrowid
            assert image_id is not None
            classes = {c for c in CLASSES if rnd.random() < 0.4} if status != "unlabeled" else set()
            for c in sorted(classes):
                for _ in range(rnd.randint(1, 2)):  # two boxes of one class: the image still counts once
                    fresh_db.execute(
                        "INSERT INTO annotations (image_id, dataset_id, class_id, x1, y1, x2, y2, size_bucket, "
                        "created_at) VALUES (?, ?, ?, 1, 1, 20, 20, 4, ?)",
                        [image_id, target, c, now],
                    )
            if target == dataset["id"]:
                members[image_id] = (status, classes)
    expected: dict[tuple[str | None, int | None], list[int]] = {}
    for status in (None, *STATUSES):
        for class_id in (None, *CLASSES):
            expected[(status, class_id)] = sorted(
                i
                for i, (s, cs) in members.items()
                if (status is None or s == status) and (class_id is None or class_id in cs)
            )
    assert len(expected[(None, None)]) == IMAGES
    return {"id": dataset["id"], "other": other["id"], "expected": expected}


def _page(client, headers, dataset_id: int, params: dict[str, Any]) -> dict[str, Any]:
    query = {k: v for k, v in params.items() if v is not None}
    response = client.get(f"{API}/datasets/{dataset_id}/images", params=query, headers=headers)
    assert response.status_code == 200, (params, response.text)
    return response.json()


def _check(page: dict[str, Any], ids: list[int], context: Any) -> list[int]:
    """The page is the slice of the list its offset says, with cursors exactly where more items exist."""
    got = [item["id"] for item in page["items"]]
    offset = page["offset"]
    assert page["total"] == len(ids), context
    assert got == ids[offset : offset + len(got)], (context, offset, got)
    if got:
        assert page["prev_cursor"] == (got[0] if offset > 0 else None), context
        assert page["next_cursor"] == (got[-1] if offset + len(got) < len(ids) else None), context
    return got


def test_after_before_and_around_agree_with_the_list_order(client, admin, catalog):
    dataset_id = catalog["id"]
    for (status, class_id), ids in catalog["expected"].items():
        base = {"status": status, "class_id": class_id}
        context = (status, class_id)
        # Forward from the start, then backward from the end: every page in place.
        for limit in (7, 50):
            seen: list[int] = []
            params: dict[str, Any] = {**base, "limit": limit}
            while True:
                page = _page(client, admin, dataset_id, params)
                assert page["offset"] == len(seen), context
                seen += _check(page, ids, context)
                if page["next_cursor"] is None:
                    break
                params = {**base, "limit": limit, "after": page["next_cursor"]}
            assert seen == ids, context
            backward: list[int] = []
            params = {**base, "limit": limit, "before": 10**9}
            while True:
                page = _page(client, admin, dataset_id, params)
                got = _check(page, ids, context)
                assert page["offset"] + len(got) + len(backward) == len(ids), context
                backward = got + backward
                if page["prev_cursor"] is None:
                    break
                params = {**base, "limit": limit, "before": page["prev_cursor"]}
            assert backward == ids, context
        if not ids:
            continue
        # A cursor needs not be in the list: the page starts or ends at the next id that is.
        for cursor in (ids[0] - 1, ids[len(ids) // 3] + 1, ids[-1], ids[-1] + 1000):
            page = _page(client, admin, dataset_id, {**base, "after": cursor, "limit": 7})
            assert page["offset"] == sum(1 for i in ids if i <= cursor), (context, cursor)
            _check(page, ids, (context, "after", cursor))
            page = _page(client, admin, dataset_id, {**base, "before": cursor + 1, "limit": 7})
            got = _check(page, ids, (context, "before", cursor))
            assert got == [i for i in ids if i <= cursor][-7:], (context, cursor)
        # Around: the image is in the page, about half the page before it where the list allows.
        picks = sorted(
            {0, 1, 3, len(ids) // 2, len(ids) - 4, len(ids) - 2, len(ids) - 1} & set(range(len(ids)))
        )
        for pos in picks:
            for limit in LIMITS:
                page = _page(client, admin, dataset_id, {**base, "around": ids[pos], "limit": limit})
                got = _check(page, ids, (context, "around", pos, limit))
                assert ids[pos] in got and len(got) == min(limit, len(ids)), (context, pos, limit)
                # As centred as the ends of the list allow.
                assert page["offset"] == max(0, min(pos - limit // 2, len(ids) - limit)), (
                    context,
                    pos,
                    limit,
                )


def test_around_an_image_outside_the_list_is_not_found(client, admin, catalog):
    dataset_id, expected = catalog["id"], catalog["expected"]
    everything = set(expected[(None, None)])
    unlabeled = expected[("unlabeled", None)][0]
    of_other = next(i for i in range(1, max(everything)) if i not in everything)  # a row of the other dataset
    url = f"{API}/datasets/{dataset_id}/images"
    for params in (
        {"around": unlabeled, "status": "labeled"},
        {"around": unlabeled, "class_id": 0},  # unlabeled images have no boxes
        {"around": of_other},
        {"around": 10**9},
    ):
        detail = _assert_error(client.get(url, params=params, headers=admin), 404)
        assert str(params["around"]) in detail, detail
    assert _page(client, admin, dataset_id, {"around": unlabeled})["items"]


def test_bad_cursors_get_a_clear_error(client, admin, catalog):
    url = f"{API}/datasets/{catalog['id']}/images"
    some = catalog["expected"][(None, None)][5]
    for params, needle, status in (
        ({"after": -1}, "after", 400),  # the document's ranges: 400
        ({"before": 0}, "before", 400),
        ({"before": -5}, "before", 400),
        ({"around": 0}, "around", 400),
        ({"around": "abc"}, "around", 400),
        ({"around": 2**63}, "around", 400),
        ({"around": some, "limit": 0}, "limit", 400),
        ({"before": some, "limit": 501}, "limit", 400),
        ({"after": some, "before": some + 10}, "after and before", 422),  # each allowed alone: 422
        ({"after": 0, "around": some}, "after and around", 422),
        ({"before": some, "around": some}, "before and around", 422),
    ):
        detail = _assert_error(client.get(url, params=params, headers=admin), status)
        assert needle in detail, (params, detail)


def test_windows_keep_the_dataset_access_rules(client, admin, catalog):
    some = catalog["expected"][(None, None)][10]
    labeler = create_user(client, admin, "lena", "labeler")
    url = f"{API}/datasets/{catalog['id']}/images"
    for params in ({"around": some}, {"before": some}, {"after": some}):
        _assert_error(client.get(url, params=params, headers=labeler), 404)  # someone else's private dataset
        client.cookies.clear()  # the logins above left a session cookie in the test client
        _assert_error(client.get(url, params=params), 401)


def test_offset_counts_are_index_range_scans(fresh_db, catalog):
    """EXPLAIN QUERY PLAN: the counts and id bounds behind `offset` only search indexes, never scan a table."""
    for status in (None, "labeled"):
        for class_id in (None, 1):
            scope = paging._Scope(catalog["id"], status, class_id)
            queries = [paging._bounds_sql(scope)]
            for op in ("<", ">="):
                sql, args = paging._count_sql(scope, op)
                queries.append((sql, [*args, 100]))
            for sql, args in queries:
                plan = [row[3] for row in fresh_db.execute("EXPLAIN QUERY PLAN " + sql, args)]
                searches = [step for step in plan if step.startswith(("SEARCH", "SCAN"))]
                assert searches, plan
                for step in searches:
                    assert (
                        "USING COVERING INDEX" in step
                        or "USING INTEGER PRIMARY KEY" in step
                        or step.startswith(("SCAN (subquery", "SCAN CONSTANT ROW"))
                    ), (scope, sql, plan)
