"""Cross-check against the DICE reference itself: its ``seqpara/`` code run by the dicecheck harness.

``tests/data/reference_sp.json`` holds numbers the harness measured running the reference's own
code on gloo CPU ranks (extracted by ``tests/data/extract_reference_sp.py``; the harness stays
outside this repository, docs/sequence-parallel.md describes it). For every run, the reference
command line read by :mod:`dicesim.reference_flags` gives dicesim's strategy, and

- the plan's K/V lag of every (step, layer) equals the lag the harness measured (by exact match
  of the K/V used against fresh shadow gathers);
- the plan's K/V buffer bytes equal the bytes of the comm manager's buffers at every step end;
- the plan's collectives (scatter, broadcast, K/V gathers blocking and flattened, the final token
  gather) equal the calls the harness recorded, count and bytes, and the flattened gathers go out
  at the layers where the reference sent them;
- the executor on gloo ranks measures the same lags and the same buffer bytes per layer.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from dicesim.errors import ConfigError
from dicesim.models import DTYPE_NBYTES
from dicesim.plan import build_plan
from dicesim.plan.sequence.buffers import kv_buffer_nbytes
from dicesim.plan.sequence.kinds import (
    BROADCAST, GATHER_TOKENS, KV_FRESH, KV_ISSUE, KV_SYNC, QKV, SCATTER,
)
from dicesim.reference_flags import strategy_from_reference_flags
from dicesim.strategy import SequenceParallelStrategy, make_strategy

DATA = json.loads((Path(__file__).parent / "data" / "reference_sp.json").read_text())
RUNS = DATA["runs"]
MODELLED = ("sp", "distrifusion", "distrifusion_warmup", "sp_w4", "distrifusion_w4", "sp_single_img",
            "distrifusion_single_img", "distrifusion_plain")
B = {"float16": DTYPE_NBYTES["fp16"], "float32": DTYPE_NBYTES["fp32"]}


def _strategy(run: dict) -> SequenceParallelStrategy:
    strategy, _ = strategy_from_reference_flags(" ".join(run["reference_flags"]))
    assert isinstance(strategy, SequenceParallelStrategy)
    return strategy


def _sizes(run: dict) -> tuple[int, int, int]:
    """(images per forward, tokens of one rank's slices, bytes of one token row)."""
    W = run["world_size"]
    return run["images_per_forward"], run["images_per_forward"] * run["tokens_per_image"] // W, \
        run["hidden"] * B[run["dtype"]]


def _plan_collectives(plan, t: int, tpr: int, images: int, row: int) -> dict[str, dict[str, int]]:
    """The reference's call names for what the plan does at step ``t``: count and local input bytes."""
    acts = plan.steps[t]
    c = Counter(a.kind for a in acts)
    issued = [a for a in acts if a.kind == KV_ISSUE]
    out = {"scatter:-:sync": (c[SCATTER], tpr), "broadcast:-:sync": (c[BROADCAST], images),
           "all_gather:kv_sync:sync": (2 * c[KV_SYNC], 2 * c[KV_SYNC] * tpr),  # K and V, one gather each
           "all_gather:kv_async_path:sync": (c[KV_FRESH], 2 * c[KV_FRESH] * tpr),
           "all_gather:kv_group_async:async": (len(issued), 2 * tpr * sum(a.span for a in issued)),
           "all_gather:gather_x_final:sync": (c[GATHER_TOKENS], tpr)}
    return {k: {"count": n, "bytes_local": rows * row} for k, (n, rows) in out.items() if n}


def _issue_points(plan, steps: int) -> list[tuple[int, int | None, list[int]]]:
    """(step, layer at which it was sent (None: before the blocks, by a clear), layers) of every flattened gather."""
    out = []
    for t in range(steps):
        layer = None
        for a in plan.steps[t]:
            if a.kind == QKV:
                layer = a.layer
            elif a.kind == KV_ISSUE:
                out.append((t, layer, list(a.layers)))
    return out


@pytest.mark.parametrize("name", MODELLED)
def test_plan_equals_the_reference(name):
    run = RUNS[name]
    assert run["status"] == "ok" and run["ranks_agree"] and run["sampler"] == "rf"
    W, L, T = run["world_size"], run["depth"], run["steps"]
    strategy = _strategy(run)
    images, tpr, row = _sizes(run)
    assert strategy.images_in_batch(run["per_proc_batch"] * 2, W) == images  # x2: guidance halves
    plan = build_plan(strategy, L, T)
    assert plan.lags.kept.tolist() == run["kv_lag_others"] and run["kv_lag_own_max"] == 0
    held = run["kv_held_end_of_step"]
    measured_T = np.add(held["kv_buffer_own"], held["kv_buffer_others"])
    planned_T = np.array([len(h) * kv_buffer_nbytes(W, tpr, row) for h in plan.held])
    # the reference never frees its buffers; dicesim's plans count nothing after the last step
    assert measured_T[:-1].tolist() == planned_T[:-1].tolist() and measured_T[-1] == measured_T[0]
    if strategy.kv_async:
        assert measured_T[0] == 2 * L * images * run["tokens_per_image"] * row  # 2 L N_img T D b
        assert set(run["sp_cached_tensors_size"]) == {measured_T[0]}  # the reference's own count (df.py:48-55)
    for t, calls in run["collectives"].items():
        assert _plan_collectives(plan, int(t), tpr, images, row) == calls, (name, t)
    groups = [(g["step"], g["issued_at_layer"], g["layers"]) for g in run["kv_groups"]]
    assert _issue_points(plan, 3) == groups


def test_legacy_cache_and_sp_ep_are_stated_not_modelled():
    legacy = RUNS["distrifusion_legacy"]
    strategy, notes = strategy_from_reference_flags(" ".join(legacy["reference_flags"]))
    assert any("--sp-legacy-cache is not modelled" in n for n in notes)
    # the lag it reports is the reference's; the collectives are not: K and V per layer, every step
    assert build_plan(strategy, legacy["depth"], legacy["steps"]).lags.kept.tolist() == legacy["kv_lag_others"]
    assert legacy["collectives"]["1"]["all_gather:kv_async_path:async"]["count"] == 2 * legacy["depth"]
    with pytest.raises(ConfigError, match="not modelled by dicesim yet"):
        strategy_from_reference_flags(" ".join(RUNS["sp_ep"]["reference_flags"]))


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 4])
def test_executor_measures_the_reference_lags_and_buffers(world):
    """The executor's tiny model (4 layers, hidden 32, 16 tokens per image, as the harness's model but
    half as deep) in fp16 on gloo ranks: its measured K/V lags equal the reference's on the same layers,
    its buffer bytes per layer equal the reference's per layer."""
    from validate.executor.launch import launch
    from validate.executor.worker import RunSpec

    names = [n for n in MODELLED if RUNS[n]["world_size"] == world and RUNS[n]["dtype"] == "float16"]
    specs = [RunSpec(strategy=_strategy(RUNS[n]), model="tiny", steps=RUNS[n]["steps"], batch=1, image_size=64,
                     dtype="fp16", trace=False) for n in names]
    for name, outcome in zip(names, launch(specs, world_size=world, timeout_s=120)):
        run = RUNS[name]
        held = run["kv_held_end_of_step"]
        per_layer = (held["kv_buffer_own"][0] + held["kv_buffer_others"][0]) // run["depth"]
        for r in outcome.ranks:
            rec = r.record
            L = rec.lag_kept.shape[1]
            assert rec.lag_kept.tolist() == [row[:L] for row in run["kv_lag_others"]], name
            assert all(set(h.values()) <= {per_layer} for h in rec.held_nbytes), name
            assert rec.held_total_nbytes[0] == per_layer * L * (1 if per_layer else 0), name


def test_every_sp_flag_is_read_and_explained():
    s, notes = strategy_from_reference_flags(
        "torchrun --nproc_per_node 4 sample_ddp.py --model DiT-S/2 --sp --sp-async --sp-async-warm-up 3 --single-img "
        "--auto-gc --ep-async-noskip-step 2")
    assert s == SequenceParallelStrategy(name="reference", kv_async=True, warmup_steps=3, single_img=True)
    joined = " ".join(notes)
    for needle in ("DDPM path", "--single-img", "--auto-gc has no effect", "conditional communication"):
        assert needle in joined
    assert strategy_from_reference_flags("--sp")[0] == make_strategy("sp").model_copy(update={"name": "reference"})
    for flags, message in (("--sp-async", "--sp-async needs --sp"), ("--sp --sp-legacy-cache", "needs --sp-async"),
                           ("--sp --auto-gc", "--auto-gc needs"), ("--sp --ep-async-pipeline", "needs --ep-async")):
        with pytest.raises(ConfigError, match=message):
            strategy_from_reference_flags(flags)
