"""What deploying a model would do, said before it is done: whether it can run at all (an export exists),
whether its own validation says it finds nothing, and which cameras' rules count classes it does not have.

The console asks `deploy_check` first and confirms with the user; the deploy itself refuses (409) to break
cameras' rules unless it is told to deploy anyway, so an API client cannot do it silently either. A model
that is merely poor is the user's call: the check reports it, the deploy does not refuse it.
"""

from __future__ import annotations

from appliance.caller import CurrentUser
from appliance.classes import class_names
from appliance.config import Config
from appliance.db import Database
from appliance.errors import Conflict
from appliance.models.artifacts import artifacts_on_disk
from appliance.models.registry import ModelRow, json_object, manageable_model
from appliance.models.schemas import DeployCheck
from appliance.stations.cameras import list_cameras
from appliance.stations.class_check import BrokenRule, describe, rules_broken_by

# Under this mAP50 on its validation images a model finds (almost) nothing (the console's UNUSABLE_MAP50).
UNUSABLE_MAP50 = 0.05
NOT_EXPORTED = "it has no completed export yet: export it to ONNX (or TensorRT on the device) first"


def unusable_reason(row: ModelRow) -> str | None:
    """Why the model's own validation says it is not usable, or None."""
    metrics = json_object(row["metrics"])
    map50 = metrics.get("map50")
    if not isinstance(map50, int | float) or map50 >= UNUSABLE_MAP50:
        return None
    epochs = metrics.get("epochs_done")
    trained = f" after {epochs} epoch{'' if epochs == 1 else 's'}" if isinstance(epochs, int) else ""
    return (
        f"mAP50 {map50:.3f} on its validation images{trained}: it finds (almost) nothing, so every rule that "
        "expects a part fails"
    )


def broken_rules(db: Database, row: ModelRow) -> list[BrokenRule]:
    """The rules the model would break on the cameras that follow the deployed model."""
    return rules_broken_by(list_cameras(db, None), class_names(row["classes"]))


def deploy_check(db: Database, config: Config, model_id: int, user: CurrentUser) -> DeployCheck:
    row = manageable_model(db, model_id, user)
    ready = bool(artifacts_on_disk(config, model_id))
    return DeployCheck(
        model_id=model_id,
        ready=ready,
        not_ready_reason=None if ready else NOT_EXPORTED,
        unusable_reason=unusable_reason(row),
        classes=class_names(row["classes"]),
        broken_rules=broken_rules(db, row),
    )


def refuse_broken_rules(db: Database, row: ModelRow) -> None:
    """409 naming the cameras' rules the model cannot satisfy (inside the deploy's transaction)."""
    broken = broken_rules(db, row)
    if broken:
        classes = ", ".join(class_names(row["classes"])) or "none"
        raise Conflict(
            f"model {row['id']} has no class for {len(broken)} rule{'' if len(broken) == 1 else 's'} of the "
            f"cameras that follow the deployed model: {describe(broken)}; its classes are: {classes}. Change "
            'those rules, or deploy anyway ({"deploy_anyway": true})'
        )


__all__ = ["NOT_EXPORTED", "UNUSABLE_MAP50", "deploy_check", "refuse_broken_rules", "unusable_reason"]
