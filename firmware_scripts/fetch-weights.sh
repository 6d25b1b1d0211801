#!/usr/bin/env bash
# Place base YOLO weights into <data_dir>/weights/: downloaded when online, else copied from a USB folder.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/lib.sh
source "$HERE/lib.sh"

BASE_URL="https://github.com/ultralytics/assets/releases/download/v8.3.0"
CHECKSUMS="$HERE/weights.sha256"
DEST=""
FROM=""
NAMES=()

usage() {
    cat <<USAGE
Usage: $(basename "$0") [options] [NAME.pt ...]

Puts base weights (default: every file listed in the checksums file) into the weights folder, each
verified against its SHA-256 before it is moved into place; a file whose checksum does not match is
refused and nothing is left behind.

Options:
  --from DIR         copy from DIR (a USB stick: /media/appliance/<label>) instead of downloading
  --dest DIR         weights folder (default: $DATA_DIR/weights)
  --checksums FILE   sha256sum-format list of allowed files (default: $CHECKSUMS)
  --base-url URL     where to download from (default: $BASE_URL)
  --dry-run          print every action, change nothing
  -h, --help         this text

Offline: on a machine with internet, download the .pt files from the base URL, check them with
'sha256sum -c weights.sha256', copy them to a USB stick, then on the box: $(basename "$0") --from /media/appliance/<label>
USAGE
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --from) FROM="${2:?--from needs a folder}"; shift ;;
        --dest) DEST="${2:?--dest needs a folder}"; shift ;;
        --checksums) CHECKSUMS="${2:?--checksums needs a file}"; shift ;;
        --base-url) BASE_URL="${2:?--base-url needs a URL}"; shift ;;
        --dry-run) DRY_RUN=1 ;;
        -h | --help) usage; exit 0 ;;
        -*) usage >&2; die "unknown option: $1" ;;
        *) NAMES+=("$1") ;;
    esac
    shift
done
DEST="${DEST:-$ROOT$DATA_DIR/weights}"
[[ -f "$CHECKSUMS" ]] || die "checksums file $CHECKSUMS not found: the admin provides it (see --help)"

expected_sum() {  # expected_sum NAME: the listed SHA-256, or nothing
    awk -v name="$1" '$0 !~ /^#/ && NF == 2 && ($2 == name || $2 == "*" name) { print $1; exit }' "$CHECKSUMS"
}
if [[ ${#NAMES[@]} -eq 0 ]]; then
    mapfile -t NAMES < <(awk '$0 !~ /^#/ && NF == 2 { sub(/^\*/, "", $2); print $2 }' "$CHECKSUMS")
fi
[[ ${#NAMES[@]} -gt 0 ]] || die "no weights listed in $CHECKSUMS"

run install -d -m 0750 "$DEST"
failed=0
for name in "${NAMES[@]}"; do
    [[ "$name" == */* || "$name" != *.pt ]] && die "not a weights file name: $name"
    sum="$(expected_sum "$name")"
    if [[ -z "$sum" ]]; then
        log "refused: $name has no checksum in $CHECKSUMS"
        failed=1
        continue
    fi
    if [[ -f "$DEST/$name" ]] && [[ "$(sha256sum "$DEST/$name" | cut -d' ' -f1)" == "$sum" ]]; then
        log "ok: $name already in $DEST"
        continue
    fi
    if [[ "$DRY_RUN" == 1 ]]; then
        if [[ -n "$FROM" ]]; then
            run cp "$FROM/$name" "$DEST/.$name.part"
        else
            run curl --fail --location --silent --show-error -o "$DEST/.$name.part" "$BASE_URL/$name"
        fi
        printf 'would: check that sha256sum %s is %s (else delete it)\n' "$DEST/.$name.part" "$sum"
        run mv "$DEST/.$name.part" "$DEST/$name"
        continue
    fi
    part="$DEST/.$name.part"
    if [[ -n "$FROM" ]]; then
        [[ -f "$FROM/$name" ]] || { log "missing: $FROM/$name"; failed=1; continue; }
        cp "$FROM/$name" "$part"
    elif ! curl --fail --location --silent --show-error --retry 3 -o "$part" "$BASE_URL/$name"; then
        rm -f "$part"
        log "download failed: $BASE_URL/$name (offline? use --from DIR)"
        failed=1
        continue
    fi
    actual="$(sha256sum "$part" | cut -d' ' -f1)"
    if [[ "$actual" != "$sum" ]]; then
        rm -f "$part"
        log "REFUSED: $name has SHA-256 $actual, expected $sum"
        failed=1
        continue
    fi
    sync "$part"
    mv -f "$part" "$DEST/$name"
    log "ok: $name (sha256 $sum)"
done
exit "$failed"
