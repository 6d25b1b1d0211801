#!/usr/bin/env bash
# Restore a backup.sh archive: stop the services, swap the data folder, check the catalog, start again.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/lib.sh
source "$HERE/lib.sh"

usage() {
    cat <<USAGE
Usage: $(basename "$0") [options] BACKUP.tar

  1. stops the appliance services (when systemd runs)
  2. unpacks the archive next to the data folder and checks the catalog with PRAGMA integrity_check
     (a damaged archive stops here: the current data is untouched)
  3. moves the current data folder aside to <data_dir>.before-restore-<time> and puts the restored one
     in its place, owned by '$APP_USER'
  4. checks the catalog again in place and starts the services

Options:
  --data-dir DIR   the data folder (default: $DATA_DIR)
  --python PATH    Python 3 for the integrity check (default: the appliance's venv, else python3)
  --no-start       leave the services stopped
  --dry-run        print every action, change nothing
  -h, --help       this text
USAGE
}

DATA="$ROOT$DATA_DIR"
PYTHON="${PYTHON:-}"
ARCHIVE=""
START=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --data-dir) DATA="${2:?--data-dir needs a folder}"; shift ;;
        --python) PYTHON="${2:?--python needs a path}"; shift ;;
        --no-start) START=0 ;;
        --dry-run) DRY_RUN=1 ;;
        -h | --help) usage; exit 0 ;;
        -*) usage >&2; die "unknown option: $1" ;;
        *) [[ -z "$ARCHIVE" ]] || die "one archive only"; ARCHIVE="$1" ;;
    esac
    shift
done
[[ -n "$ARCHIVE" ]] || { usage >&2; exit 2; }
[[ -f "$ARCHIVE" ]] || die "no such archive: $ARCHIVE"
PYTHON="${PYTHON:-$(appliance_python)}"
DATA="${DATA%/}"
NEW="$DATA.restoring.$$"
OLD="$DATA.before-restore-$(date -u +%Y%m%dT%H%M%SZ)"

integrity_check() {  # integrity_check DB
    "$PYTHON" - "$1" <<'PY'
import sqlite3
import sys

conn = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
result = conn.execute("PRAGMA integrity_check").fetchall()
if result != [("ok",)]:
    sys.exit(f"PRAGMA integrity_check failed for {sys.argv[1]}: {result[:5]}")
print(f"integrity_check ok: {sys.argv[1]}")
PY
}

if systemd_running || [[ "$DRY_RUN" == 1 ]]; then
    run systemctl stop "${SERVICES[@]}"
fi
if [[ "$DRY_RUN" == 1 ]]; then
    run mkdir -p "$NEW"
    run tar -C "$NEW" -xf "$ARCHIVE"
    printf 'would: PRAGMA integrity_check on %s\n' "$NEW/appliance.db"
    [[ -e "$DATA" ]] && run mv "$DATA" "$OLD"
    run mv "$NEW" "$DATA"
    run chown -R "$APP_USER:$APP_USER" "$DATA"
    printf 'would: PRAGMA integrity_check on %s\n' "$DATA/appliance.db"
    [[ "$START" == 1 ]] && run systemctl start appliance.target
    exit 0
fi

trap 'rm -rf "$NEW"' EXIT
mkdir -p "$NEW"
tar -C "$NEW" -xf "$ARCHIVE"
[[ -f "$NEW/appliance.db" ]] || die "$ARCHIVE holds no appliance.db: not a backup.sh archive"
integrity_check "$NEW/appliance.db"
rm -f "$NEW/BACKUP-INFO"
if [[ -e "$DATA" ]]; then
    mv "$DATA" "$OLD"
    log "the previous data folder is kept at $OLD (delete it once the restore is confirmed)"
fi
mv "$NEW" "$DATA"
trap - EXIT
if [[ -z "$ROOT" ]] && id "$APP_USER" > /dev/null 2>&1 && [[ "$(id -u)" == 0 ]]; then
    chown -R "$APP_USER:$APP_USER" "$DATA"
fi
integrity_check "$DATA/appliance.db"
if systemd_running && [[ "$START" == 1 ]]; then
    run systemctl start appliance.target
fi
log "restored $ARCHIVE into $DATA"
