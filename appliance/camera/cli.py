"""`appliance camera`: the camera process (every enabled camera: capture, inference, rules, events)."""

from __future__ import annotations

import argparse

from appliance.cli import command
from appliance.config import Config


@command("camera", "run the cameras: capture, infer, apply the rules, record inspection events")
def camera_command(args: argparse.Namespace, config: Config) -> int:
    from appliance.camera.runner import run_camera

    return run_camera(config)
