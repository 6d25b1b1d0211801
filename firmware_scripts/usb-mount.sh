#!/usr/bin/env bash
# Mount a USB drive read-only under /media/appliance/<label>, or unmount it (appliance-usb-mount@.service);
# copy export archives onto such a drive for the worker (appliance-usb-write.service).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=SCRIPTDIR/lib.sh
source "$HERE/lib.sh"

MEDIA="${MEDIA:-/media/appliance}"

usage() {
    cat <<USAGE
Usage: $(basename "$0") [--dry-run] mount|unmount /dev/DEVICE
       $(basename "$0") [--dry-run] serve-requests REQUEST_DIR [RESULT_DIR]

mount    mounts DEVICE read-only (ro,nosuid,nodev,noexec) at $MEDIA/<label> (the file system's label,
         reduced to letters, digits, dot, dash and underscore; the device name when it has none or the
         name is taken), readable by the '$APP_USER' user. Nothing is imported: the import page lists it.
unmount  unmounts whatever DEVICE is mounted at under $MEDIA and removes the empty folder (lazy unmount
         when the drive is already gone).
serve-requests
         copies export archives onto drives for the worker, which cannot write to them: for each
         REQUEST_DIR/<id>.request (lines source=, target=, folder=, name=, size=) it checks that the source
         is a regular file in $DATA_DIR/exports/, the target a mount point directly under $MEDIA and the
         folder and name plain, remounts the drive read-write, copies to a hidden temp file, syncs,
         renames, remounts it read-only (also on failure), and answers in RESULT_DIR/<id>.result
         (default: REQUEST_DIR/../usb-results) with "ok BYTES" or "error REASON". Requests, answers and
         the source are read and written as the '$APP_USER' user. --dry-run prints what it would do and
         leaves the requests in place.

Started by systemd (99-appliance-usb.rules, appliance-usb-write.path); not meant to be run by hand except
to test. Environment: MEDIA (default /media/appliance), DATA_DIR, APP_USER.
USAGE
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run) DRY_RUN=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) break ;;
    esac
