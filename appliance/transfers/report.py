"""The report an import keeps while it runs: counters, skipped files and boxes with their reasons."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import msgspec

from appliance.transfers.contracts import ImportProgress, ImportResult, SkippedItem

REPORT_SKIPPED_MAX = 500  # skipped entries listed one by one in the report; the rest are counted
REASONS_MAX = 50  # distinct skip reasons kept in the result, most frequent first
NAME_MAX = 300  # characters of a skipped item's name kept in the report
REASON_MAX = 500


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class ImportReport:
    format: str = ""
    files_seen: int = 0
    images_total: int = 0
    processed: int = 0
    imported: int = 0
    duplicates: int = 0
    skipped: int = 0
    boxes: int = 0
    boxes_skipped: int = 0
    labels_applied: int = 0  # images already in the dataset, unlabeled, that got this import's labels
    classes_added: list[str] = field(default_factory=list)
    skipped_items: list[SkippedItem] = field(default_factory=list)
    skipped_reasons: Counter[str] = field(default_factory=Counter)

    def skip(self, name: str, reason: str, *, image: bool = True, boxes: int = 1) -> None:
        """Count a skipped image (image=True), or `boxes` boxes or a label problem, and list it while there
        is room. Reasons of skipped boxes start with "box skipped"."""
        box = reason.startswith("box skipped")
        if image:
            self.skipped += 1
        elif box:
            self.boxes_skipped += boxes
        # "box skipped: class 'x' ..." is counted under "box skipped", whatever the class.
        self.skipped_reasons[_cut(reason.split(":")[0] if box else reason, REASON_MAX)] += boxes if box else 1
        if len(self.skipped_items) < REPORT_SKIPPED_MAX:  # names and reasons from the source: bounded
            self.skipped_items.append(SkippedItem(name=_cut(name, NAME_MAX), reason=_cut(reason, REASON_MAX)))

    def progress(self) -> ImportProgress:
        return ImportProgress(
            format=self.format,
            files_seen=self.files_seen,
            images_total=self.images_total,
            processed=self.processed,
            imported=self.imported,
            duplicates=self.duplicates,
            skipped=self.skipped,
            boxes=self.boxes,
        )

    def result(self) -> ImportResult:
        return ImportResult(
            **msgspec.structs.asdict(self.progress()),
            boxes_skipped=self.boxes_skipped,
            labels_applied=self.labels_applied,
            classes_added=list(self.classes_added),
            skipped_items=list(self.skipped_items),
            skipped_reasons=dict(self.skipped_reasons.most_common(REASONS_MAX)),
        )
