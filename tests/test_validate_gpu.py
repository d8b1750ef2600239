"""NCCL + CUDA path of the executor (runs only where CUDA exists; 1 GPU gives a 1-rank NCCL group).

Same checks as the gloo tests, with looser tolerances (GPU kernels vs CPU reference), plus
the CUDA-event trace: compute intervals must not overlap on the compute stream and
collectives must end after they start.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dicesim.plan import build_plan, lag_table
from dicesim.strategy import make_strategy
from dicesim.trace import read_trace

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA and NCCL")]


def test_nccl_runs_match_references(tmp_path):
    from validate.executor.launch import launch
    from validate.model.model import DiTMoE
    from validate.model.sampler import SamplerConfig, sample_reference
    from validate.executor.summary import expected_held_nbytes, summarize, write_run_trace
    from validate.executor.worker import RunSpec, global_inputs, run_emulated

    world = min(2, torch.cuda.device_count())
    specs = [RunSpec(strategy=make_strategy(name), steps=5, batch=2, shadow=shadow)
             for name, shadow in (("sync", False), ("dice", True), ("displaced", False))]
    outcomes = launch(specs, world_size=world, backend="nccl", timeout_s=60)
    sync = outcomes[0]
    model = DiTMoE.for_image(sync.spec.preset, sync.spec.image_size, seed=0)
    _, y_G = global_inputs(sync.spec, world * sync.spec.batch)
    ref = sample_reference(model, y_G, config=SamplerConfig(num_steps=5, guidance_scale=4.0), seed=0)
    got = torch.cat([r.samples_BCLL for r in sync.ranks])
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    for outcome in outcomes[1:]:
        spec = outcome.spec
        emulated = run_emulated(spec, world, device="cuda")
        torch.testing.assert_close(torch.cat([r.samples_BCLL for r in outcome.ranks]), emulated.samples_BCLL,
                                   atol=1e-4, rtol=1e-4)
        lags = lag_table(build_plan(spec.strategy, spec.preset.depth, spec.steps))
        for r in outcome.ranks:
            np.testing.assert_array_equal(r.record.lag_kept, lags.kept)
            for t in range(spec.steps):
                assert r.record.held_nbytes[t] == expected_held_nbytes(outcome, r.record, t)
        s = summarize(outcome)
        assert all(v >= 0 for v in s["exposed_comm_s"]) and s["device"].startswith("cuda")
    paths = write_run_trace(outcomes[1], tmp_path)  # validates: no overlap on the compute stream
    df, _ = read_trace(paths["parquet"])
    comp = df[df["kind"] == "compute"]
    assert len(comp) > 0 and (comp["end_us"] > comp["start_us"]).any()
    coll = df[df["kind"] == "collective"]
    assert len(coll) > 0 and (coll["end_us"] >= coll["start_us"]).all()
