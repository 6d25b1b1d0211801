"""`appliance outputs`: the process that sends events to the line (MQTT, webhooks) and serves OPC UA and Modbus."""

from __future__ import annotations

import argparse

from appliance.cli import command
from appliance.config import Config


@command("outputs", "run the line outputs: MQTT, webhooks, OPC UA and Modbus TCP servers, fed by the outbox")
def outputs_command(args: argparse.Namespace, config: Config) -> int:
    from appliance.outputs.process import run_outputs

    return run_outputs(config)
