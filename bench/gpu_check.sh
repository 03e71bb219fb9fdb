#!/usr/bin/env bash
# The first GPU run in one go (issue 19), under 8 minutes: parity on CUDA in float32, the
# float16/bfloat16 NaN rate, bench/sampler.py bfloat16 (+ compile) against the reference's
# fp16 path (ratio, fraction of peak), a two-process torchrun mini sweep against one process.
# Writes one JSON (--out, default gpu_check.json). See bench/gpu_check.py for each check.
#
#   bench/gpu_check.sh                                   # on the GPU machine, from the repository root
#   bench/gpu_check.sh --device cpu --quick --out /tmp/gpu_check.json   # dry run on a CPU
#
# Optional: GLIDE_CHECKPOINTS (released weights for the NaN rate), a glide-text2im checkout on
# PYTHONPATH (the reference for the benchmark), --fixtures DIR (default ../shared/golden).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
if [ -z "${TIKTOKEN_CACHE_DIR:-}" ] && [ -d ../shared/tiktoken_cache ]; then
    export TIKTOKEN_CACHE_DIR="$PWD/../shared/tiktoken_cache"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
exec timeout 470 "$PYTHON" bench/gpu_check.py "$@"
