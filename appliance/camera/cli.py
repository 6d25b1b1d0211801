"""`appliance camera`: the live camera process (capture + inference of the deployed model)."""

from __future__ import annotations

import argparse

from appliance.cli import command
from appliance.config import Config


@command("camera", "run the live camera: capture, infer the deployed model, publish frames")
def camera_command(args: argparse.Namespace, config: Config) -> int:
    from appliance.camera.runner import run_camera

    return run_camera(config)
