#!/usr/bin/env bash
# One command for a GPU machine (issue 13): the wan22-5b model (a local Wan2.2-TI2V-5B-Diffusers
# copy), 3 views x 49 frames x 480x704, bf16: one sampler step and one gradient-checkpointed
# training step (joint stage, DPA paper preset, K = 1600): time and peak memory, appended to
# docs/paper-scale.md with the GPU's name.
#   bench/gpu.sh /data/Wan2.2-TI2V-5B-Diffusers            # add OFFLOAD=1 for model CPU offload
set -euo pipefail
WAN_DIR=${1:?usage: bench/gpu.sh <Wan2.2-TI2V-5B-Diffusers dir>}
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
"$PY" bench/gpu_bench.py --wan-dir "$WAN_DIR" --frames "${FRAMES:-49}" --height "${HEIGHT:-480}" --width "${WIDTH:-704}" \
    --tracks "${TRACKS:-1600}" ${OFFLOAD:+--offload} --md docs/paper-scale.md
