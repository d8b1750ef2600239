"""Malformed scenario and trace files: each yields one line naming the problem, exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dicesim.cli import main

GOOD = """
[model]
name = "XL/2"
[workload]
batch = 4
image_size = 256
steps = 10
[strategy]
preset = "dice"
[topology]
name = "8x-rtx4090-pcie"
world_size = 8
"""

SCENARIO_CASES = {
    "not_toml": ("[model\nname=", "not valid TOML"),
    "unknown_section": (GOOD + "\n[extras]\nx = 1\n", "[extras]: unknown section"),
    "unknown_key": (GOOD.replace("batch = 4", "batch = 4\nbatchsize = 4"), "workload.batchsize: unknown key"),
    "wrong_type": (GOOD.replace("batch = 4", 'batch = "four"'), "batch"),
    "unknown_model": (GOOD.replace('"XL/2"', '"XXL/2"'), "allowed: tiny, small"),
    "experts_vs_world": (GOOD.replace("world_size = 8", "world_size = 3"), "world_size: 3 GPUs cannot hold 8 experts"),
    "sync_layer_range": (GOOD.replace('preset = "dice"', 'preset = "interweaved"\nsync_layers = [0, 40]'),
                         "sync_layers: layer 40 out of range"),
    "bad_policy": (GOOD.replace('preset = "dice"', 'preset = "dice"\ncond_policy = "median"'),
                   "allowed: low, high, random"),
    "unknown_strategy": (GOOD.replace('"dice"', '"dicey"'), "unknown strategy 'dicey'"),
    "bad_image_size": (GOOD.replace("image_size = 256", "image_size = 250"), "image_size: 250 px"),
    "negative_steps": (GOOD.replace("steps = 10", "steps = -1"), "steps"),
    "bad_dtype": (GOOD.replace("steps = 10", 'steps = 10\ndtype = "fp8"'), "allowed: bf16, fp16, fp32"),
    "world_exceeds_topology": (GOOD.replace("world_size = 8", "world_size = 16"), "exceeds the 8 GPUs"),
    "unknown_topology": (GOOD.replace('"8x-rtx4090-pcie"', '"9x-rtx4090"'), "9x-rtx4090"),
    "strategy_not_table": ('strategy = "dice"\n' + GOOD.replace('[strategy]\npreset = "dice"', ""),
                           "[strategy]: must be a table"),
    # a [strategy] table of fields with a `name` (as a trace's metadata holds it) is a label, not a preset
    "strategy_fields_named": (GOOD.replace('preset = "dice"', 'name = "mine"\nscheme = "displaced"\ncond_gate = "x"'),
                              "cond_gate: Input should be 'reference' or 'every_candidate'"),
}


def _run(capsys, args):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.err


@pytest.mark.parametrize("case", sorted(SCENARIO_CASES))
def test_malformed_scenario_one_line_exit_2(tmp_path, capsys, case):
    text, expected = SCENARIO_CASES[case]
    path = tmp_path / "scenario.toml"
    path.write_text(text)
    code, err = _run(capsys, ["check", str(path)])
    assert code == 2
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]


def test_good_scenario_passes(tmp_path, capsys):
    path = tmp_path / "scenario.toml"
    path.write_text(GOOD)
    code, err = _run(capsys, ["check", str(path)])
    assert code == 0 and err == ""


TRACE_CASES = {
    "truncated_json": ('{"traceEvents": [{"ph": "X", "ts": 1', "trace.json"),
    "garbage_json": ("\x00\x01garbage", "trace.json"),
    "not_an_object": ("42", "trace.json"),
    "wrong_schema": (json.dumps({"traceEvents": [], "otherData": {"schema": "other/9"}}), "trace.json"),
    "garbage_parquet": ("PAR1 not really", "events.parquet"),
}


@pytest.mark.parametrize("case", sorted(TRACE_CASES))
def test_malformed_trace_one_line_exit_2(tmp_path, capsys, case):
    text, name = TRACE_CASES[case]
    path = tmp_path / name
    path.write_text(text)
    code, err = _run(capsys, ["check", str(path)])
    assert code == 2
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(path.name) in lines[0], err


def test_console_script_exit_code_and_no_traceback(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(SCENARIO_CASES["experts_vs_world"][0])
    proc = subprocess.run([sys.executable, "-m", "dicesim", "check", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


@pytest.mark.parametrize("args", [["simulate", "--bogus"], ["strategy", "show"], ["compare", "--strategies", "sync,nope"]])
def test_usage_errors_are_one_line(capsys, args):
    code, err = _run(capsys, args)
    assert code == 2
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err


def test_calibrated_profile_outside_fitted_range_warns_once(capsys):
    args = ["simulate", "--model", "XL/2", "--topology", "hgx-h200", "--world-size", "8", "--batch", "64",
            "--steps", "2", "--profile", "h200-calibrated", "--json"]
    code, err = _run(capsys, args)
    assert code == 0
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "batch 64 (fitted 1..32)" in lines[0]
