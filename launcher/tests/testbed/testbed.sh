#!/usr/bin/env bash
# Simulated hosts for multi-host tests (see ../shared/TESTBED.md):
# network namespaces tb-h1..tb-hN with their own hostname (UTS namespace),
# joined by a bridge in namespace tb-sw, each running sshd on 10.99.0.i:2222.
#
#   testbed.sh up [N] [--slurm] create hosts h1..hN (default 2); idempotent
#   testbed.sh slurm           also start munge, slurmctld (on h1) and slurmd
#                              on every host (installs slurm-wlm if needed)
#   testbed.sh down            remove everything (also after a failed test)
#   testbed.sh exec HOST CMD   run CMD "on" HOST with an environment in which
#                              `courier run --host h1,h2 ...` works as is
#                              (COURIER_LAUNCH_AGENT is the ssh command)
#
# Safety: test addresses (10.99.0.0/24) are only ever dialed from inside the
# namespaces; the root namespace gets a blackhole route for them; the
# namespaces have no default route. Everything lives under $TB_DIR.
set -euo pipefail
TB_DIR=${TB_DIR:-/run/courier-testbed}
SUBNET=10.99.0
UTS=/run/tb-uts

need_slurm() {
  command -v slurmctld >/dev/null 2>&1 && command -v munged >/dev/null 2>&1 && return 0
  [ -x /usr/sbin/munged ] && [ -x /usr/sbin/slurmctld ] && return 0
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
}

need_packages() {
  command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] && return 0
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client >/dev/null
}

host_count() { cat "$TB_DIR/hosts" 2>/dev/null || echo 0; }

on() { # on HOST CMD...: run in the host's network and UTS namespaces
  local h=$1; shift
  nsenter --net="/run/netns/tb-$h" --uts="$UTS/$h" "$@"
}

up() {
  local n=${1:-2}
  if [ "$(host_count)" = "$n" ] && ip netns list | grep -q "^tb-h$n\b"; then
    return 0
  fi
  down >/dev/null 2>&1 || true
  need_packages
  mkdir -p "$TB_DIR" /run/sshd "$UTS"
  ip route add blackhole "$SUBNET.0/24" 2>/dev/null || true
  mountpoint -q "$UTS" || { mount --bind "$UTS" "$UTS"; mount --make-private "$UTS"; }
  ip netns add tb-sw
  ip -n tb-sw link add br0 type bridge
  ip -n tb-sw link set br0 up
  ssh-keygen -q -t ed25519 -N '' -f "$TB_DIR/client_key" <<< y >/dev/null
  ssh-keygen -q -t ed25519 -N '' -f "$TB_DIR/host_key" <<< y >/dev/null
  cp "$TB_DIR/client_key.pub" "$TB_DIR/authorized_keys"
  : > "$TB_DIR/ssh_config"
  : > "$TB_DIR/hosts_file"
  for i in $(seq 1 "$n"); do
    echo "$SUBNET.$i h$i" >> "$TB_DIR/hosts_file"
  done
  for i in $(seq 1 "$n"); do
    local h=h$i
    ip netns add "tb-$h"
    ip link add "tbv$i" type veth peer name "tbp$i"
    ip link set "tbv$i" netns "tb-$h"
    ip link set "tbp$i" netns tb-sw
    ip -n tb-sw link set "tbp$i" master br0
    ip -n tb-sw link set "tbp$i" up
    ip -n "tb-$h" link set lo up
    # Every host calls its interface eth0, as real nodes would (MPI
    # libraries select interfaces by name).
    ip -n "tb-$h" link set "tbv$i" name eth0
    ip -n "tb-$h" addr add "$SUBNET.$i/24" dev eth0
    ip -n "tb-$h" link set eth0 up
    touch "$UTS/$h"
    unshare --uts="$UTS/$h" hostname "$h"
    # Name resolution inside the namespaces: `ip netns exec` mounts
    # /etc/netns/tb-hi/hosts over /etc/hosts.
    mkdir -p "/etc/netns/tb-$h"
    { echo "127.0.0.1 localhost"; cat "$TB_DIR/hosts_file"; } > "/etc/netns/tb-$h/hosts"
    cat > "$TB_DIR/sshd_$h.conf" <<CONF
Port 2222
ListenAddress $SUBNET.$i
HostKey $TB_DIR/host_key
PidFile $TB_DIR/sshd_$h.pid
AuthorizedKeysFile $TB_DIR/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AcceptEnv COURIER_*
SetEnv PATH=$PATH
CONF
    # Through `ip netns exec`, so sessions see the per-host /etc/hosts.
    ip netns exec "tb-$h" nsenter --uts="$UTS/$h" \
      /usr/sbin/sshd -f "$TB_DIR/sshd_$h.conf" -E "$TB_DIR/sshd_$h.log"
    cat >> "$TB_DIR/ssh_config" <<CONF
Host $h
  HostName $SUBNET.$i
  Port 2222
  User root
  IdentityFile $TB_DIR/client_key
  IdentitiesOnly yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
  BatchMode yes
  ConnectTimeout 5
CONF
  done
  echo "$n" > "$TB_DIR/hosts"
  # For launchers that want a command (mpiexec.hydra -launcher-exec).
  printf '#!/bin/sh\nexec ssh -F %s "$@"\n' "$TB_DIR/ssh_config" > "$TB_DIR/ssh-wrapper"
  chmod +x "$TB_DIR/ssh-wrapper"
  # Wait until every sshd answers (from inside h1).
  for i in $(seq 1 "$n"); do
    for _ in $(seq 50); do
      if ip netns exec tb-h1 ssh -F "$TB_DIR/ssh_config" "h$i" true 2>/dev/null; then
        break
      fi
      sleep 0.1
    done
  done
}

