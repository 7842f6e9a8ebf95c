#!/usr/bin/env bash
# A population (configs/ood_suite.py, or any config with trainer ood_suite)
# over the workers of a Cloud TPU VM slice: worker i trains units i, i+N, ...
# (N = the slice's workers) into the shared WORKDIR, each worker its own
# process (--distributed=off: a population is one process's program); then
# worker 0 evaluates with the plain command. See launch/slurm_population.sh
# for the coordination (locks, resume, requeue) and the README's
# "Populations" section. Not tested on a TPU here (no TPU on the build
# machine); the coordination itself is tests/test_population_array.py.
#
# Usage: launch/tpu_vm_population.sh TPU_NAME ZONE CONFIG WORKDIR [overrides...]
#   e.g. launch/tpu_vm_population.sh my-tpu us-central2-b configs/ood_suite.py gs://bucket/runs/ood_suite
set -euo pipefail
tpu=${1:?TPU name}; zone=${2:?zone}; config=${3:?config}; workdir=${4:?workdir}
shift 4
repo=${CRL_REPO:-~/crl}
extra=$(printf ' %q' "$@")
n=$(gcloud compute tpus tpu-vm describe "$tpu" --zone="$zone" \
  --format='value(networkEndpoints.len())')
if ! [[ $n =~ ^[1-9][0-9]*$ ]]; then
  echo "Could not read the number of workers of $tpu (got '$n')." >&2; exit 2
fi
worker='$(curl -s -H Metadata-Flavor:Google http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number)'
gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command \
  "cd $repo && python -m crl.main --config=$config --workdir=$workdir \
   --distributed=off --config.population.num_tasks=$n \
   --config.population.task_index=$worker$extra"
gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=0 --command \
  "cd $repo && python -m crl.main --config=$config --workdir=$workdir \
   --distributed=off$extra"
