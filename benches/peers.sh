# Sourced by the compare scripts: installs Open MPI and MPICH if missing
# (Debian packages) and sets PEERS_AVAILABLE to those that can be used
# ("ompi mpich", or fewer, with a note on stderr for each one skipped).
if ! command -v mpicc.openmpi >/dev/null || ! command -v mpicc.mpich >/dev/null; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openmpi-bin libopenmpi-dev mpich >/dev/null; } ||
    echo "note: could not install Open MPI and MPICH from apt" >&2
fi
PEERS_AVAILABLE=""
if command -v mpicc.openmpi >/dev/null && command -v mpirun.openmpi >/dev/null; then
  PEERS_AVAILABLE="ompi"
else
  echo "note: Open MPI is not installed: its columns are skipped" >&2
fi
if command -v mpicc.mpich >/dev/null && command -v mpiexec.mpich >/dev/null; then
  PEERS_AVAILABLE="$PEERS_AVAILABLE mpich"
else
  echo "note: MPICH is not installed: its columns are skipped" >&2
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
