"""How two models' results on one frame differ: their verdicts under the same rules, and their boxes.

Pure functions, used by the camera process's shadow thread; an inspection "agrees" when both verdicts are
the same (what the line would do with the part); the box difference says why they might not.
"""

from __future__ import annotations

from collections.abc import Sequence

from appliance.inference.pipeline import Detection
from appliance.shadow.contracts import BoxDifference

SAME_BOX_IOU = 0.5


def iou(a: Detection, b: Detection) -> float:
    w = min(a.x2, b.x2) - max(a.x1, b.x1)
    h = min(a.y2, b.y2) - max(a.y1, b.y1)
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter
    return inter / union if union > 0 else 0.0


def _greedy_pairs(
    deployed: Sequence[Detection],
    candidate: Sequence[Detection],
    free_d: set[int],
    free_c: set[int],
    same_class: bool,
) -> list[tuple[int, int, float]]:
    """Pairs of free boxes overlapping at least SAME_BOX_IOU, best overlap first, each box used once."""
    scored = []
    for i in free_d:
        for j in free_c:
            if (deployed[i].class_name.lower() == candidate[j].class_name.lower()) != same_class:
                continue
            overlap = iou(deployed[i], candidate[j])
            if overlap >= SAME_BOX_IOU:
                scored.append((overlap, i, j))
    pairs = []
    for overlap, i, j in sorted(scored, key=lambda s: (-s[0], s[1], s[2])):
        if i in free_d and j in free_c:
            free_d.discard(i)
            free_c.discard(j)
            pairs.append((i, j, overlap))
    return pairs


def box_difference(deployed: Sequence[Detection], candidate: Sequence[Detection]) -> BoxDifference:
    free_d, free_c = set(range(len(deployed))), set(range(len(candidate)))
    matched = _greedy_pairs(deployed, candidate, free_d, free_c, same_class=True)
    changed = _greedy_pairs(deployed, candidate, free_d, free_c, same_class=False)
    return BoxDifference(
        matched=len(matched),
        deployed_only=sorted(free_d),
        candidate_only=sorted(free_c),
        class_changed=sorted((i, j) for i, j, _ in changed),
        mean_iou=round(sum(o for _, _, o in matched) / len(matched), 4) if matched else None,
    )
