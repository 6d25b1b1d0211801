"""The one command line: appliance serve | migrate | create-admin | doctor (and the worker, camera, import)."""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
from collections.abc import Callable

from appliance.config import Config, load_config
from appliance.db.connection import set_page_cache_mb
from appliance.errors import AppError, ConfigError

logger = logging.getLogger("appliance")

# Sub-commands contributed by domains: name -> (help, add_arguments, run). Kept in one table so
# `appliance --help` lists everything the box can do.
Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace, Config], int]]
COMMANDS: dict[str, Command] = {}


def command(
    name: str, help_text: str, add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
):
    def register(
        run: Callable[[argparse.Namespace, Config], int],
    ) -> Callable[[argparse.Namespace, Config], int]:
        COMMANDS[name] = (help_text, add_arguments or (lambda parser: None), run)
        return run

    return register


def setup_logging(level: str) -> None:
    from appliance.system.journal import log_handler, route_uncaught_errors

    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[log_handler()])
    route_uncaught_errors()


# --- serve --------------------------------------------------------------------------------------


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="listen address (config key host)")
    parser.add_argument("--port", type=int, help="listen port (config key port)")


@command("serve", "run the web process: API, console, live streams", _serve_arguments)
def serve(args: argparse.Namespace, config: Config) -> int:
    from appliance.server import create_app
    from appliance.system.webserver import build_server

    if config.tls_cert:  # HTTPS console: the session cookie must then be Secure
        import msgspec

        config = msgspec.structs.replace(config, cookie_secure=True)
    server = build_server(create_app(config), config)
    server.run()
    return 0


@command(
    "run",
    "run the whole box here: web, worker, camera and outputs as supervised children",
    _serve_arguments,
)
def run_command(args: argparse.Namespace, config: Config) -> int:
    from appliance.fleet.view import fleet_configured
    from appliance.system.supervisor import run_supervisor

    return run_supervisor(args.config, args.host, args.port, fleet=fleet_configured(config))


# --- migrate / create-admin / doctor ------------------------------------------------------------


@command("migrate", "create or upgrade the catalog database")
def migrate_command(args: argparse.Namespace, config: Config) -> int:
    from appliance.db import migrate, open_database

    db = open_database(config.db_path)
    applied = migrate(db, config.db_path)
    print(f"catalog {config.db_path}: " + (f"applied {', '.join(applied)}" if applied else "up to date"))
    return 0


@command(
    "vacuum",
    "rewrite the catalog so that space the event retention frees goes back to the disk (stop the services first)",
)
def vacuum_command(args: argparse.Namespace, config: Config) -> int:
    from appliance.db.maintenance import vacuum_catalog

    result = vacuum_catalog(config.db_path)
    print(
        f"catalog {config.db_path}: auto_vacuum {result.mode_before} -> {result.mode_after}, "
        f"{result.size_before_mb} MB -> {result.size_after_mb} MB in {result.seconds} s"
    )
    return 0


def _create_admin_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--username", required=True)
    parser.add_argument("--password-stdin", action="store_true", help="read the password from standard input")


@command("create-admin", "create the first admin account from the shell", _create_admin_arguments)
def create_admin(args: argparse.Namespace, config: Config) -> int:
    import msgspec

    from appliance.auth.schemas import SetupRequest
    from appliance.auth.service import create_first_admin
    from appliance.db import migrate, open_database

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("passwords differ", file=sys.stderr)
            return 2
    try:
        body = msgspec.convert({"username": args.username, "password": password}, SetupRequest)
    except msgspec.ValidationError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 2
    from appliance.audit.log import record

    db = open_database(config.db_path)
    migrate(db, config.db_path)
    user = create_first_admin(db, body.username, body.password)
    record(
        db,
        config,
        "create-admin",
        actor_id=user.id,
        actor=user.username,
        role=user.role,
        target=f"username={user.username}",
    )
    print(f"admin {user.username!r} created (id {user.id})")
    return 0


@command("setup-code", "print a new one-time code for creating the first admin in the console")
def setup_code_command(args: argparse.Namespace, config: Config) -> int:
    from appliance.auth.setup_code import new_setup_code
    from appliance.db import migrate, open_database

    db = open_database(config.db_path)
    migrate(db, config.db_path)
    if db.execute("SELECT 1 FROM users LIMIT 1").fetchone():
        print("setup is done: an account exists; log in instead", file=sys.stderr)
        return 1
    code = new_setup_code(db)
    from appliance.audit.log import record

    record(db, config, "setup-code", details={"issued": "a new setup code (the one before stops working)"})
    print("Enter this code on the console's first page to create the admin account.")
    print("It replaces any code printed before and works once.")
    print(code)
    return 0


@command("doctor", "print what the box has: versions, data dir, disk, GPU, TensorRT, OpenVINO's devices")
def doctor(args: argparse.Namespace, config: Config) -> int:
    from appliance.system.service import system_report

    report = system_report(config, in_web=False)
    print(json.dumps(report, indent=2))
    for warning in report["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


@command("worker", "run queued jobs: training, export, import")
def worker_command(args: argparse.Namespace, config: Config) -> int:
    from appliance.jobs.worker import run_worker

    return run_worker(config)


# --- entry point --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    _load_domain_commands()
    parser = argparse.ArgumentParser(prog="appliance", description=__doc__)
    parser.add_argument(
        "--config", help="TOML config file (default: $APPLIANCE_CONFIG or /etc/appliance/appliance.toml)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_arguments, _run) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def _load_domain_commands() -> None:
    """Domains that add commands register them on import; missing optional domains are skipped."""
    import importlib

    for module in (
        "appliance.training.cli",
        "appliance.transfers.cli",
        "appliance.camera.cli",
        "appliance.outputs.cli",
        "appliance.audit.cli",
        "appliance.fleet.cli",
    ):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        overrides = {k: getattr(args, k, None) for k in ("host", "port")}
        config = load_config(args.config, **overrides)
    except ConfigError as exc:
        print(f"appliance: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_level)
    set_page_cache_mb(config.catalog_cache_mb)
    from appliance.audit.log import set_process_name

    set_process_name(args.command)  # named in the audit entries this process writes
    try:
        return COMMANDS[args.command][2](args, config)
    except AppError as exc:
        print(f"appliance {args.command}: {exc.detail}", file=sys.stderr)
        return 1
    except ConfigError as exc:  # found after loading, e.g. an unusable jwt.key
        print(f"appliance {args.command}: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