done
[[ $# -ge 2 ]] || { usage >&2; exit 2; }
ACTION="$1"
if [[ "$ACTION" != serve-requests ]]; then
    [[ $# -eq 2 ]] || { usage >&2; exit 2; }
    DEVICE="$2"
    [[ "$DEVICE" == /dev/* ]] || die "not a device path: $DEVICE"
    NAME="$(basename "$DEVICE")"
fi

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

# --- serve-requests: export archives onto drives mounted read-only, for the sandboxed worker --------
#
# The worker (ProtectSystem=strict, its own mount namespace, no capabilities) can never write under $MEDIA:
# it stages the archive in $DATA_DIR/exports/ and leaves a request; this runs as root in the host's mount
# namespace. Everything in folders the '$APP_USER' user can write (the requests, the answers, the staged
# archive) is read and written with that user's rights (as_io), so a link planted there reaches nothing
# that user could not reach anyway; only the copy onto the checked drive runs as root.

REQ_DIR=""
RESULT_DIR=""
IO_UID=""
IO_GID=""
MEDIA_REAL=""
EXPORTS=""
CURRENT=""        # the request being served, not yet answered
TAKEN=""          # its file, renamed to .<id>.taken so the worker knows it can no longer withdraw it
PARTIAL=""        # the temp file on the drive
WRITABLE_MOUNT="" # a drive this run remounted read-write: made read-only again whatever happens
REPLY=""
SOURCE=""         # the request's fields, checked by check_request
TARGET=""
FOLDER=""
DEST=""
FILE_NAME=""
SIZE=""

as_io() { setpriv --reuid="$IO_UID" --regid="$IO_GID" --clear-groups -- "$@"; }

# answer ID TEXT: the worker's RESULT_DIR/ID.result, written whole (temp file + rename) as the worker's user.
answer() {
    local id="$1" text="$2"
    log "request $id: $text"
    if [[ "$DRY_RUN" == 1 ]]; then
        printf 'would: answer %s: %s\n' "$id" "$text"
        return 0
    fi
    # shellcheck disable=SC2016  # expanded by the inner shell
    printf '%s\n' "$text" | as_io sh -c \
        'umask 027; t="$(mktemp "$1/.$2.XXXXXX")" && cat > "$t" && mv -f -- "$t" "$1/$2.result"' \
        answer "$RESULT_DIR" "$id"
}

# restore_drive: remount read-only the drive this run made writable.
restore_drive() {
    local mount="$WRITABLE_MOUNT"
    [[ -n "$mount" ]] || return 0
    WRITABLE_MOUNT=""
    sync -f -- "$mount" || true
    run mount -o remount,ro "$mount"
}

on_exit() {
    local rc=$?
    if [[ -n "$PARTIAL" ]]; then rm -f -- "$PARTIAL" || true; fi
    if [[ -n "$WRITABLE_MOUNT" ]]; then restore_drive || log "could not remount $WRITABLE_MOUNT read-only"; fi
    if [[ -n "$CURRENT" ]]; then answer "$CURRENT" "error the USB write service was interrupted" || true; fi
    if [[ -n "$TAKEN" && "$DRY_RUN" != 1 ]]; then as_io rm -f -- "$TAKEN" || true; fi
    exit "$rc"
}

refuse() { REPLY="error $*"; return 1; }

is_plain_name() { [[ "$1" =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$ && "$1" != *.part ]]; }

# check_request: parse and validate $TAKEN; sets SOURCE TARGET FOLDER DEST FILE_NAME SIZE, or REPLY and returns 1.
check_request() {
    local text line key value part
    SOURCE="" TARGET="" FOLDER="" FILE_NAME="" SIZE=""
    [[ -f "$TAKEN" && ! -L "$TAKEN" ]] || { refuse "the request is not a regular file"; return 1; }
    text="$(as_io head -c 4097 -- "$TAKEN")" || { refuse "cannot read the request"; return 1; }
    (( ${#text} <= 4096 )) || { refuse "the request is too long"; return 1; }
    while IFS= read -r line; do
        [[ -n "$line" ]] || continue
        [[ "$line" == *=* ]] || { refuse "malformed request line"; return 1; }
        key="${line%%=*}"
        value="${line#*=}"
        [[ ! "$value" =~ [[:cntrl:]] ]] || { refuse "control character in '$key'"; return 1; }
        case "$key" in
            source) SOURCE="$value" ;;
            target) TARGET="$value" ;;
            folder) FOLDER="$value" ;;
            name) FILE_NAME="$value" ;;
            size) SIZE="$value" ;;
            *) refuse "unknown key '$key' in the request"; return 1 ;;
        esac
    done <<< "$text"

    # The staged archive: a regular file directly in the data disk's exports/ folder.
    [[ -n "$SOURCE" && "$SOURCE" == "$EXPORTS/"* ]] || { refuse "the source is not in $EXPORTS"; return 1; }
    is_plain_name "${SOURCE#"$EXPORTS/"}" || { refuse "the source's name is not plain"; return 1; }
    [[ ! -L "$EXPORTS" && -d "$EXPORTS" ]] || { refuse "$EXPORTS is not a folder"; return 1; }
    [[ ! -L "$SOURCE" ]] || { refuse "the source is a symbolic link"; return 1; }
    [[ -f "$SOURCE" ]] || { refuse "the source is not a regular file"; return 1; }
    [[ "$SIZE" =~ ^[0-9]{1,15}$ ]] || { refuse "the size is not a number"; return 1; }
    [[ "$(stat -c %s -- "$SOURCE")" == "$SIZE" ]] || { refuse "the source is not $SIZE bytes long"; return 1; }

    # The drive: a mount point directly under $MEDIA, as mount_drive makes them.
    local label="${TARGET#"$MEDIA_REAL/"}"
    [[ "$TARGET" == "$MEDIA_REAL/"* && "$label" =~ ^[A-Za-z0-9._-]+$ && "$label" != . && "$label" != .. ]] \
        || { refuse "the target is not a drive under $MEDIA"; return 1; }
    [[ -d "$TARGET" && ! -L "$TARGET" ]] || { refuse "the target $TARGET is not a folder"; return 1; }
    [[ "$(findmnt -rn -M "$TARGET" -o TARGET 2> /dev/null | head -n1)" == "$TARGET" ]] \
        || { refuse "the target $TARGET is not a mount point"; return 1; }

    # The folder on the drive: relative, no . or .. steps, and it must stay on that drive once resolved.
    [[ "$FOLDER" != /* ]] || { refuse "the folder must be relative to the drive"; return 1; }
    if [[ -n "$FOLDER" ]]; then
        local -a parts
        IFS=/ read -r -a parts <<< "$FOLDER"
        for part in "${parts[@]}"; do
            [[ -n "$part" && "$part" != . && "$part" != .. ]] || { refuse "the folder has a '$part' step"; return 1; }
        done
    fi
    DEST="$(realpath -e -- "$TARGET${FOLDER:+/$FOLDER}" 2> /dev/null)" || { refuse "the folder does not exist"; return 1; }
    [[ -d "$DEST" ]] || { refuse "the folder is not a folder"; return 1; }
    [[ "$DEST" == "$TARGET" || "$DEST" == "$TARGET/"* ]] || { refuse "the folder leaves the drive"; return 1; }
    [[ "$(findmnt -rn -T "$DEST" -o TARGET 2> /dev/null | head -n1)" == "$TARGET" ]] \
        || { refuse "the folder is on another file system"; return 1; }

    is_plain_name "$FILE_NAME" || { refuse "the file name is not plain"; return 1; }
    [[ ! -e "$DEST/$FILE_NAME" && ! -L "$DEST/$FILE_NAME" ]] || { refuse "$DEST/$FILE_NAME already exists"; return 1; }
    local free
    free="$(df --output=avail -B1 -- "$DEST" | tail -n1 | tr -d ' ')"
    if [[ ! "$free" =~ ^[0-9]+$ ]] || (( free < SIZE )); then
        refuse "not enough free space on $TARGET"
        return 1
    fi
}

# copy_to_drive: the checked request onto the drive; REPLY "ok BYTES", or REPLY and return 1.
copy_to_drive() {
    local options written
    options="$(findmnt -rn -M "$TARGET" -o OPTIONS)"
    if [[ ",$options," == *,ro,* ]]; then
        run mount -o remount,rw "$TARGET" || { refuse "could not remount $TARGET read-write"; return 1; }
        WRITABLE_MOUNT="$TARGET"
    fi
    if [[ "$DRY_RUN" == 1 ]]; then
        printf 'would: copy %s to %s/.%s.XXXXXX.part, sync, rename it to %s\n' "$SOURCE" "$DEST" "$FILE_NAME" "$FILE_NAME"
        restore_drive
        REPLY="ok $SIZE"
        return 0
    fi
    PARTIAL="$(mktemp --tmpdir="$DEST" --suffix=.part ".$FILE_NAME.XXXXXX")" || { refuse "cannot create a file in $DEST"; return 1; }
    log "+ copy $SOURCE -> $PARTIAL"
    as_io cat -- "$SOURCE" > "$PARTIAL" || { refuse "copying to $TARGET failed"; return 1; }
    # mktemp makes it 0600 and root's: readable by anyone who plugs the drive in elsewhere (vfat: no modes).
    chmod 0644 -- "$PARTIAL" 2> /dev/null || true
    sync -- "$PARTIAL" || { refuse "could not flush the copy on $TARGET"; return 1; }
    written="$(stat -c %s -- "$PARTIAL")"
    [[ "$written" == "$SIZE" ]] || { refuse "copied $written of $SIZE bytes"; return 1; }
    run mv -T -- "$PARTIAL" "$DEST/$FILE_NAME" || { refuse "could not rename the copy on $TARGET"; return 1; }
    PARTIAL=""
    sync -f -- "$DEST" || { refuse "could not flush $TARGET"; return 1; }
    REPLY="ok $written"
}

serve_one() {
    local request="$1" id
    id="$(basename "$request" .request)"
    if [[ "$DRY_RUN" == 1 ]]; then
        TAKEN="$request"
    else
        TAKEN="$REQ_DIR/.$id.taken"
        # Taken: from now on the worker waits for the answer instead of withdrawing the request.
        as_io mv -T -- "$request" "$TAKEN" 2> /dev/null || { TAKEN=""; return 0; }  # withdrawn meanwhile
    fi
    CURRENT="$id"
    REPLY=""
    if check_request; then
        log "request $id: $SOURCE -> $DEST/$FILE_NAME ($SIZE bytes)"
        copy_to_drive || true
    fi
    if [[ -n "$PARTIAL" ]]; then rm -f -- "$PARTIAL" || true; PARTIAL=""; fi
    if [[ -n "$WRITABLE_MOUNT" ]]; then
        restore_drive || REPLY="error could not remount $TARGET read-only (${REPLY})"
    fi
    answer "$id" "${REPLY:-error the request failed}"
    CURRENT=""
    if [[ "$DRY_RUN" != 1 ]]; then as_io rm -f -- "$TAKEN"; fi
    TAKEN=""
}

serve_requests() {
    REQ_DIR="${1%/}"
    RESULT_DIR="${2:-$(dirname "$REQ_DIR")/usb-results}"
    RESULT_DIR="${RESULT_DIR%/}"
    if [[ ! -e "$REQ_DIR" ]]; then
        log "$REQ_DIR does not exist: no requests"
        return 0
    fi
    local dir
    for dir in "$REQ_DIR" "$RESULT_DIR"; do
        [[ "$dir" == /* && -d "$dir" && ! -L "$dir" ]] || die "$dir is not a folder (an absolute path, no link)"
    done
    IO_UID="$(id -u "$APP_USER" 2> /dev/null)" || die "no user '$APP_USER' (APP_USER)"
    IO_GID="$(id -g "$APP_USER")"
    MEDIA_REAL="$(realpath -e -- "$MEDIA")" || die "$MEDIA does not exist"
    EXPORTS="$(realpath -e -- "$DATA_DIR")/exports" || die "$DATA_DIR does not exist"
    exec 9< "$REQ_DIR"
    flock -n 9 || { log "another run is serving $REQ_DIR"; return 0; }
    trap on_exit EXIT
    trap 'exit 143' TERM
    trap 'exit 130' INT
    trap 'exit 129' HUP

    local served entry base
    local -a entries
    while :; do
        served=0
        shopt -s nullglob dotglob
        entries=("$REQ_DIR"/*)
        shopt -u nullglob dotglob
        for entry in "${entries[@]}"; do
            base="${entry##*/}"
            if [[ "$base" =~ ^[A-Za-z0-9_-]{1,100}\.request$ ]]; then
                serve_one "$entry"
                served=1
            elif [[ "$base" =~ ^\.([A-Za-z0-9_-]{1,100})\.taken$ ]]; then
                # Left by a run that was killed mid-copy; this run holds the lock, so nobody serves it.
                local id="${BASH_REMATCH[1]}"
                answer "$id" "error the USB write service was interrupted; export again"
                run as_io rm -f -- "$entry"
            else
                # Anything else would keep the path unit (DirectoryNotEmpty=) triggering forever.
                log "removing $entry: not a request"
                run as_io rm -rf -- "$entry"
            fi
        done
        [[ "$served" == 1 && "$DRY_RUN" != 1 ]] || break
    done
}

case "$ACTION" in
    mount) mount_drive ;;
    unmount) unmount_drive ;;
    serve-requests)
        [[ $# -ge 2 && $# -le 3 ]] || { usage >&2; exit 2; }
        serve_requests "$2" "${3:-}"
        ;;
    *) usage >&2; exit 2 ;;
esac
