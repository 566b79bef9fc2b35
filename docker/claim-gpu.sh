#!/bin/sh
# Usage: claim-gpu COMMAND [ARG...]
#
# Runs COMMAND on one GPU taken from the pool GOLD_GPU_POOL (comma-separated host GPU ids, in
# nvidia-smi order), so that `docker compose up --scale trainer=N` gives each replica its own GPU.
# Why: every replica of a compose service gets the same device request, and Docker resolves
# `count: 1` to GPU 0 for every container, so replicas (and the generator) would all share GPU 0.
# Each replica holds an flock on a file in a volume all replicas mount; the kernel releases it when
# the process exits, so a restarted or crashed replica frees its GPU without any clean-up.
# An empty pool (the CPU override) runs COMMAND unchanged.
set -eu

pool=${GOLD_GPU_POOL:-}
if [ -z "$pool" ]; then
    exec "$@"
fi

lock_dir=${GOLD_GPU_LOCK_DIR:-/var/lib/gold/gpu-locks}
mkdir -p "$lock_dir"
for gpu in $(printf '%s' "$pool" | tr ',' ' '); do
    # fd 9 stays open across exec: COMMAND inherits it and holds the lock for its whole life.
    exec 9>"$lock_dir/gpu-$gpu.lock"
    if flock -n 9; then
        export CUDA_VISIBLE_DEVICES="$gpu"
        echo "claim-gpu: running on GPU $gpu (pool $pool)" >&2
        exec "$@"
    fi
done
exec 9>&-
echo "claim-gpu: every GPU in the pool ($pool) is held by another replica;" \
     "run at most one replica per GPU or add GPU ids to GOLD_TRAINER_GPUS" >&2
exit 75
