#!/usr/bin/env bash
# Regenerates traces/reference/: the executor (gloo, CPU) on the tiny model, 2 and 4 ranks,
# every strategy preset, 6 steps, batch 2, 32 px. Each run is exactly the command echoed. Ulysses splits
# the heads over the ranks, and tiny's 2 heads do not split over 4: it runs the small model (4 heads). USP (preset
# usp: ulysses_degree 2) splits them over 2 ranks only, which tiny's 2 heads allow: at 2 ranks it is one Ulysses
# group (ring degree 1), at 4 two Ulysses groups around rings of 2.
set -euo pipefail
cd "$(dirname "$0")/.."
out=traces/reference
mkdir -p "$out"
for world in 2 4; do
  for strategy in sync data_parallel displaced interweaved displaced-deep interweaved-deep dice sp distrifusion ulysses ring usp; do
    model=tiny
    [ "$strategy" = ulysses ] && model=small
    cmd="python3 -m validate run --world-size $world --backend gloo --model $model --strategy $strategy --steps 6 --batch 2 --image-size 32 --trace-out $out"
    echo "$cmd"
    $cmd > /dev/null
  done
done
