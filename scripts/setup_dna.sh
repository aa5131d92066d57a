#!/usr/bin/env bash
# Sets up the Edgecortix DNA backend's tests (README "Edgecortix DNA"):
#
#   .venv-dna/                        Python 3.10 with MERA 1.6 (compiler, full runtime) and torch
#   target/dna/sysroot/               a private C/C++ runtime the MERA libraries need (see below)
#   target/dna/deployments/           the test deployments, compiled here (never committed):
#       interpreter/{affine,affine_fixed2,unbatched,two_io}, digits-{interpreterhw,simulator,ip}
#
# MERA's libraries need GLIBCXX_3.4.32 (GCC 13) and glog with soname libglog.so.0, which Debian
# 12 lacks. Without touching the system, this downloads Debian 13's libc6, libstdc++6, libgcc-s1
# and libgomp1, Debian 11's libgoogle-glog0v5 and libunwind8, and Debian 12's libgflags2.2 and
# libllvm14 with apt-get download (a private APT state under target/dna/apt) and unpacks them into
# target/dna/sysroot; the compiler and the server's DNA workers run under that sysroot's loader.
# On a DNA box with the vendor's stack (Ubuntu 22.04) none of this is needed.
#
# Idempotent: each step is skipped when its output is there. About 1 GB of downloads (torch is
# 780 MB) and 2.5 GB on disk; fails naming what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "setup_dna.sh: $*" >&2; exit 1; }

out=target/dna
sysroot=$PWD/$out/sysroot
libdir=$sysroot/usr/lib/x86_64-linux-gnu
venv=.venv-dna
[ "$(uname -m)" = x86_64 ] || fail "the MERA wheels are x86_64 only (this is $(uname -m))"

# --- Python 3.10 and the MERA wheels -------------------------------------------------------------
python310=
for candidate in $(command -v python3.10 || true) "$HOME"/.pyenv/versions/3.10*/bin/python3.10; do
    if [ -x "$candidate" ] && "$candidate" -c 'import venv' 2>/dev/null; then python310=$candidate; break; fi
done
[ -n "$python310" ] \
    || fail "Python 3.10 not found (MERA ships cp310 wheels only): install python3.10 (or pyenv install 3.10)"
if ! cmp -s scripts/requirements-dna.txt "$venv/.requirements.txt" 2>/dev/null; then
    rm -rf "$venv"
    "$python310" -m venv "$venv" || fail "$python310 -m venv $venv failed"
    echo "==> installing MERA 1.6 into $venv (about 1 GB, once)"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir \
        -r scripts/requirements-dna.txt || fail "pip install -r scripts/requirements-dna.txt failed"
    cp scripts/requirements-dna.txt "$venv/.requirements.txt"
fi

# --- The private C/C++ runtime -------------------------------------------------------------------
packages=(libc6/trixie libstdc++6/trixie libgcc-s1/trixie libgomp1/trixie
          libgoogle-glog0v5/bullseye libunwind8/bullseye libgflags2.2/bookworm libllvm14/bookworm)
if [ ! -e "$libdir/libglog.so.0" ] || [ ! -e "$libdir/ld-linux-x86-64.so.2" ]; then
    command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null \
        || fail "apt-get and dpkg-deb are needed to fetch the private runtime (Debian/Ubuntu)"
    apt=$PWD/$out/apt
    rm -rf "$apt" && mkdir -p "$apt"/{etc/sources.list.d,etc/preferences.d,state/lists/partial,cache/archives/partial,debs}
    cat >"$apt/etc/sources.list.d/dna.sources" <<SOURCES
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie bookworm bullseye
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
    options=(-o "Dir::Etc=$apt/etc" -o Dir::Etc::sourcelist=/dev/null
             -o "Dir::Etc::sourceparts=$apt/etc/sources.list.d" -o "Dir::State=$apt/state"
             -o "Dir::Cache=$apt/cache" -o Dir::Etc::Preferences=/dev/null
             -o "Dir::Etc::PreferencesParts=$apt/etc/preferences.d" -o Debug::NoLocking=1
             -o APT::Sandbox::User=root)
    echo "==> fetching the private C/C++ runtime for MERA (${packages[*]})"
    apt-get "${options[@]}" -qq update || fail "apt-get update (private state in $apt) failed"
    (cd "$apt/debs" && apt-get "${options[@]}" -qq download "${packages[@]}") \
        || fail "apt-get download ${packages[*]} failed"
    rm -rf "$sysroot" && mkdir -p "$sysroot"
    for deb in "$apt"/debs/*.deb; do dpkg-deb -x "$deb" "$sysroot"; done
    rm -rf "$apt"
fi

# --- The test deployments ------------------------------------------------------------------------
deployments=$out/deployments
if [ ! -f "$deployments/digits-ip/deploy.so" ] || [ scripts/dna/compile_deployments.py -nt "$deployments/digits-ip/deploy.so" ]; then
    echo "==> compiling the DNA test deployments with MERA"
    rm -rf "$deployments" "$out/test-models" && mkdir -p "$out/test-models" "$out/bin"
    .venv/bin/python scripts/make_test_models.py "$out/test-models" >/dev/null \
        || fail "scripts/make_test_models.py failed"
    # Debian's `uname -p` prints "unknown", and the compiler picks its host libraries by it.
    printf '#!/bin/sh\nif [ "$1" = -p ]; then echo x86_64; else exec /bin/uname "$@"; fi\n' >"$out/bin/uname"
    chmod +x "$out/bin/uname"
    # TOPHUB_LOCATION=NONE: TVM would download tuning logs. The loader's execstack tunable: glibc
    # 2.41 refuses torch's executable-stack libraries by default.
    PATH="$PWD/$out/bin:$PATH" TOPHUB_LOCATION=NONE GLIBC_TUNABLES=glibc.rtld.execstack=2 \
        "$libdir/ld-linux-x86-64.so.2" --library-path "$libdir:$PWD/$venv/lib" "$venv/bin/python3.10" \
        scripts/dna/compile_deployments.py "$out/test-models" models/repository/digits-cnn/1/model.onnx \
        models/data/digits-val "$deployments" >"$out/compile.log" 2>&1 \
        || { tail -30 "$out/compile.log" >&2; fail "compiling the DNA deployments failed (log: $out/compile.log)"; }
    rm -rf "$deployments/projects"
fi