slurm() {
  local n
  n=$(host_count)
  [ "$n" -gt 0 ] || { echo "testbed is not up" >&2; exit 2; }
  if [ -f "$TB_DIR/slurm/slurmctld.pid" ] && kill -0 "$(cat "$TB_DIR/slurm/slurmctld.pid")" 2>/dev/null; then
    return 0
  fi
  need_slurm
  local D=$TB_DIR/slurm
  mkdir -p "$D/state" /run/munge
  chown munge:munge /run/munge 2>/dev/null || true
  if ! pgrep -x munged >/dev/null; then
    [ -f /etc/munge/munge.key ] || /usr/sbin/mungekey -c 2>/dev/null || create-munge-key 2>/dev/null || true
    runuser -u munge -- /usr/sbin/munged --pid-file="$D/munged.pid" 2>/dev/null || runuser -u munge -- /usr/sbin/munged
    echo started > "$D/munged.ours"
  fi
  local nodes="" names=""
  for i in $(seq 1 "$n"); do
    mkdir -p "$D/spool/h$i"
    nodes+="NodeName=h$i NodeAddr=$SUBNET.$i CPUs=2 State=UNKNOWN"$'\n'
    names+="${names:+,}h$i"
  done
  cat > "$D/slurm.conf" <<CONF
ClusterName=tb
SlurmctldHost=h1($SUBNET.1)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool/%n
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.%n.pid
SlurmctldLogFile=$D/slurmctld.log
SlurmdLogFile=$D/slurmd.%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
${nodes}PartitionName=debug Nodes=$names Default=YES MaxTime=INFINITE State=UP
CONF
  on h1 env SLURM_CONF="$D/slurm.conf" slurmctld -i
  for i in $(seq 1 "$n"); do
    on "h$i" env SLURM_CONF="$D/slurm.conf" slurmd
  done
  for _ in $(seq 100); do
    if ip netns exec tb-h1 env SLURM_CONF="$D/slurm.conf" sinfo -h -o '%T %D' 2>/dev/null | grep -q "^idle $n\$"; then
      return 0
    fi
    sleep 0.2
  done
  echo "slurm did not come up" >&2
  exit 1
}

down() {
  local D=$TB_DIR/slurm
  for f in "$D"/slurmd.*.pid "$D"/slurmctld.pid; do
    [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
  done
  if [ -f "$D/munged.ours" ]; then
    pkill -x munged 2>/dev/null || true
  fi
  for f in "$TB_DIR"/sshd_*.pid; do
    [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
  done
  # Anything still running inside a test namespace goes too.
  for ns in $(ip netns list 2>/dev/null | awk '/^tb-/{print $1}'); do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  for f in /etc/netns/tb-h*; do
    [ -e "$f" ] && rm -rf "$f"
  done
  for f in "$UTS"/h*; do
    [ -e "$f" ] || continue
    umount "$f" 2>/dev/null || true
    rm -f "$f" 2>/dev/null || true
  done
  ip route del blackhole "$SUBNET.0/24" 2>/dev/null || true
  rm -rf "$TB_DIR"
}

exec_on() {
  local h=$1; shift
  [ -d "$TB_DIR" ] || { echo "testbed is not up" >&2; exit 2; }
  exec ip netns exec "tb-$h" nsenter --uts="$UTS/$h" \
    env COURIER_LAUNCH_AGENT="ssh -F $TB_DIR/ssh_config" \
    SLURM_CONF="$TB_DIR/slurm/slurm.conf" TB_SSH="$TB_DIR/ssh-wrapper" "$@"
}

case "${1:-}" in
  up) shift
      if [ "${2:-}" = --slurm ] || [ "${1:-}" = --slurm ]; then
        n=2; [ "${1:-}" = --slurm ] || n=$1
        up "$n"; slurm
      else
        up "$@"
      fi ;;
  slurm) slurm ;;
  down) down ;;
  exec) shift; exec_on "$@" ;;
  *) echo "usage: $0 up [N] | slurm | down | exec HOST CMD..." >&2; exit 2 ;;
esac
