#!/usr/bin/env bash
# Removes what deploy/install.sh installed: stops and disables the service, removes
# /opt/inference-server, the unit, the udev rules and the sysusers entry. The settings
# (/etc/inference-server) and the model repository (/var/lib/inference-server) stay unless
# --purge is given, which also removes the inference-server user and group.
#
# Usage: deploy/uninstall.sh [--root DIR] [--purge]
#   --root DIR   uninstall from DIR instead of / (where install.sh --root DIR installed)
set -euo pipefail

fail() { echo "uninstall.sh: $*" >&2; exit 1; }
step() { echo "==> $*"; }

root=/ purge=
while [ $# -gt 0 ]; do
    case $1 in
        --root) root=${2:?--root needs a folder}; shift 2 ;;
        --purge) purge=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) fail "unknown option $1 (see --help)" ;;
    esac
done
dest() { echo "${root%/}$1"; }
opt=$(dest /opt/inference-server)
manifest=$opt/share/install-manifest.txt
[ -f "$manifest" ] || fail "nothing installed under $root ($manifest is missing)"

if [ "$root" = / ] && [ -d /run/systemd/system ]; then
    step "stopping and disabling inference-server"
    systemctl disable --now inference-server 2>/dev/null || true
fi
while IFS= read -r file; do
    case $file in
        /etc/systemd/system/*|/etc/udev/rules.d/*|/etc/sysusers.d/*) rm -f "$(dest "$file")" ;;
        *) fail "$manifest names $file, which install.sh never installs; not removing it" ;;
    esac
done <"$manifest"
rm -rf "$opt"
if [ -n "$purge" ]; then
    step "removing the settings, the model repository and the inference-server user"
    rm -rf "$(dest /etc/inference-server)" "$(dest /var/lib/inference-server)"
    if [ "$root" = / ]; then
        userdel inference-server 2>/dev/null || true
        groupdel inference-server 2>/dev/null || true
    else
        for db in passwd group shadow gshadow; do
            [ -f "$(dest /etc/$db)" ] && sed -i '/^inference-server:/d' "$(dest /etc/$db)"
        done
    fi
else
    step "kept /etc/inference-server and /var/lib/inference-server (remove them with --purge)"
fi
if [ "$root" = / ]; then
    [ -d /run/systemd/system ] && systemctl daemon-reload
    command -v udevadm >/dev/null && [ -d /run/udev ] && udevadm control --reload-rules
fi
step "uninstalled from $root"
