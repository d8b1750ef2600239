#!/usr/bin/env bash
# One prepared run for a lent GPU: every check here that only a GPU can make, in one go, each step under
# its own time limit, so one that fails or overruns does not cost the others (about 10 minutes in all on
# an H100/H200; the device budget of a session is 15). From the repository root on the device machine:
#
#     bash benchmarks/gpu_session.sh "$OUT"
#
# Writes $OUT/gpu/<device name>/: nvidia-smi.txt, log.txt (everything printed), and per step the folder
# its script writes (attention curves, the experts' host cost with and without cuBLASLt's heuristics
# cache, the host-staged overlap check). Commit what it measured under traces/gpu/ with a README that
# says how it was made (traces/gpu/README.md).
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_session.sh OUT_DIR}
export PYTHONPATH=. PYTHONUNBUFFERED=1
name=$(python3 -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '-'))" 2>/dev/null) || {
  echo "error: no CUDA device visible to torch" >&2; exit 2; }
dest="$out/gpu/$name"
mkdir -p "$dest"
nvidia-smi > "$dest/nvidia-smi.txt" 2>&1
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$dest/log.txt"

step() {  # step LABEL SECONDS CMD...: run CMD under a limit, log it, go on whatever it returns
  local label=$1 limit=$2; shift 2
  echo "== $label (limit ${limit} s): $*" | tee -a "$dest/log.txt"
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee -a "$dest/log.txt"
  echo "== $label: exit ${PIPESTATUS[0]} after $((SECONDS - t0)) s" | tee -a "$dest/log.txt"
}

step attention-curves 180 python3 benchmarks/gpu_attention_curves.py --device cuda --out "$dest/attention"
step expert-path 180 python3 benchmarks/gpu_expert_path.py --device cuda --out "$dest/expert-path"
step expert-path-nocache 180 env CUBLASLT_HEURISTICS_CACHE_CAPACITY=0 \
  python3 benchmarks/gpu_expert_path.py --device cuda --out "$dest/expert-path-nocache"
step overlap 360 python3 benchmarks/gpu_overlap_check.py --device cuda --out "$dest/overlap"
echo "wrote $dest" | tee -a "$dest/log.txt"
