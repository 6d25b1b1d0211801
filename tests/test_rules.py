"""The rule engine: point in polygon, counts per zone and class, conditions, verdicts, debounce (unit + hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.errors import Invalid
from appliance.inference.pipeline import Detection
from appliance.stations.rules import (
    Debouncer,
    count_by_zone,
    evaluate,
    point_in_polygon,
    rule_count,
    rule_holds,
    validate_zones_and_rules,
)
from appliance.stations.schemas import CameraSettings, Rule, Zone


def box(cls: str, cx: float, cy: float, conf: float = 0.9, half: float = 5) -> Detection:
    return Detection(0, cls, conf, cx - half, cy - half, cx + half, cy + half)


LEFT = Zone("left", [(0, 0), (100, 0), (100, 100), (0, 100)])
RIGHT = Zone("right", [(100, 0), (200, 0), (200, 100), (100, 100)])
TRIANGLE = Zone("tri", [(0, 0), (100, 0), (0, 100)])


# --- unit -----------------------------------------------------------------------------------------------


def test_point_in_polygon_convex_concave_and_edges() -> None:
    assert point_in_polygon(10, 10, TRIANGLE.points)
    assert not point_in_polygon(60, 60, TRIANGLE.points)
    # A concave "U": the notch is outside.
    u = [(0, 0), (30, 0), (30, 20), (20, 20), (20, 10), (10, 10), (10, 20), (0, 20)]
    assert point_in_polygon(5, 15, u) and point_in_polygon(25, 15, u)
    assert not point_in_polygon(15, 15, u)
    # A centre on the shared edge of two tiles counts in exactly one of them.
    on_edge = box("part", 100, 50)
    assert (
        count_by_zone([on_edge], [LEFT, RIGHT])["left"] == {}
        or count_by_zone([on_edge], [LEFT, RIGHT])["right"] == {}
    )
    both = count_by_zone([on_edge], [LEFT, RIGHT])
    assert sum(sum(v.values()) for k, v in both.items() if k != "*") == 1


def test_counts_per_zone_and_class() -> None:
    dets = [box("screw", 50, 50), box("screw", 150, 50), box("nut", 150, 50), box("nut", 300, 300)]
    counts = count_by_zone(dets, [LEFT, RIGHT])
    assert counts == {
        "*": {"screw": 2, "nut": 2},
        "left": {"screw": 1},
        "right": {"screw": 1, "nut": 1},
    }


def test_each_condition_and_the_verdict() -> None:
    dets = [box("screw", 50, 50, 0.9), box("screw", 60, 60, 0.4), box("nut", 150, 50, 0.8)]
    zones = {"left": LEFT, "right": RIGHT}
    two_screws = Rule(
        name="two screws", zone="left", classes=["screw"], condition="==", count=2, min_confidence=0.3
    )
    assert rule_count(two_screws, dets, zones) == 2 and rule_holds(two_screws, 2)
    confident = Rule(name="c", zone="left", classes=["Screw"], condition=">=", count=2, min_confidence=0.5)
    assert rule_count(confident, dets, zones) == 1 and not rule_holds(confident, 1)  # class names: any case
    assert rule_holds(Rule(name="a", condition="<=", count=1), 1)
    assert not rule_holds(Rule(name="a", condition="<=", count=1), 2)
    between = Rule(name="b", condition="between", count=2, max_count=3)
    assert [rule_holds(between, n) for n in range(5)] == [False, False, True, True, False]
    assert rule_holds(Rule(name="p"), 1) and not rule_holds(Rule(name="p"), 0)
    assert rule_holds(Rule(name="x", condition="absent"), 0) and not rule_holds(
        Rule(name="x", condition="absent"), 3
    )

    rules = [
        two_screws,
        Rule(name="no nut right", zone="right", classes=["nut"], condition="absent"),
        confident,
    ]
    result = evaluate(rules, [LEFT, RIGHT], dets)
    assert result.verdict == "ng" and result.failing_rules == ["no nut right", "c"]
    assert result.rule_counts == {"two screws": 2, "no nut right": 1, "c": 1}
    assert evaluate([], [], dets).verdict == "ok"
    assert evaluate([two_screws], [LEFT], dets).verdict == "ok"


def test_debounce_needs_the_verdict_to_hold() -> None:
    d = Debouncer(3)
    fed = [d.feed(v) for v in ["ok", "ok", "ok", "ng", "ng", "ok", "ng", "ng", "ng", "ng"]]
    assert fed == [None, None, "ok", None, None, None, None, None, "ng", None]
    assert d.current == "ng"
    assert [Debouncer(1).feed("ng")] == ["ng"]


def test_validation_names_the_field() -> None:
    cases = [
        (CameraSettings(zones=[LEFT, LEFT]), "settings.zones[1].name"),
        (CameraSettings(zones=[Zone("*", LEFT.points)]), "settings.zones[0].name"),
        (CameraSettings(zones=[Zone("flat", [(0, 0), (10, 10), (20, 20)])]), "settings.zones[0].points"),
        (CameraSettings(rules=[Rule(name="r", zone="nowhere")]), "settings.rules[0].zone"),
        (CameraSettings(rules=[Rule(name="r"), Rule(name="r")]), "settings.rules[1].name"),
        (CameraSettings(rules=[Rule(name="r", condition="between", count=2)]), "settings.rules[0].max_count"),
        (
            CameraSettings(rules=[Rule(name="r", condition="between", count=3, max_count=2)]),
            "settings.rules[0].max_count",
        ),
        (CameraSettings(rules=[Rule(name="r", condition=">=", max_count=2)]), "settings.rules[0].max_count"),
        (CameraSettings(rules=[Rule(name="r", classes=[" "])]), "settings.rules[0].classes"),
    ]
    for settings_, field in cases:
        with pytest.raises(Invalid) as refused:
            validate_zones_and_rules(settings_)
        assert refused.value.detail.startswith(field + ":"), refused.value.detail
    validate_zones_and_rules(
        CameraSettings(
            zones=[LEFT], rules=[Rule(name="r", zone="left", condition="between", count=1, max_count=4)]
        )
    )


# --- properties -------------------------------------------------------------------------------------------

coord = st.integers(min_value=0, max_value=1000)
classes = st.sampled_from(["screw", "nut", "washer"])
detections = st.lists(
    st.builds(
        lambda c, x, y, conf: box(c, x, y, conf), classes, coord, coord, st.floats(min_value=0, max_value=1)
    ),
    max_size=30,
)


@st.composite
def rectangles(draw: st.DrawFn) -> tuple[int, int, int, int]:
    x1, x2 = sorted(draw(st.lists(coord, min_size=2, max_size=2, unique=True)))
    y1, y2 = sorted(draw(st.lists(coord, min_size=2, max_size=2, unique=True)))
    return x1, y1, x2, y2


@st.composite
def polygons(draw: st.DrawFn) -> list[tuple[float, float]]:
    return draw(st.lists(st.tuples(coord, coord), min_size=3, max_size=12, unique=True))


@settings(max_examples=300, deadline=None)
@given(rectangles(), coord, coord)
def test_rectangle_membership_is_the_half_open_bounds_check(
    rect: tuple[int, int, int, int], x: int, y: int
) -> None:
    x1, y1, x2, y2 = rect
    points = [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]
    # Half-open: the left and top edges are in, the right and bottom edges out.
    assert point_in_polygon(x + 0.5, y + 0.5, points) == (x1 <= x + 0.5 < x2 and y1 <= y + 0.5 < y2)


@settings(max_examples=300, deadline=None)
@given(polygons(), st.integers(0, 11), coord, coord, st.integers(-500, 500), st.integers(-500, 500))
def test_membership_ignores_start_vertex_and_orientation_and_moves_with_the_polygon(
    points: list[tuple[float, float]], shift: int, x: int, y: int, dx: int, dy: int
) -> None:
    px, py = x + 0.25, y + 0.75  # never on a vertex of an integer polygon
    inside = point_in_polygon(px, py, points)
    k = shift % len(points)
    assert point_in_polygon(px, py, points[k:] + points[:k]) == inside
    assert point_in_polygon(px, py, points[::-1]) == inside
    moved = [(a + dx, b + dy) for a, b in points]
    assert point_in_polygon(px + dx, py + dy, moved) == inside


@settings(max_examples=200, deadline=None)
@given(detections, rectangles())
def test_counts_add_up(dets: list[Detection], rect: tuple[int, int, int, int]) -> None:
    x1, y1, x2, y2 = rect
    zone = Zone("z", [(x1, y1), (x2, y1), (x2, y2), (x1, y2)])
    everything = Zone("all", [(-10, -10), (2000, -10), (2000, 2000), (-10, 2000)])
    counts = count_by_zone(dets, [zone, everything])
    assert sum(counts["*"].values()) == len(dets)
    assert counts["all"] == counts["*"]
    for name, n in counts["z"].items():
        assert n <= counts["*"][name]
    assert sum(counts["z"].values()) == rule_count(
        Rule(name="r", zone="z", min_confidence=0), dets, {"z": zone}
    )


@settings(max_examples=200, deadline=None)
@given(detections, st.floats(0, 1), st.floats(0, 1), st.lists(classes, max_size=2))
def test_raising_the_confidence_never_counts_more(
    dets: list[Detection], a: float, b: float, wanted: list[str]
) -> None:
    low, high = sorted((a, b))
    n_low = rule_count(Rule(name="r", classes=wanted, min_confidence=low), dets, {})
    n_high = rule_count(Rule(name="r", classes=wanted, min_confidence=high), dets, {})
    assert n_high <= n_low
    assert n_low == sum(1 for d in dets if d.confidence >= low and (not wanted or d.class_name in wanted))


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 50), st.integers(0, 50), st.integers(0, 50))
def test_conditions_agree_with_each_other(n: int, a: int, b: int) -> None:
    lo, hi = sorted((a, b))
    holds = lambda **kw: rule_holds(Rule(name="r", **kw), n)  # noqa: E731
    assert holds(condition="present") == holds(condition=">=", count=1)
    assert holds(condition="absent") == holds(condition="==", count=0) == holds(condition="<=", count=0)
    assert holds(condition="between", count=lo, max_count=hi) == (
        holds(condition=">=", count=lo) and holds(condition="<=", count=hi)
    )
    assert holds(condition="==", count=a) == (
        holds(condition=">=", count=a) and holds(condition="<=", count=a)
    )


@settings(max_examples=200, deadline=None)
@given(
    detections,
    st.lists(st.tuples(classes, st.sampled_from(["present", "absent", ">="]), st.integers(0, 5)), max_size=6),
)
def test_verdict_is_ok_exactly_when_no_rule_fails(
    dets: list[Detection], specs: list[tuple[str, str, int]]
) -> None:
    rules = [Rule(name=f"r{i}", classes=[c], condition=cond, count=n) for i, (c, cond, n) in enumerate(specs)]  # type: ignore[arg-type]
    result = evaluate(rules, [], dets)
    expected = [r.name for r in rules if not rule_holds(r, rule_count(r, dets, {}))]
    assert result.failing_rules == expected
    assert (result.verdict == "ok") == (not expected)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 6), st.lists(st.sampled_from(["ok", "ng"]), max_size=80))
def test_debounce_emits_only_held_changes(frames: int, verdicts: list[str]) -> None:
    d = Debouncer(frames)
    emitted: list[tuple[int, str]] = []
    for i, v in enumerate(verdicts):
        out = d.feed(v)  # type: ignore[arg-type]
        if out is not None:
            emitted.append((i, out))
    # Each emission is a change, and the verdict held for `frames` frames up to and including it.
    for k, (i, v) in enumerate(emitted):
        assert i + 1 >= frames and all(x == v for x in verdicts[i + 1 - frames : i + 1])
        if k:
            assert emitted[k - 1][1] != v
    # Every run of at least `frames` equal verdicts that differs from the last emitted one is emitted.
    runs: list[tuple[str, int]] = []
    for v in verdicts:
        if runs and runs[-1][0] == v:
            runs[-1] = (v, runs[-1][1] + 1)
        else:
            runs.append((v, 1))
    expected: list[str] = []
    for v, length in runs:
        if length >= frames and (not expected or expected[-1] != v):
            expected.append(v)
    assert [v for _, v in emitted] == expected
