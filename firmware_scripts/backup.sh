#!/usr/bin/env bash
# Back up the catalog (SQLite online backup, consistent while the services write) and the data folder.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/lib.sh
source "$HERE/lib.sh"

usage() {
    cat <<USAGE
Usage: $(basename "$0") [options] OUTPUT.tar

Writes one tar archive with:
  appliance.db     a consistent copy of the catalog made with SQLite's online backup API while the
                   services keep running (never a file copy of the live database), checked with
                   PRAGMA integrity_check
  everything else  in the data folder (images, thumbnails, models, runs, weights), except the live
                   database and its -wal/-shm files, run/ (runtime state) and staging/ (imports in progress)
  BACKUP-INFO      when, from where, and the catalog's SHA-256

The catalog is copied first, so every image or model file it refers to is in the archive (files written
later are harmless extras). The archive is written to OUTPUT.tar.part and renamed when complete.

Options:
  --data-dir DIR   the data folder (default: $DATA_DIR)
  --python PATH    Python 3 for the SQLite backup API (default: the appliance's venv, else python3)
  --dry-run        print every action, change nothing
  -h, --help       this text

Restore with restore.sh.
USAGE
}

DATA="$ROOT$DATA_DIR"
PYTHON="${PYTHON:-}"
OUT=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --data-dir) DATA="${2:?--data-dir needs a folder}"; shift ;;
        --python) PYTHON="${2:?--python needs a path}"; shift ;;
        --dry-run) DRY_RUN=1 ;;
        -h | --help) usage; exit 0 ;;
        -*) usage >&2; die "unknown option: $1" ;;
        *) [[ -z "$OUT" ]] || die "one output file only"; OUT="$1" ;;
    esac
    shift
done
[[ -n "$OUT" ]] || { usage >&2; exit 2; }
PYTHON="${PYTHON:-$(appliance_python)}"
DB="$DATA/appliance.db"
[[ -f "$DB" ]] || die "no catalog at $DB"

STAGE="$(dirname "$OUT")/.backup-stage.$$"
PART="$OUT.part"
cleanup() { rm -rf "$STAGE" "$PART"; }

if [[ "$DRY_RUN" == 1 ]]; then
    run mkdir -p "$STAGE"
    printf 'would: copy %s to %s with SQLite online backup (%s), then PRAGMA integrity_check\n' "$DB" "$STAGE/appliance.db" "$PYTHON"
    run tar -C "$DATA" --exclude=./appliance.db --exclude=./appliance.db-wal --exclude=./appliance.db-shm \
        --exclude=./appliance.db-journal --exclude=./run --exclude=./staging -cf "$PART" .
    run tar -C "$STAGE" -rf "$PART" ./appliance.db ./BACKUP-INFO
    run mv "$PART" "$OUT"
    run rm -rf "$STAGE"
    exit 0
fi

trap cleanup EXIT
mkdir -p "$STAGE"
# 1. The catalog: sqlite3's backup API copies a consistent snapshot page by page while writers go on.
"$PYTHON" - "$DB" "$STAGE/appliance.db" <<'PY'
import sqlite3
import sys

source = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True, timeout=30)
source.execute("PRAGMA busy_timeout = 30000")
target = sqlite3.connect(sys.argv[2])
with target:
    # One step: a read transaction on a WAL database does not block the writers, and a stepped copy
    # would restart from the first page after every commit of a busy writer.
    source.backup(target)
target.execute("PRAGMA journal_mode = DELETE")
check = target.execute("PRAGMA integrity_check").fetchall()
if check != [("ok",)]:
    sys.exit(f"integrity_check of the backup failed: {check[:5]}")
target.close()
source.close()
PY
log "catalog copied: $(du -h "$STAGE/appliance.db" | cut -f1)"
{
    echo "created: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(hostname)"
    echo "data_dir: $DATA"
    echo "catalog_sha256: $(sha256sum "$STAGE/appliance.db" | cut -d' ' -f1)"
} > "$STAGE/BACKUP-INFO"
# 2. The files, without the live database; 3. the catalog copy and the info appended.
tar -C "$DATA" --exclude=./appliance.db --exclude=./appliance.db-wal --exclude=./appliance.db-shm \
    --exclude=./appliance.db-journal --exclude=./run --exclude=./staging -cf "$PART" .
tar -C "$STAGE" -rf "$PART" ./appliance.db ./BACKUP-INFO
sync "$PART"
mv -f "$PART" "$OUT"
log "backup written: $OUT ($(du -h "$OUT" | cut -f1))"
