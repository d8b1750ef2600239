"""Kineto reader on real torch.profiler traces (CPU, tiny DiT-MoE block) and on a GPU-shaped export."""

from __future__ import annotations

import json

import pytest
from kineto_cases import profile_tiny_block

from dicesim.calibrate.api import calibrate_runs
from dicesim.calibrate.kineto import is_kineto, parse_annotation, read_kineto
from dicesim.calibrate.runs import load_runs
from dicesim.errors import TraceError

KINDS = {"attention", "gate", "experts", "shared_expert", "local_combine"}


@pytest.fixture(scope="module")
def profiles(tmp_path_factory):
    out = tmp_path_factory.mktemp("kineto")
    return [profile_tiny_block(out / f"tiny-b{b}.pt.trace.json", batch=b, steps=3) for b in (1, 3)]


def test_real_cpu_profile_maps_annotations_to_ops(profiles):
    path = profiles[1]
    assert is_kineto(path)
    df, meta = read_kineto(path)
    assert meta.source == "kineto" and meta.model == "tiny" and meta.scenario["batch"] == 3
    comp = df[df["kind"] == "compute"]
    assert set(comp["name"]) == KINDS
    assert comp.groupby("name").size().to_dict() == {k: 3 for k in KINDS}  # one per step
    assert sorted(comp["step"].unique()) == [0, 1, 2]
    assert (comp["layer"] == 0).all()
    experts = comp[comp["name"] == "experts"]
    assert (experts["rows"] == 3 * 2 * 4 * 2).all()  # batch x CFG x tokens x top-2
    # ops are intervals of the host thread, in program order, not overlapping
    s = comp.sort_values("start_us")
    assert (s["start_us"].to_numpy()[1:] >= s["end_us"].to_numpy()[:-1]).all()
    assert list(s["name"][:5]) == ["attention", "gate", "experts", "shared_expert", "local_combine"]


def test_calibrate_from_real_profiles(profiles):
    runs = load_runs(profiles)
    assert [r.batch for r in runs] == [1, 3] and all(r.meta.source == "kineto" for r in runs)
    cal = calibrate_runs(runs)
    assert set(cal.op_fits) == KINDS
    assert all(f.n_configs == 2 and f.roofline[0] >= 0 for f in cal.op_fits.values())
    assert "model=tiny" in cal.profile.fitted_range


def test_gpu_kernels_are_attributed_through_correlation(tmp_path):
    """A torch.profiler CUDA export: kernels belong to the annotation that launched them."""
    ev = [
        {"ph": "X", "cat": "user_annotation", "name": "dicesim:run;model=tiny;batch=1;image_size=32;world_size=2",
         "ts": 0, "dur": 1000, "pid": 1, "tid": 1},
        {"ph": "X", "cat": "user_annotation", "name": "dicesim:attention;layer=0;step=0", "ts": 10, "dur": 50,
         "pid": 1, "tid": 1},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": 20, "dur": 5, "pid": 1, "tid": 1,
         "args": {"correlation": 7}},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": 40, "dur": 5, "pid": 1, "tid": 1,
         "args": {"correlation": 8}},
        {"ph": "X", "cat": "user_annotation", "name": "dicesim:dispatch;layer=0;step=0;rows=32", "ts": 70,
         "dur": 20, "pid": 1, "tid": 1},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": 75, "dur": 5, "pid": 1, "tid": 1,
         "args": {"correlation": 9}},
        {"ph": "X", "cat": "kernel", "name": "ampere_sgemm_128x64_nn", "ts": 100, "dur": 30, "pid": 0, "tid": 7,
         "args": {"correlation": 7}},
        {"ph": "X", "cat": "kernel", "name": "flash_fwd_kernel", "ts": 140, "dur": 60, "pid": 0, "tid": 7,
         "args": {"correlation": 8}},
        {"ph": "X", "cat": "kernel", "name": "ncclDevKernel_SendRecv", "ts": 210, "dur": 90, "pid": 0, "tid": 9,
         "args": {"correlation": 9}},
    ]
    path = tmp_path / "gpu.pt.trace.json"
    path.write_text(json.dumps({"schemaVersion": 1, "deviceProperties": [{"name": "NVIDIA H200"}],
                                "distributedInfo": {"rank": 1}, "traceEvents": ev}))
    df, meta = read_kineto(path)
    att = df[df["name"] == "attention"].iloc[0]
    assert (att["rank"], att["stream"], att["end_us"] - att["start_us"]) == (1, "compute", 100.0)  # 100..200 us
    coll = df[df["kind"] == "collective"].iloc[0]
    assert (coll["name"], coll["stream"], coll["rows"], coll["end_us"] - coll["start_us"]) == ("dispatch", "comm", 32, 90)
    assert meta.device == "NVIDIA H200" and meta.backend == "nccl" and meta.world_size == 2


def test_annotation_grammar_and_errors(tmp_path):
    assert parse_annotation("dicesim:experts;layer=3;rows=40") == ("experts", {"layer": "3", "rows": "40"})
    assert parse_annotation("aten::mm") is None
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({"traceEvents": [{"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": 0, "dur": 1}]}))
    with pytest.raises(TraceError, match="annotations"):
        read_kineto(bare)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert not is_kineto(broken)
    with pytest.raises(TraceError):
        read_kineto(broken)


def test_real_gpu_profile_matches_kinetos_own_gpu_projection():
    """A torch.profiler CUDA export of the tiny block (H200, torch 2.11): each op is the device span of
    the kernels its annotation launched, the same span Kineto draws as ``gpu_user_annotation``."""
    import gzip
    from pathlib import Path

    path = Path(__file__).parent / "data" / "kineto-h200-tiny-b2.pt.trace.json.gz"
    df, meta = read_kineto(path)
    assert meta.device == "NVIDIA H200" and meta.scenario["batch"] == 2
    comp = df[df["kind"] == "compute"].sort_values("start_us")
    assert comp.groupby("name").size().to_dict() == {k: 3 for k in KINDS}
    assert (comp.loc[comp["name"] == "experts", "rows"] == 2 * 2 * 4 * 2).all()
    with gzip.open(path, "rt") as fh:
        doc = json.load(fh)
    gpu = sorted((e for e in doc["traceEvents"] if e.get("cat") == "gpu_user_annotation"
                  and e["name"].split(";")[0].removeprefix("dicesim:") in KINDS), key=lambda e: e["ts"])
    assert [e["name"].split(";")[0].removeprefix("dicesim:") for e in gpu] == list(comp["name"])
    ours = (comp["end_us"] - comp["start_us"]).to_numpy()
    theirs = [float(e["dur"]) for e in gpu]
    assert ours == pytest.approx(theirs, abs=1.0)  # microseconds
