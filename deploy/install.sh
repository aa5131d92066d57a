#!/usr/bin/env bash
# Installs inference-server as a systemd service on a Debian-like box (Raspberry Pi OS, Debian,
# Ubuntu; amd64 or arm64):
#
#   /opt/inference-server/bin/inference-server        the binary
#   /opt/inference-server/lib/<runtime>/              ONNX Runtime, OpenVINO and LiteRT, from their wheels
#   /opt/inference-server/share/                      example repository, README, install manifest
#   /etc/inference-server/server.toml                 settings (kept if present)
#   /var/lib/inference-server/models/                 model repository (seeded with the example
#                                                     model digits-cnn when absent)
#   /etc/systemd/system/inference-server.service      the unit
#   /etc/udev/rules.d/60-inference-server.rules       accelerator access for the service's group
#   /etc/sysusers.d/inference-server.conf             the service's user and group
#
# Usage: deploy/install.sh [--root DIR] [--arch amd64|arm64] [--binary FILE] [--wheels DIR]
#                          [--python PYTHON] [--enable]
#   --root DIR     install under DIR instead of / (a scratch root, an image being built); the
#                  files name their final paths, and nothing is activated
#   --arch         target architecture [default: this machine's]
#   --binary FILE  the inference-server binary for that architecture
#                  [default: target/release/inference-server, or target/<triple>/release/...]
#   --wheels DIR   take the runtime wheels from DIR instead of downloading them from PyPI
#   --python       the Python whose pip downloads the wheels and whose zipfile unpacks them
#                  [default: python3]
#   --enable       on / only: also `systemctl enable --now inference-server`
#
# The runtime versions are the pins of scripts/requirements.txt, the ones the tests run against.
# deploy/uninstall.sh removes what this installed.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
fail() { echo "install.sh: $*" >&2; exit 1; }
step() { echo "==> $*"; }

root=/ arch= binary= wheels= python=python3 enable=
while [ $# -gt 0 ]; do
    case $1 in
        --root) root=${2:?--root needs a folder}; shift 2 ;;
        --arch) arch=${2:?--arch needs amd64 or arm64}; shift 2 ;;
        --binary) binary=${2:?--binary needs a file}; shift 2 ;;
        --wheels) wheels=${2:?--wheels needs a folder}; shift 2 ;;
        --python) python=${2:?--python needs an interpreter}; shift 2 ;;
        --enable) enable=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) fail "unknown option $1 (see --help)" ;;
    esac
done

if [ -z "$arch" ]; then
    case $(uname -m) in
        x86_64) arch=amd64 ;;
        aarch64|arm64) arch=arm64 ;;
        *) fail "this machine is $(uname -m); pass --arch amd64 or --arch arm64" ;;
    esac
fi
case $arch in
    amd64) triple=x86_64-unknown-linux-gnu elf_machine=62 wheel_arch=x86_64 ;;
    arm64) triple=aarch64-unknown-linux-gnu elf_machine=183 wheel_arch=aarch64 ;;
    *) fail "--arch $arch: give amd64 or arm64 (32-bit Raspberry Pi OS is not supported; use the 64-bit one)" ;;
esac

if [ -z "$binary" ]; then
    for candidate in "$repo/target/$triple/release/inference-server" "$repo/target/release/inference-server"; do
        if [ -x "$candidate" ] && [ "$(od -An -t u2 -j 18 -N 2 "$candidate" | tr -d ' ')" = "$elf_machine" ]; then
            binary=$candidate
            break
        fi
    done
    [ -n "$binary" ] || fail "no $arch inference-server binary found; build one with
    cargo build --release --locked -p inference-server                          (on the box)
    cargo build --release --locked -p inference-server --target $triple   (cross)
or pass --binary FILE"
fi
[ -f "$binary" ] || fail "--binary $binary does not exist"

# A file's ELF machine, as a number (62 x86-64, 183 AArch64).
elf_machine_of() {
    [ "$(head -c 4 "$1" | od -An -c | tr -d ' ')" = "177ELF" ] || { echo none; return; }
    od -An -t u2 -j 18 -N 2 "$1" | tr -d ' '
}
[ "$(elf_machine_of "$binary")" = "$elf_machine" ] \
    || fail "$binary is not an $arch executable (ELF machine $(elf_machine_of "$binary")); pass the binary built for $arch"

