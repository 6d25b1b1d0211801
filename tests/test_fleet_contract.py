"""The fleet's contract: the JSON Schema files docs/schemas/fleet-*.json are the Structs the boxes write (in bundles,
in the store, on the broker), and real documents of each kind validate against them.
`python -m tests.test_fleet_contract` rewrites the files."""

from __future__ import annotations

import json
import sys
import tarfile

import msgspec
import pytest

from appliance.fleet import bundles, contracts
from appliance.fleet.contracts import json_schemas
from appliance.fleet.schemas import BundleCreate
from tests.fleet_support import Box
from tests.helpers import REPO

FOLDER = REPO / "docs" / "schemas"


def rendered() -> dict[str, str]:
    return {
        f"{name}.json": json.dumps(schema, indent=2, sort_keys=True) + "\n"
        for name, schema in json_schemas().items()
    }


def test_the_schema_files_are_the_structs_the_boxes_write() -> None:
    for filename, text in rendered().items():
        assert (FOLDER / filename).read_text() == text, (
            f"docs/schemas/{filename} is stale: python -m tests.test_fleet_contract"
        )


def test_a_real_bundle_and_status_validate_against_the_published_files(tmp_path) -> None:
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    box = Box(tmp_path / "box", "line-1")
    try:
        model_id = box.colour_model()
        bundles.export_bundle(box.db, box.config, model_id, None, BundleCreate())
        with tarfile.open(box.config.data_path / "models" / str(model_id) / bundles.BUNDLE_FILE) as tar:
            manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
            metadata = json.loads(tar.extractfile("metadata.json").read())  # type: ignore[union-attr]
        from appliance.fleet.presence import box_status

        status = json.loads(msgspec.json.encode(box_status(box.db, box.config, 0.0, None, "0" * 16)))
    finally:
        box.close()
    assert manifest["schema"] == contracts.BUNDLE_SCHEMA == "appliance.bundle/1"
    assert (
        metadata["schema"] == contracts.METADATA_SCHEMA and status["schema"] == contracts.FLEET_STATUS_SCHEMA
    )
    for name, document in (
        ("fleet-manifest-v1", manifest),
        ("fleet-metadata-v1", metadata),
        ("fleet-status-v1", status),
    ):
        jsonschema_rs.validator_for(json.loads((FOLDER / f"{name}.json").read_text())).validate(document)
    with pytest.raises(jsonschema_rs.ValidationError):
        jsonschema_rs.validator_for(json.loads((FOLDER / "fleet-status-v1.json").read_text())).validate(
            {**status, "state": "sleeping"}
        )


if __name__ == "__main__":
    FOLDER.mkdir(parents=True, exist_ok=True)
    for filename, text in rendered().items():
        (FOLDER / filename).write_text(text)
        print(f"wrote docs/schemas/{filename}", file=sys.stderr)
