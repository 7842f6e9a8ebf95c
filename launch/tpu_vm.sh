#!/usr/bin/env bash
# Runs the same command on every worker of a Cloud TPU VM slice; on TPU pods
# jax.distributed.initialize() finds the coordinator and process ids itself.
# The repository must be at the same path on every worker, installed with
# `pip install -e '.[tpu]'`, and the workdir on shared storage (e.g. gs://).
#
# Usage: launch/tpu_vm.sh TPU_NAME ZONE configs/nac.py:imagenet gs://bucket/runs/nac_in1k [overrides...]
set -euo pipefail
tpu=${1:?TPU name}; zone=${2:?zone}; config=${3:?config}; workdir=${4:?workdir}
shift 4
repo=${CRL_REPO:-~/crl}
gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command \
  "cd $repo && python -m crl.main --config=$config --workdir=$workdir --distributed=on $*"