# ONNX Runtime and OpenVINO at the versions the tests pin.
pin() {
    sed -n "s/^$1==\([^ ;#]*\).*/\1/p" "$repo/scripts/requirements.txt" | head -n 1
}
ort_version=$(pin onnxruntime)
ov_version=$(pin openvino)
litert_version=$(pin ai-edge-litert)
[ -n "$ort_version" ] && [ -n "$ov_version" ] && [ -n "$litert_version" ] \
    || fail "cannot read the onnxruntime, openvino and ai-edge-litert pins from $repo/scripts/requirements.txt"

"$python" -c 'import zipfile' 2>/dev/null \
    || fail "$python is needed to unpack the runtime wheels; install python3 or pass --python"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
if [ -z "$wheels" ]; then
    wheels=$scratch/wheels
    step "downloading onnxruntime $ort_version, openvino $ov_version and ai-edge-litert $litert_version wheels for $arch from PyPI"
    platforms=()
    for tag in 2014 _2_17 _2_27 _2_28 _2_31 _2_34 _2_35 _2_36 _2_38 _2_39; do
        case $tag in
            2014) platforms+=(--platform "manylinux2014_$wheel_arch") ;;
            *) platforms+=(--platform "manylinux${tag}_$wheel_arch") ;;
        esac
    done
    "$python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        --python-version 3.11 --implementation cp "${platforms[@]}" --dest "$wheels" \
        "onnxruntime==$ort_version" "openvino==$ov_version" "ai-edge-litert==$litert_version" \
        || fail "pip download failed (see above). Without network, download the three wheels elsewhere
    pip download --no-deps --only-binary=:all: --python-version 3.11 --platform manylinux_2_35_$wheel_arch onnxruntime==$ort_version openvino==$ov_version ai-edge-litert==$litert_version
and pass --wheels DIR"
fi
wheel_for() {  # PACKAGE VERSION
    local found
    found=$(find "$wheels" -maxdepth 1 -name "${1//-/_}-$2-*_$wheel_arch.whl" | sort | tail -n 1)
    [ -n "$found" ] || found=$(find "$wheels" -maxdepth 1 -name "$1-$2-*_$wheel_arch.whl" | sort | tail -n 1)
    [ -n "$found" ] || fail "no $1 $2 wheel for $wheel_arch in $wheels"
    echo "$found"
}
# Unpacks the members of WHEEL under PREFIX/ (matching the shell pattern) flat into DEST.
unpack() {  # WHEEL PREFIX PATTERN DEST
    "$python" - "$@" <<'PY'
import fnmatch, os, shutil, sys, zipfile
wheel, prefix, pattern, dest = sys.argv[1:]
os.makedirs(dest, exist_ok=True)
count = 0
with zipfile.ZipFile(wheel) as z:
    for member in z.infolist():
        name = member.filename
        if not name.startswith(prefix) or "/" in name[len(prefix):]:
            continue
        if not fnmatch.fnmatch(name[len(prefix):], pattern):
            continue
        target = os.path.join(dest, name[len(prefix):])
        with z.open(member) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out)
        os.chmod(target, 0o755 if ".so" in target else 0o644)
        count += 1
if count == 0:
    sys.exit(f"{wheel} has no {prefix}{pattern}")
PY
}

