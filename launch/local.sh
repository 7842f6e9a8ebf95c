#!/usr/bin/env bash
# Runs N processes of crl.main on this machine, joined by jax.distributed over
# localhost (process 0 is the coordinator). Useful to test multi-host code
# paths on one box; each process uses its local devices (one CPU device each,
# or set XLA_FLAGS=--xla_force_host_platform_device_count=K for K fake ones).
#
# Usage: launch/local.sh NUM_PROCESSES [PORT] -- --config=configs/nac.py:tiny --workdir=runs/mp
# Logs: every process writes $CRL_LAUNCH_LOGS/process_<i>.log (default
# ./runs/launch_logs); process 0's output is also streamed to the console.
set -euo pipefail
n=${1:?usage: launch/local.sh NUM_PROCESSES [PORT] -- ARGS...}; shift
port=23456
if [[ ${1:-} != "--" ]]; then port=$1; shift; fi
[[ ${1:-} == "--" ]] && shift
logs=${CRL_LAUNCH_LOGS:-runs/launch_logs}
mkdir -p "$logs"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM
for ((i = 0; i < n; i++)); do
  args=(--coordinator_address="127.0.0.1:$port" --num_processes="$n"
        --process_id="$i" "$@")
  if ((i == 0)); then
    # tee in a process substitution: $! stays python's pid (its exit status).
    python -m crl.main "${args[@]}" > >(tee "$logs/process_0.log") 2>&1 &
  else
    python -m crl.main "${args[@]}" >"$logs/process_$i.log" 2>&1 &
  fi
  pids+=($!)
done
status=0
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    echo "process $i failed; see $logs/process_$i.log" >&2
    status=1
  fi
done
pids=()
exit $status
