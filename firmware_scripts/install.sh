#!/usr/bin/env bash
# Install the appliance on a Jetson with JetPack, or on a Debian/Ubuntu box with an NVIDIA GPU (or none).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SRC="$(cd "$HERE/.." && pwd)"
# shellcheck source=SCRIPTDIR/lib.sh
source "$HERE/lib.sh"

usage() {
    cat <<USAGE
Usage: $(basename "$0") [options]

Installs the appliance as three systemd services (web, worker, camera):
  1. creates the system user '$APP_USER' (in the video group, which owns GPU and camera nodes)
  2. creates $PREFIX, $DATA_DIR (+ weights/), $CONFIG_DIR, /media/appliance
  3. copies the source to $PREFIX/src and creates the virtual environment $PREFIX/venv
     (with --system-site-packages where JetPack provides the TensorRT and CUDA Python bindings)
  4. installs the appliance into it: from a local wheelhouse when offline (pip --no-index --find-links)
  5. installs the units into $UNIT_DIR, the USB udev rule into $UDEV_DIR and the config template
     into $CONFIG_DIR/appliance.toml (an existing config is kept)
  6. generates a self-signed TLS certificate ($CONFIG_DIR/tls/) and turns HTTPS on in the config
  7. enables and starts appliance.target, and prints the console's URL

Options:
  --dry-run            print every action, change nothing
  --wheelhouse DIR     install offline from the wheels in DIR (pip wheel --wheel-dir DIR '.[train]' setuptools wheel)
  --extras LIST        pip extras to install (default: train; "" for inference only)
  --no-genicam         leave out GigE Vision / USB3 Vision cameras (Aravis from Debian, PyGObject, their
                       udev rule and socket buffer sizes)
  --python PATH        Python 3.11+ interpreter for the venv (default: python3)
  --platform KIND      jetson | nvidia | cpu (default: detected)
  --port N             HTTPS port of the console (default: from the config, 8443)
  --no-start           install and enable, but do not start the services
  --root DIR           install under DIR instead of / (for images and tests; skips useradd's host effects)
  -h, --help           this text
USAGE
}

WHEELHOUSE=""
EXTRAS="train"
GENICAM=1
PYTHON="python3"
PLATFORM=""
PORT=""
START=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --wheelhouse) WHEELHOUSE="${2:?--wheelhouse needs a folder}"; shift ;;
        --extras) EXTRAS="${2?--extras needs a value}"; shift ;;
        --no-genicam) GENICAM=0 ;;
        --python) PYTHON="${2:?--python needs a path}"; shift ;;
        --platform) PLATFORM="${2:?--platform needs jetson, nvidia or cpu}"; shift ;;
        --port) PORT="${2:?--port needs a number}"; shift ;;
        --no-start) START=0 ;;
        --root) ROOT="${2:?--root needs a folder}"; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
    shift
done
require_root

detect_platform() {
    if [[ -f /etc/nv_tegra_release ]] || compgen -G "/dev/nvhost-*" > /dev/null; then
        echo jetson
    elif have nvidia-smi || compgen -G "/dev/nvidia[0-9]*" > /dev/null; then
        echo nvidia
    else
        echo cpu
    fi
}
PLATFORM="${PLATFORM:-$(detect_platform)}"
case "$PLATFORM" in jetson | nvidia | cpu) ;; *) die "--platform must be jetson, nvidia or cpu" ;; esac
log "platform: $PLATFORM; source: $SRC; root: ${ROOT:-/}; dry run: $DRY_RUN"

# --- checks that change nothing ------------------------------------------------------------------
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2> /dev/null; then
    msg="$PYTHON is not Python 3.11 or newer (JetPack 5/6 ship 3.8/3.10: install python3.11 and pass --python)"
    if [[ "$DRY_RUN" == 1 ]]; then log "warning: $msg"; else die "$msg"; fi
fi
if [[ -n "$WHEELHOUSE" && ! -d "$WHEELHOUSE" ]]; then
    die "wheelhouse $WHEELHOUSE does not exist"
fi
have openssl || die "openssl is needed for the TLS certificate (apt-get install openssl)"

# --- 1. user ----------------------------------------------------------------------------------
useradd_args=(--system --user-group --home-dir "$DATA_DIR" --no-create-home --shell /usr/sbin/nologin)
[[ -n "$ROOT" ]] && useradd_args+=(--prefix "$ROOT")
if id "$APP_USER" > /dev/null 2>&1 && [[ -z "$ROOT" ]]; then
    log "user $APP_USER exists"
