#!/usr/bin/env bash
# The threads tests at length: the exchange test (4 threads per rank on 2
# and 4 ranks, shared memory and TCP, random sizes up to 4 MiB, blocking and
# nonblocking, any-source and any-tag, every byte and the per-(source, tag)
# order checked) with COURIER_THREADS_SCALE times the messages, and every
# other threads test, ROUNDS times.
# Usage: [COURIER_THREADS_SCALE=20] [ROUNDS=5] scripts/threads_stress.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export COURIER_THREADS_SCALE=${COURIER_THREADS_SCALE:-20}
for r in $(seq "${ROUNDS:-5}"); do
  echo "round $r"
  cargo test --release -q -p courier-launcher --test threads
done
