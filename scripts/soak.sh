#!/usr/bin/env bash
# The soak test at length: COURIER_SOAK_STEPS steps (default 2000) of random
# point-to-point traffic (0 B to 8 MiB, random tags, any-source receives)
# and collectives on 4 and 7 ranks, every byte checked.
# Usage: [COURIER_SOAK_STEPS=2000] [COURIER_SOAK_SEED=n] scripts/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export COURIER_SOAK_STEPS=${COURIER_SOAK_STEPS:-2000}
cargo test --release --test reliability soak -- --nocapture
