#!/usr/bin/env bash
# Runs every test: unit tests, integration tests (real multi-process jobs
# through `courier run`), doc tests, the benches in test mode, and the
# shared-memory and engine unit tests under valgrind memcheck (the unsafe code).
# Installs what it needs (valgrind) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
# valgrind for memcheck; sshd, Slurm, munge and MPICH's Hydra for the
# multi-host tests on simulated hosts (tests/hosts.rs, tests/testbed/).
need=()
command -v valgrind >/dev/null || need+=(valgrind)
[ -x /usr/sbin/sshd ] || need+=(openssh-server openssh-client)
command -v slurmctld >/dev/null || need+=(slurm-wlm)
[ -x /usr/sbin/munged ] || need+=(munge)
command -v mpiexec.hydra >/dev/null || need+=(mpich)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo test --all-targets --all-features
cargo test --doc
# The unit-test binary of the library, run again under memcheck for the
# modules with unsafe code (rings over shared memory, segments, futex, request loans).
bin=$(cargo test --lib --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["lib"]:
        print(m["executable"])')
for filter in transport::shm engine:: wire::; do
  valgrind --error-exitcode=1 --leak-check=no -q "$bin" "$filter" --test-threads 1 >/dev/null
done
echo "valgrind memcheck: transport::shm, engine, wire unit tests clean"