dest() { echo "${root%/}$1"; }
opt=$(dest /opt/inference-server)
step "installing into ${root} ($arch)"
rm -rf "$opt.new"
install -d -m 0755 "$opt.new/bin" "$opt.new/lib" "$opt.new/share/doc" "$opt.new/share/examples"
install -m 0755 "$binary" "$opt.new/bin/inference-server"
ort_wheel=$(wheel_for onnxruntime "$ort_version")
ov_wheel=$(wheel_for openvino "$ov_version")
litert_wheel=$(wheel_for ai-edge-litert "$litert_version")
unpack "$ort_wheel" onnxruntime/capi/ 'libonnxruntime*.so*' "$opt.new/lib/onnxruntime"
unpack "$ov_wheel" openvino/libs/ '*' "$opt.new/lib/openvino"
unpack "$litert_wheel" ai_edge_litert/ 'libLiteRt.so' "$opt.new/lib/litert"
for library in "$opt.new/lib/onnxruntime/libonnxruntime.so.$ort_version" "$opt.new/lib/openvino/"libopenvino_c.so* \
        "$opt.new/lib/litert/libLiteRt.so"; do
    [ -f "$library" ] || fail "$library is missing from its wheel"
    [ "$(elf_machine_of "$library")" = "$elf_machine" ] || fail "$library is not an $arch library"
done
cp -R "$repo/models/repository/digits-cnn" "$opt.new/share/examples/digits-cnn"
install -m 0644 "$repo/README.md" "$opt.new/share/doc/README.md"
printf 'onnxruntime %s\nopenvino %s\nai-edge-litert %s\n' "$ort_version" "$ov_version" "$litert_version" \
    >"$opt.new/share/runtimes.txt"
# Swap the new tree in whole, so a failed install leaves the old one.
rm -rf "$opt.old"
[ ! -e "$opt" ] || mv "$opt" "$opt.old"
mv "$opt.new" "$opt"
rm -rf "$opt.old"

installed=()
put() {  # SOURCE DEST MODE
    install -D -m "$3" "$1" "$(dest "$2")"
    installed+=("$2")
}
put "$here/systemd/inference-server.service" /etc/systemd/system/inference-server.service 0644
put "$here/systemd/inference-server.sysusers" /etc/sysusers.d/inference-server.conf 0644
put "$here/udev/60-inference-server.rules" /etc/udev/rules.d/60-inference-server.rules 0644
config=$(dest /etc/inference-server/server.toml)
if [ -e "$config" ]; then
    step "keeping the existing /etc/inference-server/server.toml (the new default is in /opt/inference-server/share/server.toml)"
else
    install -D -m 0640 "$here/server.toml" "$config"
fi
install -m 0644 "$here/server.toml" "$opt/share/server.toml"
models=$(dest /var/lib/inference-server/models)
if [ ! -e "$models" ]; then
    install -d -m 0755 "$(dest /var/lib/inference-server)"
    install -d -m 0750 "$models"
    cp -R "$opt/share/examples/digits-cnn" "$models/digits-cnn"
fi
printf '%s\n' "${installed[@]}" >"$opt/share/install-manifest.txt"

# The service's user and group own nothing but may read the config and the models.
command -v systemd-sysusers >/dev/null || fail "systemd-sysusers not found (the service needs systemd)"
if [ "$root" = / ]; then
    systemd-sysusers /etc/sysusers.d/inference-server.conf
else
    systemd-sysusers --root="$root" "$(dest /etc/sysusers.d/inference-server.conf)"
fi
gid=$(awk -F: '$1 == "inference-server" { print $3 }' "$(dest /etc/group)")
[ -n "$gid" ] || fail "systemd-sysusers did not create the inference-server group"
if [ "$(id -u)" = 0 ]; then
    chown "root:$gid" "$config" "$(dest /etc/inference-server)"
    chmod 0750 "$(dest /etc/inference-server)"
    chown -R "root:$gid" "$models"
    chmod -R g+rX,o-rwx "$models"
else
    echo "install.sh: not root: left the config and models owned by $(id -un); the service reads them as group inference-server" >&2
fi

if [ "$root" != / ]; then
    step "installed under $root; nothing activated"
    exit 0
fi
if command -v udevadm >/dev/null && [ -d /run/udev ]; then
    udevadm control --reload-rules && udevadm trigger --subsystem-match=usb --subsystem-match=apex \
        || echo "install.sh: udevadm could not reload the rules; replug the accelerators" >&2
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    if [ -n "$enable" ]; then
        systemctl enable --now inference-server
    fi
fi
"$opt/bin/inference-server" devices --config /etc/inference-server/server.toml || true
step "installed. Start it with: systemctl enable --now inference-server; follow it with: journalctl -u inference-server -f"
