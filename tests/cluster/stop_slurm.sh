#!/usr/bin/env bash
# Stop the cluster tests/cluster/start_slurm.sh started in DIR: its own daemons only, by the
# process ids in DIR's pid files (never by name: a machine's real SLURM is left alone).
set -uo pipefail
dir=$(realpath "${1:?usage: stop_slurm.sh DIR}")
export SLURM_CONF="$dir/slurm.conf"
# seconds to wait for the jobs to end
drain_timeout_s=${SLURM_DRAIN_TIMEOUT_S:-20}

# Every job of this private cluster is the test's: cancel what is left and wait until slurmd
# has seen each one end (a job step whose slurmd is gone waits for it forever). A sweep ends
# when its jobs' results are written, a moment before SLURM has finished them.
if [[ -s $dir/slurmctld.pid ]] && kill -0 "$(cat "$dir/slurmctld.pid")" 2>/dev/null; then
  squeue -h -o %A 2>/dev/null | sort -u | xargs -r scancel 2>/dev/null
  for _ in $(seq "$drain_timeout_s"); do
    [[ -z $(squeue -h -o %A 2>/dev/null) ]] && break
    sleep 1
  done
fi
for pid_file in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
  if [[ -s $pid_file ]]; then
    kill "$(cat "$pid_file")" 2>/dev/null || true
  fi
done
exit 0
