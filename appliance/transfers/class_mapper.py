"""Class names met in an import -> the dataset's class ids, appending unknown names or leaving them out."""

from __future__ import annotations

from collections.abc import Iterable

from appliance import catalog
from appliance.classes import ClassEntry, default_color, dump_classes, parse_classes
from appliance.clock import now_iso
from appliance.db import Database
from appliance.errors import Invalid
from appliance.transfers.report import ImportReport
from appliance.transfers.schemas import UnknownClasses

MAX_CLASSES = 1000  # as DatasetCreate/DatasetUpdate allow


class ClassMapper:
    """Class names (case-insensitive) -> the dataset's class ids; unknown names are appended or left out.

    Declared classes (data.yaml, categories) are mapped first, in their order; names met later in label
    files are mapped batch by batch, inside that batch's transaction.
    """

    def __init__(self, dataset_id: int, unknown: UnknownClasses, report: ImportReport) -> None:
        self.dataset_id = dataset_id
        self.unknown = unknown
        self.report = report
        self.ids: dict[str, int] = {}
        self.looked_up: set[str] = set()

    def get(self, name: str) -> int | None:
        return self.ids.get(name.strip().lower())

    def add(self, db: Database, names: Iterable[str]) -> None:
        """Map names not looked up yet (call inside a write transaction)."""
        needed: list[str] = []
        for name in names:
            clean = name.strip()
            if clean and clean.lower() not in self.looked_up:
                self.looked_up.add(clean.lower())
                needed.append(clean)
        if not needed and self.ids:
            return
        row = catalog.dataset_row(db, self.dataset_id)
        classes = parse_classes(row["classes"])
        self.ids = {c.name.lower(): i for i, c in enumerate(classes)}
        added = []
        if self.unknown == "add":
            for name in needed:
                if name.lower() not in self.ids:
                    if len(classes) >= MAX_CLASSES:
                        raise Invalid(f"the dataset would have more than {MAX_CLASSES} classes")
                    self.ids[name.lower()] = len(classes)
                    classes.append(ClassEntry(name=name[:100], color=default_color(len(classes))))
                    added.append(name)
        if added:
            db.execute(
                "UPDATE datasets SET classes = ?, updated_at = ? WHERE id = ?",
                [dump_classes(classes), now_iso(), self.dataset_id],
            )
            self.report.classes_added.extend(added)
