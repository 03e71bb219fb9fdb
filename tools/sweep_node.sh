#!/usr/bin/env bash
# One node's share of a multi-node sweep: the torchrun launcher of this node, which starts
# one sweep process per GPU. docs/cluster.sbatch runs it once per node (srun, one task per
# node); tests/test_sweep_nodes.py runs it as two "nodes" on one machine.
#
#   tools/sweep_node.sh CONFIG [glide-eval sweep options]
#
# From Slurm: SLURM_JOB_NUM_NODES (nodes), SLURM_GPUS_ON_NODE (processes per node),
# SLURM_JOB_ID (the rendezvous id). Set by the batch script or by hand:
#   RDZV_HOST      the host of the c10d rendezvous (the job's first node)
#   RDZV_PORT      its port (default 29400)
#   MIN_NODES      go on with this many nodes when others are lost (default: all of them)
#   MAX_RESTARTS   restarts of a failed worker group before giving up (default 3)
#   NPROC_PER_NODE processes per node (default SLURM_GPUS_ON_NODE, else 1)
#   LOCAL_ADDR     this node's address for the other nodes (default: torchrun looks it up)
#   PYTHON         the Python of the glide-eval install (default python)
set -euo pipefail
nodes=${SLURM_JOB_NUM_NODES:?run under srun, or set SLURM_JOB_NUM_NODES}
# each round of workers gets a fresh store (hosted by its rank 0): the store torchrun shares
# with its workers by default keeps the last round's keys, and a restarted round's gloo could
# read the old, dead addresses in it ("Connection refused" after a restart)
export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1
exec "${PYTHON:-python}" -m torch.distributed.run \
    --nnodes "${MIN_NODES:-$nodes}:$nodes" \
    --nproc-per-node "${NPROC_PER_NODE:-${SLURM_GPUS_ON_NODE:-1}}" \
    --rdzv-backend c10d \
    --rdzv-endpoint "${RDZV_HOST:?set RDZV_HOST to the first node of the job}:${RDZV_PORT:-29400}" \
    --rdzv-id "${SLURM_JOB_ID:-glide-eval}" \
    --max-restarts "${MAX_RESTARTS:-3}" \
    ${LOCAL_ADDR:+--local-addr "$LOCAL_ADDR"} \
    -m glide_eval sweep "$@"
