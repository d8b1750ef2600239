"""benchmarks/gpu_attention_curves.py on the CPU (math backend, tiny shapes): the timings, their FLOP
convention and the [[curve]] snippet it writes for attention_kernels.toml."""

from __future__ import annotations

import json
import tomllib

import pytest

from script_module import load_script


def _module():
    return load_script("benchmarks/gpu_attention_curves.py")


def test_smoke_run_times_every_shape_and_writes_loadable_curves(tmp_path):
    mod = _module()
    code = mod.main(["--device", "cpu", "--head-dims", "64,128", "--seqs", "64,128", "--heads", "2", "--batch", "1",
                     "--reps", "2", "--out", str(tmp_path)])
    assert code == 0
    doc = json.loads((tmp_path / "attention_curves.json").read_text())
    assert doc["schema"] == "dicesim-attention-bench/1" and doc["device"] == "cpu"
    assert {(r["head_dim"], r["seq"]) for r in doc["rows"]} == {(64, 64), (64, 128), (128, 64), (128, 128)}
    for r in doc["rows"]:  # SageAttention's convention: 4 x batch x heads x head_dim x N^2 over the median time
        assert r["tflops"] == pytest.approx(4 * 1 * 2 * r["head_dim"] * r["seq"] ** 2 / r["time_s"] / 1e12)
    curves = tomllib.loads((tmp_path / "attention_curves.toml").read_text())["curve"]
    assert [(c["kernel"], c["head_dim"]) for c in curves] == [("math", 64), ("math", 128)]
    for c in curves:
        rows = sorted((r for r in doc["rows"] if r["head_dim"] == c["head_dim"]), key=lambda r: r["seq"])
        assert c["seq"] == [64, 128] and c["device"] == "cpu"
        assert c["tflops"] == pytest.approx([r["tflops"] for r in rows], rel=1e-3)


def test_flop_count_is_the_curves_convention():
    mod = _module()
    assert mod.attention_flops(4, 32, 128, 1024) == 4 * 4 * 32 * 128 * 1024 ** 2
    assert set(mod.BACKENDS) <= {"fa2", "fa3", "cudnn"}  # kernel names attention_kernels.toml knows


def test_cuda_without_a_gpu_is_one_line(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert _module().main(["--device", "cuda", "--out", "/nonexistent"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --device cuda")
