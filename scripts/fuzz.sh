#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets) for SECONDS each (default 30), or for N
# executions each with -runs=N, seeded from the repository's own files. A panic or crash prints the input's path (fuzz/artifacts/<target>/) and
# fails the run; its statistics (executions, peak RSS) are printed per target.
# Installs cargo-fuzz into .cargo-tools/ (inside the clone) when it is not on the PATH.
# Usage: bash scripts/fuzz.sh [SECONDS|-runs=N] [TARGET...]   e.g. bash scripts/fuzz.sh -runs=10000000
set -euo pipefail
cd "$(dirname "$0")/.."

budget="${1:-30}"
shift || true
if [[ "$budget" =~ ^-runs=[0-9]+$ ]]; then
    limit="$budget"
elif [[ "$budget" =~ ^[0-9]+$ ]]; then
    limit="-max_total_time=$budget"
else
    echo "usage: bash scripts/fuzz.sh [SECONDS|-runs=N] [TARGET...]  ('$budget' is neither)" >&2
    exit 2
fi
tools="$PWD/.cargo-tools"
export PATH="$tools/bin:$PATH"
if ! command -v cargo-fuzz >/dev/null; then
    cargo install --locked --root "$tools" cargo-fuzz@0.13.2
fi

# Seeds: real files of each kind of input.
mkdir -p fuzz/corpus/{model_config,mlperf_conf,dataset_list}
cp server/examples/model-config.toml fuzz/corpus/model_config/example.toml
for config in models/repository/*/config.toml; do
    cp "$config" "fuzz/corpus/model_config/$(echo "$config" | tr / _)"
done
# mlperf_conf's first byte picks the scenario (bits 0-1) and user.conf (bit 2) or rules file.
{ printf '\002'; cat loadgen/src/mlperf.conf; } > fuzz/corpus/mlperf_conf/mlperf.conf
printf '\006resnet50.Server.target_qps = 200\n*.*.min_duration = 1000\n' > fuzz/corpus/mlperf_conf/user.conf
printf 'img0.png 3\nimg1.png 7\nsub dir/img 2.png 0\n\n' > fuzz/corpus/dataset_list/val_map.txt

cd fuzz
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi
cargo fuzz build --sanitizer none --release
mkdir -p logs
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    log="logs/$target.log"
    echo "==> $target: ${limit#-}"
    if ! cargo fuzz run --sanitizer none --release "$target" "corpus/$target" -- \
        "$limit" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 >"$log" 2>&1; then
        tail -n 40 "$log"
        echo "fuzz.sh: $target failed; the input is in fuzz/artifacts/$target/ (full log: fuzz/$log)" >&2
        exit 1
    fi
    grep -E '^stat::(number_of_executed_units|peak_rss_mb|new_units_added)' "$log" | sed 's/^/    /'
done
