#!/usr/bin/env bash
# Mount a USB drive read-only under /media/appliance/<label>, or unmount it (appliance-usb-mount@.service).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/lib.sh
source "$HERE/lib.sh"

MEDIA="${MEDIA:-/media/appliance}"

usage() {
    cat <<USAGE
Usage: $(basename "$0") [--dry-run] mount|unmount /dev/DEVICE

mount    mounts DEVICE read-only (ro,nosuid,nodev,noexec) at $MEDIA/<label> (the file system's label,
         reduced to letters, digits, dot, dash and underscore; the device name when it has none or the
         name is taken), readable by the '$APP_USER' user. Nothing is imported: the import page lists it.
unmount  unmounts whatever DEVICE is mounted at under $MEDIA and removes the empty folder (lazy unmount
         when the drive is already gone).

Started by systemd through 99-appliance-usb.rules; not meant to be run by hand except to test.
USAGE
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run) DRY_RUN=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) break ;;
    esac
done
[[ $# -eq 2 ]] || { usage >&2; exit 2; }
ACTION="$1"
DEVICE="$2"
[[ "$DEVICE" == /dev/* ]] || die "not a device path: $DEVICE"
NAME="$(basename "$DEVICE")"

label_of() {
    local label=""
    if have blkid; then
        label="$(blkid -o value -s LABEL "$DEVICE" 2> /dev/null || true)"
    fi
    label="$(printf '%s' "$label" | tr -c 'A-Za-z0-9._-' '_' | sed 's/^[._]*//' | cut -c1-64)"
    printf '%s' "${label:-$NAME}"
}

mount_drive() {
    local label target fstype options
    label="$(label_of)"
    target="$MEDIA/$label"
    if mountpoint -q "$target" 2> /dev/null; then
        target="$MEDIA/$label-$NAME"
    fi
    fstype="$(blkid -o value -s TYPE "$DEVICE" 2> /dev/null || true)"
    options="ro,nosuid,nodev,noexec"
    case "$fstype" in
        vfat | exfat | ntfs | ntfs3)
            # No owners on these file systems: give the files to the appliance's group, read-only.
            local gid
            gid="$(getent group "$APP_USER" | cut -d: -f3 || true)"
            [[ -n "$gid" ]] && options="$options,gid=$gid,umask=0227"
            ;;
    esac
    run install -d -m 0755 "$MEDIA"
    run install -d -m 0755 "$target"
    run mount -o "$options" "$DEVICE" "$target"
    log "mounted $DEVICE ($fstype) read-only at $target"
}

unmount_drive() {
    local target
    target="$(findmnt -rn -S "$DEVICE" -o TARGET 2> /dev/null | grep "^$MEDIA/" | head -n1 || true)"
    if [[ -z "$target" ]]; then
        log "$DEVICE is not mounted under $MEDIA"
        return 0
    fi
    run umount "$target" || run umount --lazy "$target"
    run rmdir "$target"
    log "unmounted $target"
}

case "$ACTION" in
    mount) mount_drive ;;
    unmount) unmount_drive ;;
    *) usage >&2; exit 2 ;;
esac