else
    run useradd "${useradd_args[@]}" "$APP_USER"
fi
if [[ -z "$ROOT" ]] && getent group video > /dev/null; then
    run usermod --append --groups video "$APP_USER"
fi
OWNER="$APP_USER:$APP_USER"
[[ -n "$ROOT" ]] && OWNER="$(id -u):$(id -g)"  # a fake root: the user lives in ROOT's passwd only

# --- 2. folders -------------------------------------------------------------------------------
run install -d -m 0755 "$ROOT$PREFIX"
run install -d -m 0750 -o "${OWNER%%:*}" -g "${OWNER##*:}" "$ROOT$DATA_DIR" "$ROOT$DATA_DIR/weights"
run install -d -m 0750 -o 0 -g "${OWNER##*:}" "$ROOT$CONFIG_DIR" "$ROOT$CONFIG_DIR/tls"
run install -d -m 0755 "$ROOT/media/appliance" "$ROOT$UNIT_DIR" "$ROOT$UDEV_DIR"

# --- 3. source and venv -----------------------------------------------------------------------
run rm -rf "$ROOT$PREFIX/src.new"
run mkdir -p "$ROOT$PREFIX/src.new"
run tar -C "$SRC" --exclude=.git --exclude=.venv --exclude=var --exclude='__pycache__' \
    --exclude=test-artifacts --exclude='*.egg-info' -cf "$ROOT$PREFIX/src.tar" .
run tar -C "$ROOT$PREFIX/src.new" -xf "$ROOT$PREFIX/src.tar"
run rm -f "$ROOT$PREFIX/src.tar"
run rm -rf "$ROOT$PREFIX/src"
run mv "$ROOT$PREFIX/src.new" "$ROOT$PREFIX/src"
run ln -sfn src/firmware_scripts "$ROOT$PREFIX/firmware_scripts"

venv_args=()
if [[ "$PLATFORM" == jetson ]]; then
    # JetPack installs tensorrt and pycuda (python3-libnvinfer, python3-pycuda) system-wide; pip cannot.
    venv_args+=(--system-site-packages)
elif [[ "$PLATFORM" == nvidia ]] && "$PYTHON" -c 'import tensorrt' 2> /dev/null; then
    venv_args+=(--system-site-packages)
fi
if [[ ! -x "$ROOT$PREFIX/venv/bin/python" ]]; then
    run "$PYTHON" -m venv "${venv_args[@]}" "$ROOT$PREFIX/venv"
fi
package="$ROOT$PREFIX/src"
[[ -n "$EXTRAS" ]] && package="${package}[$EXTRAS]"
pip_args=(--disable-pip-version-check)
if [[ -n "$WHEELHOUSE" ]]; then
    pip_args+=(--no-index --find-links "$WHEELHOUSE")
fi
# Third-party packages pinned by hash where the lock was made for this machine (Linux x86_64, Python 3.11,
# the train extra); elsewhere (a Jetson's aarch64 with JetPack's torch) the versions pinned in
# pyproject.toml are installed and the script says so.
LOCK="$SRC/requirements/run.lock"
if [[ "$EXTRAS" == train && -f "$LOCK" && "$(uname -m)" == x86_64 ]] \
    && "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    run "$ROOT$PREFIX/venv/bin/pip" install "${pip_args[@]}" --require-hashes -r "$LOCK"
    pip_args+=(--no-deps)
else
    echo "note: no hash lock for $(uname -m) / extras '$EXTRAS'; installing the versions pinned in pyproject.toml"
fi
# Editable: the console's files (webui/) are served from the source folder.
run "$ROOT$PREFIX/venv/bin/pip" install "${pip_args[@]}" --editable "$package"

# GigE Vision / USB3 Vision cameras: Aravis from the distribution (JetPack's Ubuntu has it too), PyGObject
# for the camera process built against its headers (or taken from the wheelhouse), pinned by hash.
if [[ "$GENICAM" == 1 ]]; then
    if [[ -z "$ROOT" ]] && have apt-get; then
        run apt-get install -y --no-install-recommends gir1.2-aravis-0.8 libgirepository1.0-dev libcairo2-dev \
            pkg-config gcc
    else
        log "install gir1.2-aravis-0.8 (Aravis) with the distribution's package manager for GigE Vision cameras"
    fi
    if [[ "$(uname -m)" == x86_64 ]] && "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
        run "$ROOT$PREFIX/venv/bin/pip" install "${pip_args[@]}" --require-hashes -r "$SRC/requirements/genicam.lock"
    else
        run "$ROOT$PREFIX/venv/bin/pip" install "${pip_args[@]}" \
            "$(grep -o 'PyGObject==[0-9.]*' "$SRC/pyproject.toml")"
    fi
