#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for a fixed time each, with
# libFuzzer and coverage instrumentation on the stable toolchain (no
# cargo-fuzz or nightly needed; `cargo fuzz run TARGET` works too where
# cargo-fuzz is installed).
#
#   scripts/fuzz.sh              # every target, 20 s each (what CI runs)
#   scripts/fuzz.sh 600          # every target, 10 minutes each
#   scripts/fuzz.sh 600 stanza   # one target
#
# New inputs go to target/fuzz/corpus/TARGET (not to the repo); the seeds in
# fuzz/corpus/TARGET are read only. A crash stops the run with the input in
# target/fuzz/artifacts/TARGET: make it a unit test, then fix.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  targets=(laml_webhook telnyx_webhook sandbox_webhook stanza phone_number config media_names)
fi
export CARGO_TARGET_DIR="$PWD/target/fuzz"
# What cargo-fuzz passes to rustc, less the sanitizer (which needs nightly).
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
# With an explicit --target, RUSTFLAGS reach the fuzzed code but not build
# scripts and proc macros (which cannot link against libFuzzer's hooks).
host=$(rustc -vV | sed -n 's/^host: //p')
cargo build --manifest-path fuzz/Cargo.toml --release --locked --bins --target "$host"
bin="target/fuzz/$host/release"
for t in "${targets[@]}"; do
  mkdir -p "target/fuzz/corpus/$t" "target/fuzz/artifacts/$t" "fuzz/corpus/$t"
  echo "== fuzz $t for ${secs}s"
  log="target/fuzz/$t.log"
  if "$bin/$t" -max_total_time="$secs" -max_len=65536 -rss_limit_mb=1024 \
    -artifact_prefix="target/fuzz/artifacts/$t/" -print_final_stats=1 \
    "target/fuzz/corpus/$t" "fuzz/corpus/$t" >"$log" 2>&1; then
    grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$log" || true
  else
    tail -40 "$log" >&2
    echo "fuzz target $t failed: the input is in target/fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
echo "== fuzzing: every target ran without a crash"
