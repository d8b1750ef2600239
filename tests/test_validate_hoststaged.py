"""Host-staged executor mode on the CPU: W emulated ranks, cross-rank rows through host buffers.

- every strategy equals the emulation (no copies) bit for bit, with the same lags and buffers;
- each dispatch/combine moves exactly the rows whose owner rank differs from their source rank
  (brute force over the routed copies), which is what the simulator's routing predicts;
- the count exchange moves the counts meant for other ranks;
- traces validate, waits sit on the compute track, and calibration's measurement reads them;
- ``python -m validate run --transport host-staged`` runs and rejects bad input in one line.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from dicesim.calibrate.measure import measured_metrics
from dicesim.calibrate.runs import load_runs
from dicesim.plan import build_plan
from dicesim.sim.hoststaged import staged_rows_LT
from dicesim.sim.costs.routing import TokenRouting
from dicesim.strategy import make_strategy
from dicesim.trace import read_trace
from validate.cli import main
from validate.executor.copypath import chunk_bounds
from validate.executor.hoststaged import run_host_staged
from validate.executor.worker import RunSpec, run_emulated

torch.set_num_threads(1)
STEPS = 5

CASES = {  # name: (world size, strategy preset, overrides, experts)
    "sync-w2": (2, "sync", {}, None),
    "displaced-w4": (4, "displaced", {}, None),
    "interweaved-w4": (4, "interweaved", {}, None),
    "dice-w4": (4, "dice", {}, None),
    "dice-w2": (2, "dice", {}, None),
    "displaced-deep-w4": (4, "displaced-deep", {}, None),
    "dice-separate-counts": (4, "dice", {"count_comm": "separate"}, None),
    "dice-random": (4, "dice", {"cond_policy": "random", "seed": 3}, None),
    "dice-groups-w8": (8, "dice", {}, None),  # 4 experts, 8 ranks: two EP groups
    "interweaved-2experts-strided": (4, "interweaved", {}, 2),
    "data-parallel": (4, "data_parallel", {}, None),
}


def _spec(name: str, **kw) -> RunSpec:
    W, preset, over, experts = CASES[name]
    return RunSpec(strategy=make_strategy(preset, **over), steps=STEPS, batch=1, num_experts=experts,
                   group_layout="strided" if "strided" in name else "contiguous", **kw)


@pytest.fixture(scope="module")
def runs():
    out = {}
    for name, (W, *_rest) in CASES.items():
        idx: dict = {}

        def probe(*, step, layer, idx_NK, **_kw):
            idx[(step, layer)] = idx_NK.clone()

        spec = _spec(name)
        from validate.executor.hoststaged import host_staged_for

        transport = host_staged_for(spec, W)
        staged = run_emulated(spec, W, transport=transport, probe=probe)
        transport.close()
        out[name] = (spec, W, staged, run_emulated(spec, W), idx, transport.router_hist_WTLE())
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_equals_the_emulation_bit_for_bit(name, runs):
    _spec_, _W, staged, ref, _idx, _hist = runs[name]
    assert torch.equal(staged.samples_BCLL, ref.samples_BCLL)
    a, b = staged.record, ref.record
    assert np.array_equal(a.lag_kept, b.lag_kept) and np.array_equal(a.lag_dropped, b.lag_dropped)
    assert a.held_total_nbytes == b.held_total_nbytes and a.recv_rows == b.recv_rows


def _expected_crossing(spec: RunSpec, W: int, idx_NK: torch.Tensor, skip: bool) -> int:
    """Brute force: copies whose expert's owner (in the source rank's EP group) is another rank."""
    placement = spec.placement(W)
    T_img = spec.preset.tokens_per_image(spec.image_size)
    G = W * spec.batch
    groups = placement.groups()
    n = 0
    for tok, experts in enumerate(idx_NK.tolist()):
        src = ((tok // T_img) % G) // spec.batch
        for e in experts[:1] if skip else experts:
            n += groups[placement.group_of(src)][placement.owner(e)] != src
    return n


@pytest.mark.parametrize("name", ["sync-w2", "dice-w4", "dice-groups-w8", "interweaved-2experts-strided",
                                  "displaced-w4"])
def test_bytes_moved_are_the_crossing_rows(name, runs):
    spec, W, staged, _ref, idx, hist = runs[name]
    plan = build_plan(spec.strategy, spec.preset.depth, STEPS)
    skips = {(a.layer, a.tok_step): a.skip for _, acts in plan for a in acts if a.kind in ("issue_dispatch", "sync_moe")}
    colls = [r for r in staged.trace_rows if r[1] == "collective" and r[2] in ("dispatch", "combine")]
    assert len(colls) == 2 * sum(1 for _, acts in plan for a in acts if a.kind in ("sync_moe", "issue_dispatch"))
    tokens = staged.record.local_tokens // W
    routing = TokenRouting(placement=spec.placement(W), tokens_per_rank=tokens, top_k=spec.preset.top_k,
                           counts_LTWE=np.ascontiguousarray(hist.transpose(2, 1, 0, 3)))
    predicted = staged_rows_LT(routing, False)
    row_nbytes = spec.preset.hidden * 4
    for _stream, _kind, _name, layer, _step, tok, _s, _e, nbytes, rows, _f in colls:
        skip = skips.get((layer, tok), False)
        assert rows == _expected_crossing(spec, W, idx[(tok, layer)], skip)
        assert nbytes == rows * row_nbytes
        if not skip:  # full exchanges: the simulator's routing predicts the same rows exactly
            assert rows == predicted[layer, tok]
    assert sum(r[9] for r in colls) > 0


def test_count_exchange_moves_the_other_ranks_counts(runs):
    spec, W, staged, *_ = runs["dice-w4"]
    E = spec.preset.num_experts
    counts = [r for r in staged.trace_rows if r[1] == "collective" and r[2] == "counts"]
    # each rank announces its counts for the E - E/W experts it does not hold, 8 bytes each
    assert counts and all(r[8] == W * (E - E // W) * 8 for r in counts)
    sep = runs["dice-separate-counts"][2]
    assert {r[0] for r in sep.trace_rows if r[2] == "counts" and r[1] == "collective"} == {"comm:counts"}


def test_data_parallel_moves_nothing(runs):
    staged = runs["data-parallel"][2]
    assert not [r for r in staged.trace_rows if r[1] == "collective"]


def test_router_histogram_per_emulated_rank_sums_to_the_run(runs):
    spec, W, staged, _ref, _idx, hist = runs["dice-w4"]
    assert hist.shape == (W, STEPS, spec.preset.depth, spec.preset.num_experts)
    assert np.array_equal(hist.sum(axis=0), staged.record.router_hist)
    assert (hist.sum(axis=(2, 3)) == spec.preset.depth * spec.preset.top_k * staged.record.local_tokens // W).all()


def test_trace_validates_and_calibration_reads_it(tmp_path):
    run = run_host_staged(RunSpec(strategy=make_strategy("displaced"), steps=STEPS, batch=1), 4)
    paths = run.write_trace(tmp_path, "hs-displaced")
    df, meta = read_trace(paths["parquet"])
    assert meta.world_size == 1 and meta.backend == "host-staged"
    hs = meta.extra["host_staged"]
    assert hs["emulated_world_size"] == 4 and np.asarray(hs["router_hist"]).shape[0] == 4
    waits = df[df["kind"] == "wait"]
    assert len(waits) and set(waits["stream"]) == {"compute"}
    assert sum(hs["staged_nbytes_per_step"]) == int(df.loc[(df["kind"] == "collective")
                                                           & (df["name"] != "counts"), "nbytes"].sum())
    m = measured_metrics(load_runs([tmp_path])[0])
    assert m["step_latency_s"] > 0 and 0 <= m["overlap_frac"] <= 1 and m["exposed_comm_s"] >= m["waits_s"] > 0


def test_chunks_cover_the_rows_once():
    assert chunk_bounds(0, 10, max_chunks=4, min_chunk_nbytes=1) == []
    for rows, row_nbytes, k, m in [(100, 8, 16, 64), (7, 1 << 20, 16, 4 << 20), (1000, 2304, 16, 4 << 20)]:
        b = chunk_bounds(rows, row_nbytes, max_chunks=k, min_chunk_nbytes=m)
        assert b[0][0] == 0 and b[-1][1] == rows and all(x[1] == y[0] for x, y in zip(b, b[1:]))
        assert len(b) <= k and all((e - s) * row_nbytes >= m for s, e in b[:-1])


def test_staged_bytes_are_counted_without_a_trace():
    spec = RunSpec(strategy=make_strategy("dice"), steps=STEPS, batch=1)
    traced, untraced = run_host_staged(spec, 4), run_host_staged(replace(spec, trace=False), 4)
    assert untraced.staged_nbytes_per_step == traced.staged_nbytes_per_step
    assert all(b > 0 for b in traced.staged_nbytes_per_step)
    assert not untraced.outcome.ranks[0].trace_rows


def test_cli_host_staged_json_and_trace(tmp_path, capsys):
    code = main(["run", "--transport", "host-staged", "--world-size", "2", "--steps", "3", "--strategy", "dice",
                 "--trace-out", str(tmp_path), "--json"])
    doc = json.loads(capsys.readouterr().out)  # the shared result schema; the emulation's fields in `extra`
    ext = doc["extra"]
    assert code == 0 and doc["schema"] == "dicesim-result/1" and doc["source"] == "executor"
    assert ext["transport"] == "host-staged" and ext["emulated_world_size"] == 2
    assert doc["world_size"] == 1 and doc["batch"] == 2 * ext["batch_per_emulated_rank"]
    assert sum(ext["staged_nbytes_per_step"]) > 0 and set(ext["trace_files"]) == {"json", "parquet"}


@pytest.mark.parametrize("args, needle", [
    (["--transport", "pigeon"], "allowed: distributed, host-staged"),
    (["--transport", "host-staged", "--device", "tpu"], "allowed: cpu, cuda"),
    (["--device", "cuda"], "device"),
    (["--transport", "host-staged", "--world-size", "3"], "neither divides"),
])
def test_bad_input_is_one_line_exit_2(args, needle, capsys):
    code = main(["run", *args])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and needle in err and "Traceback" not in err, err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_host_staged_matches_the_emulation():
    for name in ("sync", "displaced", "interweaved", "dice"):
        spec = RunSpec(strategy=make_strategy(name), steps=STEPS, batch=2)
        run = run_host_staged(spec, 4, "cuda", min_chunk_nbytes=1024)  # several chunks per transfer
        ref = run_emulated(spec, 4, "cuda")
        torch.testing.assert_close(run.outcome.ranks[0].samples_BCLL, ref.samples_BCLL, atol=1e-5, rtol=1e-5)
        rows = run.outcome.ranks[0].trace_rows
        waits = [r for r in rows if r[1] == "wait"]
        assert waits and all(r[0] == "compute" and r[7] >= r[6] for r in waits)
        assert all(r[7] >= r[6] for r in rows if r[1] == "collective")
