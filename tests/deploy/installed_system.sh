#!/usr/bin/env bash
# Runs a command inside the system deploy/install.sh --root ROOT made, as if ROOT were the box:
# a private mount namespace whose / holds this machine's /usr (and /dev, /proc, /sys, /tmp) and
# ROOT's /etc, /opt and /var, the model repository read-only, as the unit has it. The network
# is this machine's, so a server started inside is reachable from outside.
#
# Usage: installed_system.sh [--cpuinfo FILE] ROOT COMMAND [ARGS...]
#   --cpuinfo FILE   show FILE as /proc/cpuinfo (an arm64 box's, for a binary run under qemu:
#                    runtimes that read the CPU's description would find this machine's otherwise)
# As root; tests/deploy/test_install.py runs it.
set -euo pipefail
cpuinfo=
if [ "${1:-}" = --cpuinfo ]; then
    cpuinfo=$(realpath "${2:?--cpuinfo needs a file}")
    shift 2
fi
root=$(cd "${1:?ROOT}" && pwd)
shift
[ "$(id -u)" = 0 ] || { echo "installed_system.sh: needs root (a mount namespace and chroot)" >&2; exit 1; }

exec unshare --mount --fork /bin/bash -euo pipefail -c '
root=$1 cpuinfo=$2
shift 2
new=$(mktemp -d)
mount -t tmpfs installed-system "$new"
for dir in usr dev proc sys tmp run etc opt var; do mkdir -p "$new/$dir"; done
for dir in usr dev proc sys tmp; do mount --rbind "/$dir" "$new/$dir"; done
[ -z "$cpuinfo" ] || mount --bind "$cpuinfo" "$new/proc/cpuinfo"
# Merged /usr: /bin, /lib, ... are links into it, as on Debian and Raspberry Pi OS.
for link in bin sbin lib lib64; do [ -e "/usr/$link" ] && ln -s "usr/$link" "$new/$link"; done
for dir in etc opt var; do mount --bind "$root/$dir" "$new/$dir"; done
models=$new/var/lib/inference-server/models
[ -d "$models" ] && mount --bind -o ro "$models" "$models" && mount -o remount,bind,ro "$models"
exec chroot "$new" "$@"
' installed-system "$root" "$cpuinfo" "$@"