fi

# --- 4. units, udev rule, config --------------------------------------------------------------
for unit in "$SRC"/systemd/*.service "$SRC"/systemd/*.path "$SRC"/systemd/*.target; do
    run install -m 0644 "$unit" "$ROOT$UNIT_DIR/$(basename "$unit")"
done
run install -m 0644 "$SRC/systemd/99-appliance-usb.rules" "$ROOT$UDEV_DIR/99-appliance-usb.rules"
if [[ "$GENICAM" == 1 ]]; then
    run install -m 0644 "$SRC/systemd/99-appliance-usb3vision.rules" "$ROOT$UDEV_DIR/99-appliance-usb3vision.rules"
    # A GigE camera's frame arrives as a burst of UDP packets: room for several frames in the kernel while the
    # camera process's receiving thread waits for a busy CPU (the default is 208 KB, smaller than one frame).
    run install -d -m 0755 "$ROOT$SYSCTL_DIR"
    write_file "$ROOT$SYSCTL_DIR/60-appliance-gige.conf" 0644 <<'SYSCTL'
# Written by the appliance's install.sh: receive buffers for GigE Vision streams (docs/camera.md).
net.core.rmem_max = 67108864
net.core.rmem_default = 8388608
SYSCTL
    if [[ -z "$ROOT" ]] && have sysctl; then
        run sysctl -p "$SYSCTL_DIR/60-appliance-gige.conf"
    fi
fi
CONFIG="$ROOT$CONFIG_DIR/appliance.toml"
if [[ -e "$CONFIG" ]]; then
    log "keeping the existing $CONFIG"
else
    run install -m 0640 -o 0 -g "${OWNER##*:}" "$SRC/systemd/appliance.toml" "$CONFIG"
fi

# --- 5. TLS ----------------------------------------------------------------------------------
host="$(hostname)"
ips="$(hostname -I 2> /dev/null || true)"
san="DNS:$host,DNS:$host.local,DNS:localhost,IP:127.0.0.1"
for ip in $ips; do san="$san,IP:$ip"; done
CERT="$CONFIG_DIR/tls/cert.pem"
KEY="$CONFIG_DIR/tls/key.pem"
if [[ -e "$ROOT$CERT" ]]; then
    log "keeping the existing certificate $ROOT$CERT"
else
    run openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
        -subj "/CN=$host" -addext "subjectAltName=$san" -keyout "$ROOT$KEY" -out "$ROOT$CERT"
    run chown "0:${OWNER##*:}" "$ROOT$KEY" "$ROOT$CERT"
    run chmod 0640 "$ROOT$KEY"
fi
# Turn HTTPS on where the config still has the template's empty values.
run sed -i -e "s|^tls_cert = \"\"|tls_cert = \"$CERT\"|" -e "s|^tls_key = \"\"|tls_key = \"$KEY\"|" "$CONFIG"
if [[ -n "$PORT" ]]; then
    run sed -i -e "s|^port = .*|port = $PORT|" "$CONFIG"
fi

# --- 6. enable and start ------------------------------------------------------------------------
if systemd_running || [[ "$DRY_RUN" == 1 ]]; then
    run systemctl daemon-reload
    run udevadm control --reload-rules
    run systemctl enable appliance.target "${SERVICES[@]}"
    # USB exports onto drives mounted read-only: the worker's requests start appliance-usb-write.service.
    run systemctl enable appliance-usb-write.path
    if [[ "$START" == 1 ]]; then
        run systemctl restart appliance.target
    fi
else
    log "systemd is not running here: enable with 'systemctl enable --now appliance.target' on the device"
fi

port_now="$(sed -n 's/^port = \([0-9]*\).*/\1/p' "$CONFIG" 2> /dev/null || true)"
port_now="${PORT:-${port_now:-8443}}"
first_ip="${ips%% *}"
log ""
log "The console: https://${first_ip:-$host}:$port_now/  (self-signed certificate: accept it once in the browser)"
log "The first visit asks for the admin account. Base weights: $HERE/fetch-weights.sh --help"
