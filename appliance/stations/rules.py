"""The rule engine: zones (point in polygon of a box's centre), counts per zone and class, rules, verdicts,
and the debounce of continuous mode. Pure functions over the camera's settings and the detector's boxes.

Zone membership is the box centre's: a part is "in" the zone its middle is in, whatever its size, so one
part is counted in one zone of a tiling and a box grazing a zone's edge is not. A centre exactly on an edge
counts for the zone on its left/upper side (the half-open crossing rule), again so that tiles never count
a part twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from appliance.errors import Invalid
from appliance.inference.pipeline import Detection
from appliance.stations.contracts import WHOLE_FRAME, Verdict
from appliance.stations.schemas import CameraSettings, Rule, Zone


def point_in_polygon(x: float, y: float, points: Sequence[tuple[float, float]]) -> bool:
    """Crossing-number test; half-open on edges (see the module docstring)."""
    inside = False
    n = len(points)
    j = n - 1
    for i in range(n):
        xi, yi = points[i]
        xj, yj = points[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            inside = not inside
        j = i
    return inside


def centre(box: Detection) -> tuple[float, float]:
    return (box.x1 + box.x2) / 2, (box.y1 + box.y2) / 2


def zones_of(box: Detection, zones: Iterable[Zone]) -> list[str]:
    x, y = centre(box)
    return [zone.name for zone in zones if point_in_polygon(x, y, zone.points)]


def count_by_zone(detections: Sequence[Detection], zones: Sequence[Zone]) -> dict[str, dict[str, int]]:
    """{"*": {class: n}, zone: {class: n}, ...} over every detection given (a zone with none is {})."""
    counts: dict[str, dict[str, int]] = {WHOLE_FRAME: {}}
    for zone in zones:
        counts[zone.name] = {}
    for box in detections:
        for key in (WHOLE_FRAME, *zones_of(box, zones)):
            per_class = counts[key]
            per_class[box.class_name] = per_class.get(box.class_name, 0) + 1
    return counts


def rule_count(rule: Rule, detections: Sequence[Detection], zones: dict[str, Zone]) -> int:
    wanted = {c.lower() for c in rule.classes}
    zone = zones.get(rule.zone) if rule.zone is not None else None
    n = 0
    for box in detections:
        if box.confidence < rule.min_confidence:
            continue
        if wanted and box.class_name.lower() not in wanted:
            continue
        if zone is not None and not point_in_polygon(*centre(box), zone.points):
            continue
        n += 1
    return n


def rule_holds(rule: Rule, n: int) -> bool:
    condition = rule.condition
    if condition == "present":
        return n >= 1
    if condition == "absent":
        return n == 0
    if condition == "==":
        return n == rule.count
    if condition == ">=":
        return n >= rule.count
    if condition == "<=":
        return n <= rule.count
    # between: count..max_count, both included (validated: max_count is set and not below count)
    return rule.count <= n <= (rule.max_count if rule.max_count is not None else rule.count)


@dataclass
class Evaluation:
    verdict: Verdict
    failing_rules: list[str]
    counts: dict[str, dict[str, int]]
    rule_counts: dict[str, int] = field(default_factory=dict)


def evaluate(rules: Sequence[Rule], zones: Sequence[Zone], detections: Sequence[Detection]) -> Evaluation:
    """All rules hold -> ok; otherwise ng with the failing rules named in rule order. No rules -> ok."""
    by_name = {zone.name: zone for zone in zones}
    failing: list[str] = []
    rule_counts: dict[str, int] = {}
    for rule in rules:
        n = rule_count(rule, detections, by_name)
        rule_counts[rule.name] = n
        if not rule_holds(rule, n):
            failing.append(rule.name)
    return Evaluation("ng" if failing else "ok", failing, count_by_zone(detections, zones), rule_counts)


class Debouncer:
    """Continuous mode: a verdict becomes current once it held for `frames` frames in a row.

    `feed` returns the new current verdict when it changes (the first established verdict included), else
    None; a flicker shorter than `frames` never produces an event.
    """

    def __init__(self, frames: int) -> None:
        self.frames = max(1, frames)
        self.current: Verdict | None = None
        self._candidate: Verdict | None = None
        self._run = 0

    def feed(self, verdict: Verdict) -> Verdict | None:
        if verdict == self._candidate:
            self._run += 1
        else:
            self._candidate, self._run = verdict, 1
        if self._run >= self.frames and verdict != self.current:
            self.current = verdict
            return verdict
        return None


# --- validation on write ---------------------------------------------------------------------------


def _polygon_area(points: Sequence[tuple[float, float]]) -> float:
    return 0.5 * abs(
        sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(points, [*points[1:], points[0]], strict=True))
    )


def validate_zones_and_rules(settings: CameraSettings) -> None:
    """422 naming the field: unique zone and rule names, zones with an area, rules that can be evaluated."""
    zone_names: set[str] = set()
    for i, zone in enumerate(settings.zones):
        where = f"settings.zones[{i}]"
        if zone.name == WHOLE_FRAME:
            raise Invalid(f"{where}.name: '{WHOLE_FRAME}' means the whole frame; choose another name")
        if zone.name in zone_names:
            raise Invalid(f"{where}.name: another zone is already called {zone.name!r}")
        zone_names.add(zone.name)
        if _polygon_area(zone.points) < 1.0:
            raise Invalid(f"{where}.points: the polygon has no area (points in a line or repeated)")
    rule_names: set[str] = set()
    for i, rule in enumerate(settings.rules):
        where = f"settings.rules[{i}]"
        if rule.name in rule_names:
            raise Invalid(f"{where}.name: another rule is already called {rule.name!r}")
        rule_names.add(rule.name)
        if rule.zone is not None and rule.zone not in zone_names:
            raise Invalid(f"{where}.zone: no zone named {rule.zone!r} on this camera")
        if rule.condition == "between":
            if rule.max_count is None:
                raise Invalid(
                    f"{where}.max_count: a 'between' rule needs max_count, and passes while the number found is "
                    "from count to max_count"
                )
            if rule.max_count < rule.count:
                raise Invalid(f"{where}.max_count: must be at least count ({rule.count})")
        elif rule.max_count is not None:
            raise Invalid(f"{where}.max_count: only 'between' takes max_count")
        if any(not c.strip() for c in rule.classes):
            raise Invalid(f"{where}.classes: a class name is empty")


__all__ = [
    "Debouncer",
    "Evaluation",
    "count_by_zone",
    "evaluate",
    "point_in_polygon",
    "rule_count",
    "rule_holds",
    "validate_zones_and_rules",
]
