#!/usr/bin/env bash
# Runs every test: unit tests, integration tests (real multi-process jobs
# through `courier run`), doc tests, and the benches in test mode.
# Installs nothing today: the tests need only the Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --all-targets --all-features
cargo test --doc
