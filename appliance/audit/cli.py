"""`appliance audit verify` (where the chain breaks, if it does) and `appliance audit export` (JSON lines)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import msgspec

from appliance.cli import command
from appliance.config import Config


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["verify", "export"], help="verify the chain, or export it")
    parser.add_argument("--file", help="verify: an exported file instead of the catalog's log")
    parser.add_argument("--output", help="export: write here instead of standard output")
    parser.add_argument("--json", action="store_true", help="verify: print the report as JSON")


@command(
    "audit",
    "the audit log: `verify` says where the hash chain breaks, `export` writes JSON lines",
    _arguments,
)
def audit_command(args: argparse.Namespace, config: Config) -> int:
    if args.action == "export":
        return _export(config, args.output)
    return _verify(config, args.file, args.json)


def _verify(config: Config, file: str | None, as_json: bool) -> int:
    from appliance.audit.verify import verify, verify_export
    from appliance.db import migrate, open_database

    if file:
        report = verify_export(Path(file))
        source = file
    else:
        db = open_database(config.db_path)
        try:
            migrate(db, config.db_path)
            report = verify(db)
        finally:
            db.conn.close()
        source = str(config.db_path)
    if as_json:
        print(msgspec.json.format(msgspec.json.encode(msgspec.structs.replace(report, segments=[]))).decode())
    elif report.ok:
        span = (
            f"{report.entries} entries ({report.first_seq}-{report.last_seq})"
            if report.entries
            else "no entries yet"
        )
        print(f"audit log of {source} is intact: {span}, from {report.anchor}")
        if report.pruned_segments:
            print(f"{report.pruned_segments} older segment(s) pruned ({report.pruned_entries} entries)")
        print(f"head {report.head_hash}")
    else:
        first = report.problems[0]
        where = f"at entry {first.seq}" if first.seq is not None else "in its segments"
        print(f"audit log of {source} is BROKEN {where}: {first.reason}", file=sys.stderr)
        for problem in report.problems[1:]:
            print(f"  also: {problem.reason}", file=sys.stderr)
        if report.problems_total > len(report.problems):
            print(f"  ... {report.problems_total - len(report.problems)} more", file=sys.stderr)
    return 0 if report.ok else 1


def _export(config: Config, output: str | None) -> int:
    from appliance.audit.controllers import export_lines
    from appliance.audit.schemas import AuditFilters

    lines = export_lines(config, AuditFilters())
    if output is None:
        for line in lines:
            sys.stdout.buffer.write(line)
        sys.stdout.flush()
        return 0
    count = 0
    with open(output, "wb") as handle:
        for line in lines:
            handle.write(line)
            count += 1
    print(f"{count} entries written to {output}")
    return 0
