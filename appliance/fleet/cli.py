"""`appliance bundle ...` (signed model bundles on the shell: USB hand-over, keys, the store) and `appliance fleet`
(the process that takes part in the fleet: presence on the broker, rollouts, hard-case uploads)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import msgspec

from appliance.cli import command
from appliance.config import Config


def _bundle_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    export = sub.add_parser("export", help="sign a model's bundle and write it to a file (a USB drive)")
    export.add_argument("model_id", type=int)
    export.add_argument("-o", "--output", required=True, help="file or folder to write the bundle to")
    export.add_argument(
        "--name", help="bundle name (first bundle of the model only; default: its dataset's name)"
    )
    export.add_argument("--version", type=int, help="bundle version (first bundle of the model only)")
    imported = sub.add_parser(
        "import", help="verify a bundle file and add its model (refused with the reason)"
    )
    imported.add_argument("path")
    imported.add_argument(
        "--deploy", action="store_true", help="deploy it as well (the cameras' rules are checked)"
    )
    sub.add_parser("key", help="print this box's public key (minisign format) and its key id")
    trust = sub.add_parser("trust", help="trust the bundles and documents signed by a key")
    trust.add_argument("key", help="a .pub file, or the base64 key line")
    trust.add_argument("--name", required=True, help="what the key is (another box's id, a GPU server)")
    sub.add_parser("trusted", help="list the keys this box trusts")
    publish = sub.add_parser("publish", help="upload a model's bundle to the fleet store")
    publish.add_argument("model_id", type=int)
    publish.add_argument("--name")
    publish.add_argument("--version", type=int)


def _print(value: object) -> None:
    print(json.dumps(msgspec.to_builtins(value), indent=2))


@command("bundle", "signed model bundles: export, import, key, trust, trusted, publish", _bundle_arguments)
def bundle_command(args: argparse.Namespace, config: Config) -> int:
    from appliance.db import migrate, open_database
    from appliance.fleet import bundles, keys, publishing
    from appliance.fleet.schemas import BundleCreate, TrustedKeyCreate
    from appliance.storage import atomic_target

    db = open_database(config.db_path)
    migrate(db, config.db_path)
    if args.action == "key":
        key = keys.box_key(config).public
        print(key.text(), end="")
        print(
            f"key id {key.id}; verify a bundle's manifest with: minisign -Vm manifest.json -P {key.line}",
            file=sys.stderr,
        )
    elif args.action == "trusted":
        _print(keys.key_reads(db, config))
    elif args.action == "trust":
        text = Path(args.key).read_text() if Path(args.key).is_file() else args.key
        _print(keys.trust_key(db, config, TrustedKeyCreate(public_key=text, name=args.name), None))
    elif args.action == "export":
        body = BundleCreate(name=args.name, version=args.version)
        made = bundles.export_bundle(db, config, args.model_id, None, body)
        path = bundles.model_dir(config, args.model_id) / bundles.BUNDLE_FILE
        target = Path(args.output)
        if target.is_dir():
            target = target / made.file
        with path.open("rb") as source, atomic_target(target) as handle:  # synced: a stick may be pulled next
            shutil.copyfileobj(source, handle, 1024 * 1024)
        _print({**msgspec.to_builtins(made), "written": str(target)})
    elif args.action == "import":
        _print(bundles.import_bundle_file(db, config, Path(args.path), None, deploy=args.deploy))
    elif args.action == "publish":
        shell = bundles.SHELL
        _print(
            publishing.publish_model(
                db, config, args.model_id, shell, BundleCreate(name=args.name, version=args.version)
            )
        )
    return 0


@command("fleet", "run the fleet process: presence on the fleet broker, rollouts, hard-case uploads")
def fleet_command(args: argparse.Namespace, config: Config) -> int:
    from appliance.fleet.agent import run_fleet

    return run_fleet(config)
