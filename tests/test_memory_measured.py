"""Memory predicted by dicesim against what the executor's gloo ranks really allocated (docs/memory.md).

One 2-rank gloo run of the tiny preset per strategy with ``measure_memory``: every rank counts
its model's parameters and buffers (the weights, exactly) and the peak bytes of the tensors the
run allocated while sampling (:class:`validate.executor.memprobe.LiveTensorBytes`). The
prediction is :func:`dicesim.plan.memory.estimate_memory` fed the routing each rank really saw.

- weights: equal, byte for byte;
- live tensors: the working set of one block plus the buffers held across steps, within the
  stated tolerance, 15 %. The runtime allowance (CUDA context, NCCL) has no CPU counterpart and
  is not part of the comparison.

``displaced`` runs with ``buffer_policy="reference"`` here: under ``reference_gc`` the send
buffers the plan frees stay alive on gloo until their collective is waited (the Work object
keeps its tensors), which the model does not count (docs/memory.md, "What is left out").
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dicesim.models import block_workload
from dicesim.plan import build_plan
from dicesim.plan.memory import estimate_memory
from dicesim.sim.costs.routing import TokenRouting
from dicesim.strategy import make_strategy
from validate.executor.launch import launch
from validate.executor.worker import RunSpec

torch.set_num_threads(1)
TOLERANCE = 0.15
W, STEPS, BATCH, IMAGE = 2, 6, 2, 32
CASES = {"sync": {}, "data_parallel": {}, "displaced": {"buffer_policy": "reference"}, "interweaved": {},
         "dice": {}}


@pytest.fixture(scope="module")
def outcomes():
    specs = [RunSpec(strategy=make_strategy(name, **over), model="tiny", steps=STEPS, batch=BATCH, image_size=IMAGE,
                     trace=False, measure_memory=True) for name, over in CASES.items()]
    return dict(zip(CASES, launch(specs, world_size=W, backend="gloo")))


def _predicted(outcome):
    spec = outcome.spec
    ranks = sorted(outcome.ranks, key=lambda r: r.rank)
    recs = [r.record for r in ranks]
    layout = spec.layout(W)
    counts_LTWE = np.stack([r.router_hist for r in recs]).transpose(2, 1, 0, 3)
    routing = TokenRouting(placement=layout.placement, tokens_per_rank=recs[0].local_tokens,
                           top_k=spec.preset.top_k, counts_LTWE=counts_LTWE)
    wl = block_workload(spec.preset, batch=spec.batch, image_px=spec.image_size, dtype=spec.dtype)
    est = estimate_memory(build_plan(spec.strategy, spec.preset.depth, spec.steps), layout, wl,
                          image_tokens=spec.preset.tokens_per_image(spec.image_size), routing=routing,
                          row_nbytes=recs[0].row_nbytes, capacity_bytes=None)
    return ranks, est


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_predicted_memory_matches_the_executors_allocations(outcomes, name):
    ranks, est = _predicted(outcomes[name])
    held = [h for h in est.holders_W if h not in ("weights", "activations", "runtime", "allocator_slack")]
    for r in ranks:
        m = r.memory
        assert m["weights_parameters_nbytes"] + m["weights_buffers_nbytes"] == est.holders_W["weights"][r.rank]
        predicted = est.holders_W["activations"][r.rank] + sum(est.holders_W[h][r.rank] for h in held)
        assert abs(m["peak_live_nbytes"] / predicted - 1) <= TOLERANCE, (name, r.rank, m, predicted)
