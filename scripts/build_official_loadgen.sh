#!/usr/bin/env bash
# Builds the official MLPerf LoadGen as a shared library for `loadgen-client --loadgen official`:
#
#   target/official-loadgen/libmlperf_loadgen_official.so
#
# from the C++ sources of the PyPI sdist mlcommons-loadgen 6.0.17 (downloaded by pip into
# target/official-loadgen/, its SHA-256 checked) and loadgen-client/official/shim.cc, the plain C
# interface the client loads at run time. Idempotent: rebuilt only when the shim or this script is
# newer than the library. Needs g++ and .venv's pip (scripts/setup.sh); about a minute on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "build_official_loadgen.sh: $*" >&2; exit 1; }

version=6.0.17
sdist_sha256=a2e85d09e3cc0c606f89bfe1fbf97537c8b5b238ae0afbd923ad9c710fcf2ca8
out=target/official-loadgen
lib=$out/libmlperf_loadgen_official.so
shim=loadgen-client/official/shim.cc

command -v g++ >/dev/null || fail "g++ not found: sudo apt-get install g++"
[ -x .venv/bin/pip ] || fail ".venv is missing: run scripts/setup.sh first"

if [ -f "$lib" ] && [ "$lib" -nt "$shim" ] && [ "$lib" -nt "$0" ]; then
    exit 0
fi
mkdir -p "$out"
sdist=$out/mlcommons_loadgen-$version.tar.gz
if [ ! -f "$sdist" ] || ! echo "$sdist_sha256  $sdist" | sha256sum -c --quiet - 2>/dev/null; then
    rm -f "$sdist"
    echo "==> downloading the mlcommons-loadgen $version sdist (the official LoadGen's sources)"
    .venv/bin/pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
        "mlcommons-loadgen==$version" -d "$out" || fail "pip download mlcommons-loadgen==$version failed"
    echo "$sdist_sha256  $sdist" | sha256sum -c --quiet - \
        || fail "$sdist is not the pinned mlcommons-loadgen $version sdist (SHA-256 differs)"
fi
src=$out/mlcommons_loadgen-$version
rm -rf "$src"
tar -xzf "$sdist" -C "$out"
[ "$(cat "$src/VERSION.txt")" = "$version" ] || fail "$src/VERSION.txt is not $version"

echo "==> building $lib (the official LoadGen $version and the C shim)"
# The sources and flags of the sdist's setup.py, without the Python bindings.
sources=(early_stopping.cc issue_query_controller.cc loadgen.cc logging.cc test_settings_internal.cc
         utils.cc version.cc results.cc generated/version_generated.cc)
g++ -std=c++14 -O3 -fPIC -shared -fvisibility=hidden -pthread \
    -DMAJOR_VERSION="${version%%.*}" -DMINOR_VERSION="$(echo "$version" | cut -d. -f2)" \
    -I "$src" "${sources[@]/#/$src/}" "$shim" -o "$lib.tmp" \
    || fail "compiling the official LoadGen failed (see above)"
mv "$lib.tmp" "$lib"
