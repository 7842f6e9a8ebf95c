#!/usr/bin/env bash
# A population (configs/ood_suite.py, or any config with trainer ood_suite)
# over a SLURM job array, then one dependent job that evaluates it.
#
# Usage: launch/slurm_population.sh NUM_TASKS CONFIG WORKDIR [overrides...]
#   e.g. launch/slurm_population.sh 4 configs/ood_suite.py runs/ood_suite
#
# Array task i runs
#   python -m crl.main --config=CONFIG --workdir=WORKDIR \
#     --config.population.num_tasks=N --config.population.task_index=i
# which trains units i, i+N, i+2N, ... of the population (a unit: a group of
# members that share an architecture, trained in one program by
# crl.population, or a member trained alone; see crl/trainers/suite_groups.py)
# into the shared WORKDIR and evaluates nothing. Tasks may start, fail and be
# requeued in any order:
#   * each unit trains under its directory's lock (run.lock): a second live
#     task on the same unit skips it; the lock of a dead task on the same
#     host is taken over (a lock left on ANOTHER host by a dead task must be
#     removed by hand: its liveness cannot be checked from here);
#   * a unit resumes from its last checkpoint (Orbax), and a member whose
#     final checkpoint exists is never trained again;
#   * the evaluation job (afterany: it runs even if some tasks failed) is the
#     plain suite command: it reuses every finished member, trains whatever a
#     failed task left undone, and writes results.csv / results.json / plots.
# Bad input (one line on stderr, exit code 2, nothing written): a task index
# outside [0, NUM_TASKS), a WORKDIR written by another config, member names
# that collide.
#
# Several hosts: a population is one process's program (crl/population.py
# refuses to run under jax.distributed with several processes), so hosts
# share the work as array tasks do, each its own process with its own index
# and --distributed=off, linked only by the shared WORKDIR (its locks and
# checkpoints). Here that is one array task per node; on a TPU VM slice,
# launch/tpu_vm_population.sh runs worker i as task i of N = the workers;
# by hand: on host i of N,
#   python -m crl.main --config=CONFIG --workdir=WORKDIR --distributed=off \
#     --config.population.num_tasks=N --config.population.task_index=i
# then, once all are done, the plain command (any one host) evaluates.
# Members that should span hosts as one data-parallel run (a model too big
# for one host) train one at a time instead: --config.population.group=off
# with jax.distributed on every host (launch/slurm.sbatch, launch/tpu_vm.sh).
#
# Local test of the coordination: tests/test_population_array.py.
set -euo pipefail
n=${1:?usage: launch/slurm_population.sh NUM_TASKS CONFIG WORKDIR [overrides...]}
config=${2:?config}; workdir=${3:?workdir}; shift 3
if ! [[ $n =~ ^[1-9][0-9]*$ ]]; then
  echo "NUM_TASKS must be a positive integer, got '$n'." >&2; exit 2
fi
extra=$(printf ' %q' "$@")
array=$(sbatch --parsable --job-name=crl-pop --array="0-$((n - 1))" \
  --nodes=1 --ntasks=1 --cpus-per-task="${CRL_CPUS:-16}" \
  --gpus-per-task="${CRL_GPUS:-1}" --time="${CRL_TIME:-24:00:00}" \
  --signal=TERM@120 --requeue --wrap \
  "python -m crl.main --config=$config --workdir=$workdir \
   --config.population.num_tasks=$n \
   --config.population.task_index=\$SLURM_ARRAY_TASK_ID$extra")
sbatch --job-name=crl-pop-eval --dependency="afterany:$array" --nodes=1 \
  --ntasks=1 --cpus-per-task="${CRL_CPUS:-16}" --gpus-per-task="${CRL_GPUS:-1}" \
  --time="${CRL_TIME:-24:00:00}" --signal=TERM@120 --requeue --wrap \
  "python -m crl.main --config=$config --workdir=$workdir$extra"
echo "Submitted array $array ($n tasks) and its evaluation job."
