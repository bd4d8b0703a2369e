#!/usr/bin/env bash
# Bounded coverage-guided fuzzing: each target in turn for SECONDS (default 60), in one process,
# so it fits beside other work. Needs the nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz`). New inputs that add coverage land in fuzz/corpus/<target>/;
# a crash stops the run with the input in fuzz/artifacts/<target>/ (replay it with
# `cargo +nightly fuzz run TARGET FILE`, then add it to the corpus once fixed).
#
#   tools/fuzz.sh [SECONDS] [TARGET...]     e.g. tools/fuzz.sh 300 netlink_datagram
#   FUZZ_CMIN=1 tools/fuzz.sh 60            then minimize each corpus (cargo fuzz cmin)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(config_json dbus_settings varlink_stream netlink_datagram)
fi
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2; exit 69; }

for t in "${targets[@]}"; do
    echo "== $t: ${seconds}s"
    mkdir -p "fuzz/corpus/$t"
    # 16 KiB inputs reach every parser's depth; rss_limit keeps a runaway allocation a finding.
    cargo +nightly fuzz run "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -max_len=16384 -rss_limit_mb=2048 -print_final_stats=1
    if [ "${FUZZ_CMIN:-0}" = 1 ]; then
        cargo +nightly fuzz cmin "$t" "fuzz/corpus/$t"
    fi
done
