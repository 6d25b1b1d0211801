"""`appliance import PATH --dataset NAME`: the shell's and the USB hook's way to import a folder or archive."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from appliance.cli import command
from appliance.config import Config


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="folder or zip/tar archive to import")
    parser.add_argument("--dataset", required=True, help="dataset name (or numeric id)")
    parser.add_argument(
        "--owner", help="owner of the dataset when the name is not unique (default: first admin)"
    )
    parser.add_argument(
        "--format", default="auto", choices=["auto", "yolo", "coco", "voc", "plain"], help="default: detect"
    )
    parser.add_argument("--unknown-classes", default="add", choices=["add", "skip"])
    parser.add_argument(
        "--voc-origin",
        type=int,
        default=0,
        choices=[0, 1],
        help="VOC coordinates 0-based (default) or 1-based",
    )
    parser.add_argument("--create", action="store_true", help="create the dataset when it does not exist")
    parser.add_argument(
        "--queue",
        action="store_true",
        help="only queue the job for the worker (path must be under import_roots)",
    )


def _find_dataset(db, name: str, owner: str | None, create: bool):  # type: ignore[no-untyped-def]
    from appliance import catalog
    from appliance.caller import CurrentUser
    from appliance.catalog.schemas import DatasetCreate
    from appliance.errors import Invalid, NotFound

    if owner:
        user_row = db.execute("SELECT id, username, role FROM users WHERE username = ?", [owner]).fetchone()
        if user_row is None:
            raise NotFound(f"no user {owner!r}")
    else:
        user_row = db.execute(
            "SELECT id, username, role FROM users WHERE role = 'admin' AND disabled = 0 ORDER BY id LIMIT 1"
        ).fetchone()
        if user_row is None:
            raise NotFound("no admin account yet: run `appliance create-admin` first")
    user = CurrentUser(id=user_row[0], username=user_row[1], role=user_row[2], token_id="")
    if name.isdigit():
        return catalog.get_dataset(db, int(name), user), user
    rows = db.execute("SELECT id, owner_id FROM datasets WHERE name = ?", [name]).fetchall()
    if owner:
        rows = [r for r in rows if r[1] == user.id]
    if len(rows) > 1:
        raise Invalid(f"several datasets are named {name!r}: give --owner or the dataset id")
    if rows:
        return catalog.get_dataset(db, rows[0][0], user), user
    if not create:
        raise NotFound(f"no dataset named {name!r} (add --create to make it)")
    return catalog.create_dataset(db, DatasetCreate(name=name), user), user


@command("import", "import a folder or archive (YOLO, COCO, VOC, plain images) into a dataset", _arguments)
def import_command(args: argparse.Namespace, config: Config) -> int:
    from appliance.clock import now_iso
    from appliance.db import migrate, open_database, write_transaction
    from appliance.jobs import service as jobs
    from appliance.jobs.worker import run_one
    from appliance.transfers import jobs as import_jobs  # noqa: F401 - registers the job kinds
    from appliance.transfers.schemas import ImportCreate
    from appliance.transfers.service import path_import_params

    db = open_database(config.db_path)
    migrate(db, config.db_path)
    dataset, user = _find_dataset(db, args.dataset, args.owner, args.create)
    request = ImportCreate(
        str(Path(args.path).absolute()), args.format, args.unknown_classes, args.voc_origin
    )
    params = path_import_params(config, request, allow_any_path=not args.queue)
    job_id = jobs.create_job(db, "import", params, user_id=user.id, dataset_id=dataset.id)
    if args.queue:
        print(json.dumps({"job_id": job_id, "status": "pending"}))
        return 0
    # Run it here, now: take the job before a worker could (the worker skips running jobs).
    with write_transaction(db):
        taken = db.execute(
            """UPDATE jobs SET status = 'running', started_at = ?, heartbeat_at = ?, worker_pid = ?,
                               attempts = attempts + 1 WHERE id = ? AND status = 'pending'""",
            [now_iso(), time.time(), os.getpid(), job_id],
        ).rowcount
    if not taken:
        print(json.dumps({"job_id": job_id, "status": "taken by the worker"}))
        return 0
    job = jobs.get_job(db, job_id)
    state = run_one(job, db, config)
    job = jobs.get_job(db, job_id)
    report = job["result"] or job["progress"] or {}  # a failed import keeps its report in the progress
    summary = {
        "job_id": job_id,
        "status": state,
        "dataset_id": dataset.id,
        **{k: v for k, v in report.items() if k not in ("skipped_items",)},
    }
    if job["error"]:
        summary["error"] = job["error"]
    for item in report.get("skipped_items", [])[:20]:
        print(f"skipped {item['name']}: {item['reason']}", file=sys.stderr)
    print(json.dumps(summary))
    return 0 if state == "completed" else 1
