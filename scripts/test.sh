#!/usr/bin/env bash
# Runs every test: unit tests, integration tests (real multi-process jobs
# through `courier run`, in launcher/tests/), doc tests (the README's code
# included), the benches in test mode, and the unsafe code under valgrind
# memcheck: the shared-memory ring and segment tests, the engine, the wire
# codec, the request loan table, and the request model test (loans lent to
# the real driver, on a singleton world).
# Installs what it needs (valgrind) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
# valgrind for memcheck; sshd, Slurm, munge and MPICH's Hydra for the
# multi-host tests on simulated hosts (launcher/tests/hosts.rs and testbed/).
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
# Test binaries of the library, run again under memcheck: the unit tests of
# the modules with unsafe code (rings over shared memory, segments, futex,
# the request loan table) and the request model test, which lends buffers
# to the real driver (eager, rendezvous and self-loop paths).
test_bin() {
  cargo test -p courier "$@" --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])'
}
# Quiet when clean; a failing test's report (it goes to stdout) is shown.
# Fair scheduling: valgrind runs one thread at a time, and with its default
# lock a thread spinning on a full ring (the wake-up race tests) can keep
# the reader it waits for from running for seconds, which those tests take
# for a lost wake-up (one slept 10 s in a local run, `.ci/run`).
memcheck() {
  local out rc=0
  out=$(mktemp)
  valgrind --fair-sched=yes --error-exitcode=1 --leak-check=no -q "$@" >"$out" || rc=$?
  [ "$rc" -eq 0 ] || tail -n 60 "$out"
  rm -f "$out"
  return "$rc"
}
bin=$(test_bin --lib)
for filter in transport::shm engine:: wire:: progress::loans; do
  memcheck "$bin" "$filter" --test-threads 1
done
PROPTEST_CASES=48 memcheck "$(test_bin --test requests)"
echo "valgrind memcheck: transport::shm, engine, wire, progress::loans unit tests and the request model test clean"
