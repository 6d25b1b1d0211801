"""Rules against the classes of the model a camera runs: a rule that counts a class the model does not have
can never see it (a `present` rule fails every part, an `absent` rule passes every part, and nobody is told).

Saving a camera refuses such a rule (422 with the model's classes); deploying a model asks which cameras'
rules it would break (the cameras that follow the deployed model), so the deploy can be refused or confirmed.
Class names are compared case-insensitively, as the rule engine counts them (`rules.rule_count`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import msgspec

from appliance.classes import class_names
from appliance.db import Database
from appliance.errors import Invalid
from appliance.stations.schemas import CameraRead, CameraSettings, Rule


@dataclass(frozen=True)
class ModelClasses:
    """The model a camera runs: its id, name and class names (a class id is its position)."""

    model_id: int
    name: str
    classes: list[str]

    def label(self) -> str:
        return f"model {self.model_id} ({self.name})" if self.name else f"model {self.model_id}"


class BrokenRule(msgspec.Struct, kw_only=True):
    """A camera's rule that counts classes the model does not have."""

    camera_id: int
    camera_name: str
    rule: str
    missing: list[str]  # the rule's classes that are not among the model's


def missing_classes(rule: Rule, classes: list[str]) -> list[str]:
    """The rule's classes the model does not have (an empty rule counts any class: none missing)."""
    known = {name.lower() for name in classes}
    return [name for name in rule.classes if name.lower() not in known]


def _model(db: Database, model_id: int | None) -> ModelClasses | None:
    sql = "SELECT id, name, classes FROM models WHERE " + (
        "id = ?" if model_id is not None else "deployed = 1"
    )
    row = db.execute(sql, [model_id] if model_id is not None else []).fetchone()
    return None if row is None else ModelClasses(int(row[0]), str(row[1] or ""), class_names(row[2]))


def camera_model(db: Database, settings: CameraSettings) -> ModelClasses | None:
    """The model the camera runs: the one it names, else the deployed one; None when there is none."""
    return _model(db, settings.model_id)


def check_rule_classes(db: Database, settings: CameraSettings) -> None:
    """422 naming the first rule that counts a class the camera's model does not have, with the model's classes.

    Without a model there is nothing to compare with: the check comes again when a model is deployed."""
    model = camera_model(db, settings)
    if model is None:
        return
    for i, rule in enumerate(settings.rules):
        missing = missing_classes(rule, model.classes)
        if missing:
            names = ", ".join(repr(m) for m in missing)
            raise Invalid(
                f"settings.rules[{i}].classes: {names} {'is not a class' if len(missing) == 1 else 'are not classes'}"
                f" of {model.label()}; its classes are: {', '.join(model.classes) or 'none'}"
            )


def rules_broken_by(cameras: Iterable[CameraRead], classes: list[str]) -> list[BrokenRule]:
    """The rules of the cameras that follow the deployed model (no model of their own) which a model with
    these classes could never satisfy as written."""
    broken: list[BrokenRule] = []
    for camera in cameras:
        if camera.settings.model_id is not None:
            continue
        for rule in camera.settings.rules:
            missing = missing_classes(rule, classes)
            if missing:
                broken.append(
                    BrokenRule(camera_id=camera.id, camera_name=camera.name, rule=rule.name, missing=missing)
                )
    return broken


def describe(broken: list[BrokenRule]) -> str:
    """The broken rules in one sentence: camera 'press 1' rule 'one circle' ('circle'); ..."""
    return "; ".join(
        f"camera {b.camera_name!r} rule {b.rule!r} ({', '.join(repr(m) for m in b.missing)})" for b in broken
    )


__all__ = [
    "BrokenRule",
    "ModelClasses",
    "camera_model",
    "check_rule_classes",
    "describe",
    "missing_classes",
    "rules_broken_by",
]
