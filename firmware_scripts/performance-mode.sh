#!/usr/bin/env bash
# Set a Jetson's power mode and clocks for training or for inference, and report what was set.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/lib.sh
source "$HERE/lib.sh"

usage() {
    cat <<USAGE
Usage: $(basename "$0") [--dry-run] [--mode-id N] training|inference|default|status

training   the maximum power mode (nvpmodel -m 0 on every Jetson) and fixed maximum clocks (jetson_clocks)
inference  the maximum power mode, dynamic clocks restored (lower heat and power between frames)
default    the power mode the board boots with (from /etc/nvpmodel.conf) and dynamic clocks
status     only report the current power mode and clocks

--mode-id N  use power mode N instead (see 'nvpmodel -p --verbose' for the board's modes)
--dry-run    print every action, change nothing

The clocks set by jetson_clocks are saved to $DATA_DIR/jetson_clocks.conf first so 'inference' and
'default' can restore them. Needs root (except status and --dry-run). On a machine that is not a Jetson
it reports that and changes nothing.
USAGE
}

MODE_ID=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run) DRY_RUN=1; shift ;;
        --mode-id) MODE_ID="${2:?--mode-id needs a number}"; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) break ;;
    esac
done
[[ $# -eq 1 ]] || { usage >&2; exit 2; }
TARGET="$1"
SAVED="$ROOT$DATA_DIR/jetson_clocks.conf"

report() {
    if have nvpmodel; then
        log "power mode: $(nvpmodel -q 2> /dev/null | tr '\n' ' ')"
    fi
    if have jetson_clocks; then
        jetson_clocks --show 2> /dev/null | sed 's/^/  /' >&2 || true
    fi
}

if ! have nvpmodel; then
    log "nvpmodel not found: this is not a Jetson with JetPack; nothing to set"
    [[ "$DRY_RUN" == 1 ]] || exit 0
fi

default_mode() {
    sed -n 's/^< PM_CONFIG DEFAULT=\([0-9]*\) >.*/\1/p' /etc/nvpmodel.conf 2> /dev/null | head -n1
}

case "$TARGET" in
    status) report; exit 0 ;;
    training)
        require_root
        run nvpmodel -m "${MODE_ID:-0}"
        if [[ ! -f "$SAVED" ]]; then run jetson_clocks --store "$SAVED"; fi
        run jetson_clocks
        ;;
    inference)
        require_root
        run nvpmodel -m "${MODE_ID:-0}"
        if [[ -f "$SAVED" ]]; then run jetson_clocks --restore "$SAVED"; fi
        ;;
    default)
        require_root
        mode="${MODE_ID:-$(default_mode)}"
        run nvpmodel -m "${mode:-0}"
        if [[ -f "$SAVED" ]]; then run jetson_clocks --restore "$SAVED"; fi
        ;;
    *) usage >&2; exit 2 ;;
esac
log "set: $TARGET"
[[ "$DRY_RUN" == 1 ]] || report
