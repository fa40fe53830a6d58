#!/usr/bin/env bash
# Start a throw-away single-node SLURM cluster (munged, slurmctld, slurmd) whose every file lives
# in DIR, for the submitit_slurm test. Needs root (slurmd launches jobs as their user) and
# Debian's packages: apt-get install --no-install-recommends slurmctld slurmd slurm-client munge
#
#   tests/cluster/start_slurm.sh DIR      # then: export SLURM_CONF=DIR/slurm.conf; sbatch ...
#   tests/cluster/stop_slurm.sh DIR
#
# Nothing outside DIR is touched: the daemons use their own munge socket and key, ports, state
# and spool directories, so a machine's real SLURM (if any) is left alone.
set -euo pipefail
dir=$(realpath "${1:?usage: start_slurm.sh DIR}")
mkdir -p "$dir"/{state,spool,munge}
chmod 700 "$dir/munge"
# seconds to wait for the node to come up
ready_timeout_s=${SLURM_READY_TIMEOUT_S:-30}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)

dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$dir/munge/munge.key"
munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
  --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed"

cat > "$dir/slurm.conf" <<CONF
ClusterName=stage2test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
# no cgroups in a container: track processes by their parent, bind no CPUs
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$dir/slurm.conf"
slurmctld -i  # -i: ignore state left by an earlier cluster in DIR
slurmd
for _ in $(seq "$ready_timeout_s"); do
  if sinfo -h -o %t 2>/dev/null | grep -qx idle; then
    echo "SLURM_CONF=$SLURM_CONF"
    exit 0
  fi
  sleep 1
done
echo "start_slurm.sh: the node did not become idle within ${ready_timeout_s}s" >&2
sinfo >&2 || true
tail -20 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 || true
exit 1
