#!/usr/bin/env bash
# Remove the appliance's services, udev rule and program; the data and the config stay unless asked.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/lib.sh
source "$HERE/lib.sh"

usage() {
    cat <<USAGE
Usage: $(basename "$0") [options]

Stops and disables the services, removes the units, the udev rule and $PREFIX (program and venv).
Keeps $DATA_DIR (catalog, images, models) and $CONFIG_DIR unless told otherwise.

Options:
  --purge      also delete $DATA_DIR, $CONFIG_DIR and the '$APP_USER' user (back up first: backup.sh)
  --dry-run    print every action, change nothing
  --root DIR   act under DIR instead of /
  -h, --help   this text
USAGE
}

PURGE=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --purge) PURGE=1 ;;
        --dry-run) DRY_RUN=1 ;;
        --root) ROOT="${2:?--root needs a folder}"; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
    shift
done
require_root

if systemd_running || [[ "$DRY_RUN" == 1 ]]; then
    run systemctl disable --now appliance.target "${SERVICES[@]}" appliance-usb-write.path
    # Unmount USB drives mounted by the appliance.
    run systemctl stop 'appliance-usb-mount@*.service'
fi
for unit in "${SERVICES[@]}" appliance.target appliance-usb-mount@.service appliance-usb-write.service \
    appliance-usb-write.path; do
    run rm -f "$ROOT$UNIT_DIR/$unit"
done
run rm -f "$ROOT$UDEV_DIR/99-appliance-usb.rules" "$ROOT$UDEV_DIR/99-appliance-usb3vision.rules" \
    "$ROOT$SYSCTL_DIR/60-appliance-gige.conf"
if systemd_running || [[ "$DRY_RUN" == 1 ]]; then
    run systemctl daemon-reload
    run udevadm control --reload-rules
fi
run rm -rf "$ROOT$PREFIX"
if [[ "$PURGE" == 1 ]]; then
    run rm -rf "$ROOT$DATA_DIR" "$ROOT$CONFIG_DIR" "$ROOT/run/appliance"
    if [[ -z "$ROOT" ]] && id "$APP_USER" > /dev/null 2>&1; then
        run userdel "$APP_USER"
    fi
else
    log "kept $ROOT$DATA_DIR and $ROOT$CONFIG_DIR (--purge deletes them)"
fi
log "appliance removed"
