#!/usr/bin/env bash
# Installs the packages of requirements/apt.txt that are missing: with apt-get as root, or with sudo when it
# asks for no password; otherwise prints the one command to run and fails. Nothing to do costs one dpkg query.
set -euo pipefail
list=${APT_LIST:-"$(dirname "$0")/apt.txt"}
[ -r "$list" ] || { echo "system-deps: cannot read $list" >&2; exit 1; }
mapfile -t wanted < <(sed 's/#.*//' "$list" | tr -s ' \t' '\n' | sed '/^$/d')

if ! command -v dpkg-query >/dev/null; then
  echo "system-deps: not a Debian system; install the equivalents of: ${wanted[*]}" >&2
  exit 1
fi
missing=()
for pkg in "${wanted[@]}"; do
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null)" = installed ] || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  as_root=(sudo)
else
  echo "The tests need ${#missing[@]} system package(s) that are not installed. Run, as root:" >&2
  echo "  apt-get update && apt-get install -y ${missing[*]}" >&2
  echo "then run make test again (the list, with what needs each: $list)." >&2
  exit 1
fi
echo "system-deps: installing ${missing[*]}"
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
