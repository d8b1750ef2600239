"""benchmarks/gpu_expert_path.py on the CPU (tiny model): every path, routing and expert count, one JSON."""

from __future__ import annotations

import json

import pytest

from script_module import load_script


def _module():
    return load_script("benchmarks/gpu_expert_path.py")


def test_measures_both_paths_both_routings_every_expert_count(tmp_path):
    mod = _module()
    code = mod.main(["--device", "cpu", "--model", "tiny", "--batch", "1", "--image-size", "32", "--local", "3",
                     "--reps", "3", "--out", str(tmp_path)])
    doc = json.loads((tmp_path / "expert_path.json").read_text())
    assert code == 0
    assert doc["rows"] == 16 and doc["local"] == 3  # 2 x 1 images (CFG) x 4 tokens x top-2
    got = {(r["path"], r["routing"], r["experts"]) for r in doc["runs"]}
    assert got == {(p, r, k) for p in mod.PATHS for r in mod.ROUTINGS for k in (1, 2, 3)}
    assert all(0 < r["issue_s"] <= r["whole_s"] for r in doc["runs"])
    assert set(doc["per_expert"]) == {f"{p}/{r}" for p in mod.PATHS for r in mod.ROUTINGS}


def test_varying_routing_draws_new_counts_and_fixed_repeats_them():
    import torch

    mod = _module()
    gen = torch.Generator().manual_seed(0)
    fixed = [mod._ids(3, 30, "fixed", gen, torch.device("cpu")) for _ in range(2)]
    varying = [mod._ids(3, 30, "varying", gen, torch.device("cpu")) for _ in range(2)]
    assert torch.equal(fixed[0], fixed[1]) and torch.bincount(fixed[0]).tolist() == [10, 10, 10]
    assert not torch.equal(varying[0], varying[1]) and int(varying[0].max()) < 3


def test_cuda_requested_without_a_device_is_one_line_exit_2(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert _module().main(["--device", "cuda", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "allowed" in err


@pytest.mark.parametrize("args", [["--local", "0"], ["--reps", "0"], ["--device", "tpu"]])
def test_bad_arguments_are_one_line_exit_2(tmp_path, capsys, args):
    assert _module().main(["--device", "cpu", *args, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "allowed" in err
