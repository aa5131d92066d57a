#!/usr/bin/env bash
# Creates ./.venv with the native runtimes (ONNX Runtime), model/data generators and the official
# reference tools, then generates the models that are not committed. Idempotent: a second run
# only checks. Fails loudly, naming what to install, when a step cannot run.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "setup.sh: $*" >&2; exit 1; }

# Installs a Debian package as root, or fails naming it: apt_install PACKAGE WHY.
apt_updated=
apt_install() {
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "==> installing $1 ($2)"
        [ -n "$apt_updated" ] || { apt-get update -qq && apt_updated=1; } || fail "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$1" >/dev/null \
            || fail "apt-get install $1 failed"
    else
        fail "$2: sudo apt-get install $1"
    fi
}

command -v python3 >/dev/null || fail "python3 not found; install it (Debian: apt-get install python3)"
if [ ! -x .venv/bin/python ]; then
    # Debian splits venv/ensurepip into python3-venv.
    python3 -c 'import ensurepip, venv' 2>/dev/null \
        || apt_install python3-venv "python3 -m venv needs the venv module"
    python3 -m venv .venv || fail "python3 -m venv .venv failed"
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements.txt \
    || fail "pip install -r scripts/requirements.txt failed (see above)"

# The CRD field lists the Kubernetes manifest tests (tests/deploy) validate against, each in a folder
# of its own off the venv's path (see the requirements files for why); reinstalled when the pins change.
install_apart() {  # FOLDER REQUIREMENTS [pip options]
    local dir=$1 req=$2
    shift 2
    cmp -s "$req" "$dir/.requirements.txt" 2>/dev/null && return 0
    rm -rf "$dir"
    .venv/bin/pip install --quiet --disable-pip-version-check "$@" --target "$dir" -r "$req" \
        || fail "pip install --target $dir -r $req failed (see above)"
    cp "$req" "$dir/.requirements.txt"
}
install_apart .venv/kserve-sdk scripts/requirements-kserve-sdk.txt --no-deps
install_apart .venv/prometheus-operator-models scripts/requirements-prometheus-operator.txt

# Tools the tests drive: curl (the README's REST examples), Prometheus and promtool (the scrape,
# alert-rule and dashboard tests), systemd-analyze (the unit file check).
command -v curl >/dev/null || apt_install curl "the tests run the README's curl examples"
command -v prometheus >/dev/null && command -v promtool >/dev/null \
    || apt_install prometheus "the tests run Prometheus and promtool"
command -v systemd-analyze >/dev/null || apt_install systemd "the tests run systemd-analyze verify"
command -v chromium >/dev/null || apt_install chromium "the report test renders the page in headless Chromium"

# The arm64 install test: the server cross-built for aarch64 (linker: .cargo/config.toml) and run
# under qemu with the runtimes of the arm64 wheels.
command -v aarch64-linux-gnu-gcc >/dev/null || apt_install gcc-aarch64-linux-gnu "the arm64 build links with it"
[ -e /usr/aarch64-linux-gnu/lib/libstdc++.so.6 ] \
    || apt_install libstdc++6-arm64-cross "the arm64 runtimes need it under qemu"
[ -e /usr/aarch64-linux-gnu/include/stdio.h ] \
    || apt_install libc6-dev-arm64-cross "the arm64 build compiles C with it"
command -v qemu-aarch64 >/dev/null || apt_install qemu-user "the arm64 install test runs the server under it"
if ! rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then
    echo "==> rustup target add aarch64-unknown-linux-gnu (the arm64 install test cross-builds the server)"
    rustup target add aarch64-unknown-linux-gnu || fail "rustup target add aarch64-unknown-linux-gnu failed"
fi

# perf_analyzer (Triton's benchmark client) for the compatibility tests, in its own virtualenv.
ldconfig -p | grep -q 'libb64\.so\.0d' || apt_install libb64-0d "perf_analyzer needs it"
[ -x .venv-perf/bin/python ] || python3 -m venv .venv-perf || fail "python3 -m venv .venv-perf failed"
.venv-perf/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-perf.txt \
    || fail "pip install -r scripts/requirements-perf.txt failed (see above)"
[ -x .venv-perf/bin/perf_analyzer ] || fail "the tritonclient 2.41.0 wheel did not install perf_analyzer"
# The TFLite backend's test fixtures (tests/fixtures/README.md): a real libtensorflowlite_c.so built
# from the tflite crate's vendored TensorFlow Lite 1.15.5 and the fake libedgetpu.so.1, into
# target/tflite-fixtures/, and the models their tests use, into models/downloads/.
command -v g++ >/dev/null || apt_install g++ "the TFLite fixtures are C++"
command -v make >/dev/null || apt_install make "the tflite crate builds TensorFlow Lite with make"
command -v clang >/dev/null || apt_install clang "the tflite crate's bindgen runs clang"
compgen -G '/usr/lib/llvm-*/lib/libclang.so' >/dev/null \
    || apt_install libclang-dev "the tflite crate's bindgen loads libclang"
bash scripts/make_tflite_fixtures.sh
# The official LoadGen 6.0.17 as a shared library (`loadgen-client --loadgen official`), from the
# PyPI sdist's C++ sources, into target/official-loadgen/.
bash scripts/build_official_loadgen.sh
bash scripts/setup_models.sh
