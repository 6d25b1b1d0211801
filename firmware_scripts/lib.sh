# shellcheck shell=bash
# Shared by the firmware scripts: logging, dry-run aware execution, paths under an optional fake root.
#
# DRY_RUN=1 prints every action ("would: ...") and changes nothing; ROOT (default empty) prefixes every
# system path, so the scripts can be exercised against a scratch folder.

DRY_RUN="${DRY_RUN:-0}"
ROOT="${ROOT:-}"

log() { printf '%s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# quote_args ARGS...: the arguments as one shell-readable line (quoted only where needed).
quote_args() {
    local out="" arg safe='^[A-Za-z0-9_./:=@,+%^-]+$'
    for arg in "$@"; do
        if [[ "$arg" =~ $safe ]]; then
            out="$out $arg"
        else
            out="$out '${arg//\'/\'\\\'\'}'"
        fi
    done
    printf '%s' "${out# }"
}

# run CMD ARGS...: execute, or print it under --dry-run.
run() {
    if [[ "$DRY_RUN" == 1 ]]; then
        printf 'would: %s\n' "$(quote_args "$@")"
    else
        log "+ $*"
        "$@"
    fi
}

# write_file PATH MODE: write standard input to PATH atomically (temp file + rename), or print it.
write_file() {
    local path="$1" mode="$2" tmp
    if [[ "$DRY_RUN" == 1 ]]; then
        printf 'would: write %s (mode %s):\n' "$path" "$mode"
        sed 's/^/    | /'
        return 0
    fi
    tmp="$(mktemp "$(dirname "$path")/.$(basename "$path").XXXXXX")"
    cat > "$tmp"
    chmod "$mode" "$tmp"
    mv -f "$tmp" "$path"
    log "+ wrote $path"
}

# require_root: the real thing needs root; a dry run or a fake root does not.
require_root() {
    if [[ "$DRY_RUN" != 1 && -z "$ROOT" && "$(id -u)" != 0 ]]; then
        die "run as root (sudo $0 ...), or try --dry-run first"
    fi
}

have() { command -v "$1" > /dev/null 2>&1; }

# appliance_python: the Python for the SQLite work of backup.sh and restore.sh: the appliance's venv, else python3.
appliance_python() {
    if [[ -x "$ROOT$PREFIX/venv/bin/python" ]]; then echo "$ROOT$PREFIX/venv/bin/python"; else echo python3; fi
}

# systemd_running: systemctl only works when systemd is PID 1 (not in containers, chroots, fake roots).
systemd_running() { [[ -z "$ROOT" && -d /run/systemd/system ]]; }

# The appliance's places on the device (see systemd/*.service).
PREFIX="${PREFIX:-/opt/appliance}"
DATA_DIR="${DATA_DIR:-/var/lib/appliance}"
CONFIG_DIR="${CONFIG_DIR:-/etc/appliance}"
UNIT_DIR="${UNIT_DIR:-/etc/systemd/system}"
UDEV_DIR="${UDEV_DIR:-/etc/udev/rules.d}"
SYSCTL_DIR="${SYSCTL_DIR:-/etc/sysctl.d}"
APP_USER="${APP_USER:-appliance}"
# shellcheck disable=SC2034  # used by the scripts that source this file
SERVICES=(appliance-web.service appliance-worker.service appliance-camera.service appliance-outputs.service appliance-fleet.service)
