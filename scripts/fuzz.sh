#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (FUZZ_SECONDS each, default 60)
# with cargo-fuzz on the nightly toolchain (installed here if missing).
# The small seed corpora live in fuzz/corpus/<target>; new inputs found
# during a run go to a scratch copy, crashes to fuzz/artifacts/<target>.
# Usage: [FUZZ_SECONDS=60] scripts/fuzz.sh [target...]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${FUZZ_SECONDS:-60}
if ! rustup toolchain list | grep -q nightly; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo +nightly install cargo-fuzz --locked
fi
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(frame_decode handshake service_protocol engine)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in "${TARGETS[@]}"; do
  mkdir -p "$scratch/$t"
  cp -r fuzz/corpus/"$t"/. "$scratch/$t"/ 2>/dev/null || true
  echo "== $t: ${SECONDS_EACH}s"
  (cd fuzz && cargo +nightly fuzz run "$t" "$scratch/$t" -- \
      -max_total_time="$SECONDS_EACH" -max_len=4096 -print_final_stats=1 2>&1 \
    | grep -E "^#[0-9]+.*(DONE|pulse)|stat::number_of_executed_units|crash|panicked|ERROR" | tail -4)
done
