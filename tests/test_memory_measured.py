"""Memory predicted by dicesim against what the executor's gloo ranks really allocated (docs/memory.md).

One 2-rank gloo run of the tiny preset per strategy with ``measure_memory``: every rank counts
its model's parameters and buffers (the weights, exactly) and the peak bytes of the tensors the
run allocated while sampling (:class:`validate.executor.memprobe.LiveTensorBytes`). The
prediction is :func:`dicesim.plan.memory.estimate_memory` fed the routing each rank really saw
(:func:`validate.executor.summary.memory_comparison`, what ``python -m validate run --measure-memory``
prints).

- weights: equal, byte for byte;
- live tensors: the working set of one block plus the buffers held across steps, within the
  stated tolerance, 15 %. The runtime allowance (CUDA context, NCCL) has no CPU counterpart and
  is not part of the comparison.

``displaced`` runs with ``buffer_policy="reference"`` here: under ``reference_gc`` the send
buffers the plan frees stay alive on gloo until their collective is waited (the Work object
keeps its tensors), which the model does not count (docs/memory.md, "What is left out").
"""

from __future__ import annotations

import pytest
import torch

from dicesim.strategy import make_strategy
from validate.executor.launch import launch
from validate.executor.summary import memory_comparison
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


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_predicted_memory_matches_the_executors_allocations(outcomes, name):
    c = memory_comparison(outcomes[name])
    assert c["memory_weights_nbytes_per_rank"] == c["memory_predicted_weights_nbytes_per_rank"]
    for measured, predicted in zip(c["memory_peak_live_nbytes_per_rank"], c["memory_predicted_live_nbytes_per_rank"]):
        assert abs(measured / predicted - 1) <= TOLERANCE, (name, measured, predicted)
