"""OpenVINO's tools without a network: the usage statistics of its model converter and of NNCF switched off.

What was checked (openvino 2026.4, openvino-telemetry 2025.2, nncf 3.4): the OpenVINO runtime (`import
openvino`, `Core`, `read_model`, `compile_model`, `save_model`) sends nothing. Its model converter
(`openvino.convert_model`, which ultralytics' OpenVINO export calls) and NNCF's `quantize` do: they create
`openvino_telemetry.Telemetry` with the opt-in dialog off, which counts a missing consent file as consent and
posts events to www.google-analytics.com from a thread pool (errors are swallowed, so an offline box is not
broken by it, but it still looks up the name and leaves an id file in the home folder). The documented
opt-out is a consent file `~/intel/openvino_telemetry` holding "0"; both tools then decline, write nothing
and connect nowhere. A process that converts or quantises calls `openvino_offline_env` first: HOME points at
a folder of ours holding that file, so the answer does not depend on the service user's real home (absent
or read-only on the device). tests/test_openvino.py proves it with an audit hook on every connection.
"""

from __future__ import annotations

import os
from pathlib import Path

CONSENT_FILE = Path("intel") / "openvino_telemetry"


def openvino_offline_env(folder: Path) -> dict[str, str]:
    """Make `folder` the home of this process with OpenVINO telemetry declined; returns the variables set.

    Call before the first `convert_model` or NNCF call (the consent file is read when they start); children
    inherit the variables.
    """
    folder = Path(folder).resolve()
    consent = folder / CONSENT_FILE
    consent.parent.mkdir(parents=True, exist_ok=True)
    if not consent.exists() or consent.read_text().strip() != "0":
        consent.write_text("0")
    # NNCF_CI: NNCF also swaps its telemetry for a stub (a second switch, should the consent file move).
    env = {"HOME": str(folder), "NNCF_CI": "1"}
    os.environ.update(env)
    return env
