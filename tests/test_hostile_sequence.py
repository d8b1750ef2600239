"""The sequence family (``sp``, ``distrifusion``; dicesim/strategy/sequence.py) gets the hostile-input
treatment of issue 19 like the expert-parallel one: its fields have ranges, its tables refuse
unknown keys naming its own, its reference flags (``--sp-async-warm-up``) are ASCII integers
within range, and a sweep over its presets ends with a row for every configuration.

Unknown keys in its [strategy] table and in a sweep over it are in test_hostile_misread.py (the
``scenario-sp`` and ``sweep-sp`` seeds); finite results on hostile topologies and profiles in
test_hostile_physical.py (``FAMILIES``); its files through the fuzzer in fuzz_cases.py."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import tomli_w

from fuzz_cases import run_cli, verdict

BASE = {"model": {"name": "tiny"}, "workload": {"batch": 1, "image_size": 32, "steps": 3},
        "topology": {"name": "tiny-ring4", "world_size": 4}, "profile": {"file": "rtx4090"}}


def _refused(o, needle: str) -> None:
    assert verdict(o, expect_error=True) is None, o.err or o.crash
    assert needle in o.err, o.err


def test_a_sweep_over_the_sequence_presets_ends_with_every_row(tmp_path):
    """The sweep's row descriptor read expert-parallel fields (``sync_layers``) of every strategy:
    a traceback for ``sp``. Every configuration now has its row, an impossible one skipped with
    the reason."""
    f = tmp_path / "s.toml"
    f.write_text(tomli_w.dumps({"sweep": {"name": "s"}, "base": BASE,
                                "axes": {"strategy": ["sp", "distrifusion", "dice"], "warmup_steps": [0, 2]}}))
    o = run_cli(["sweep", str(f), "--out", str(tmp_path / "out"), "--workers", "0"])
    assert verdict(o, tmp_path / "out") is None, o.err or o.crash
    assert o.code == 0, o.err
    df = pd.read_parquet(tmp_path / "out" / "sweep.parquet")
    assert df["index"].tolist() == list(range(6))
    by_label = dict(zip(df["strategy"], df["status"]))
    assert by_label["distrifusion"] == "ok" and by_label["distrifusion[warmup_steps=2]"] == "ok"
    skipped = df[df["status"] == "skipped"]
    assert len(skipped) == 1 and "warmup_steps > 0 needs kv_async" in skipped["reason"].iloc[0]
    assert set(df.loc[df["strategy"].str.startswith(("sp", "distrifusion")), "sync_layers"]) == {""}


@pytest.mark.parametrize("flags, needle", [
    ("--sp --sp-async --sp-async-warm-up \u0663", "'\u0663' is not an integer in ASCII digits"),  # Arabic-Indic 3
    ("--sp --sp-async --sp-async-warm-up \u00b2", "is not an integer in ASCII digits"),
    ("--sp --sp-async --sp-async-warm-up 99999", "99999 is outside -10000..10000 steps"),
    ("--ep --ep-async --ep-async-mode deep --ep-async-warm-up 10000000000", "outside -10000..10000 steps"),
])
def test_reference_flags_take_ascii_step_counts_in_range(flags, needle):
    _refused(run_cli(["strategy", "show", f"--reference-flags={flags}", "--layers", "2", "--steps", "3"]), needle)


@pytest.mark.parametrize("strategy", [{"preset": "distrifusion", "warmup_steps": 10**12},
                                      {"preset": "dice", "warmup_steps": 10**12},
                                      {"preset": "dice", "sync_every": 10001},
                                      {"preset": "dice", "cond_interval": 10**9}])
def test_step_counts_of_every_family_are_bounded(tmp_path, strategy):
    f = tmp_path / "s.toml"
    f.write_text(tomli_w.dumps({**BASE, "strategy": strategy}))
    field = next(k for k in strategy if k != "preset")
    _refused(run_cli(["check", str(f)]), f"strategy.{field}: Input should be less than or equal to 10000")


def test_an_expert_parallel_field_on_a_sequence_strategy_names_the_family_s_keys(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text(tomli_w.dumps({**BASE, "strategy": {"preset": "sp", "sync_layers": "deep"}}))
    _refused(run_cli(["check", str(f)]),
             "strategy.sync_layers: unknown key (allowed: name, kv_async, warmup_steps, single_img, kv_exchange, ulysses_degree)")


def test_the_executor_refuses_an_expert_parallel_option_on_a_sequence_strategy():
    o = run_cli(["run", "--strategy", "sp", "--cond-interval", "2", "--steps", "2"], executor=True)
    _refused(o, "strategy.cond_interval: unknown key (allowed: name, kv_async, warmup_steps, single_img, kv_exchange, ulysses_degree)")


def test_an_accepted_distrifusion_scenario_gives_finite_results(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text(tomli_w.dumps({**BASE, "strategy": {"preset": "distrifusion", "warmup_steps": 10000}}))
    o = run_cli(["simulate", str(f), "--json"])
    assert o.code == 0, o.err
    doc = json.loads(o.out)
    assert doc["step_latency_s"] > 0 and doc["mean_lag_steps"] == 0  # every step is a warm-up step: fresh K/V


@pytest.mark.parametrize("values, needle", [
    ([0, True], "axes.warmup_steps[1]: 'True' is a boolean, the axis's first value '0' a number"),
    (["\u0000", 1], "axes.warmup_steps[1]: '1' is a number"),
])
def test_an_axis_holds_values_of_one_kind(tmp_path, values, needle):
    """Found by the long fuzz run on the sweep-sp reader: a warmup_steps axis of ``[0, true]`` was
    simulated (true read as 1) and the table could not be written (ArrowTypeError traceback)."""
    f = tmp_path / "s.toml"
    f.write_text(tomli_w.dumps({"sweep": {"name": "s"}, "base": BASE,
                                "axes": {"strategy": ["sp", "distrifusion"], "warmup_steps": values}}))
    _refused(run_cli(["check", str(f)]), needle)
    o = run_cli(["sweep", str(f), "--out", str(tmp_path / "out"), "--workers", "0"])
    assert verdict(o, tmp_path / "out", expect_error=True) is None, o.err or o.crash


def test_check_reads_a_trace_s_strategy_as_calibration_does(tmp_path):
    """`check` said "ok" for a trace whose recorded strategy had an unknown key, which
    `calibrate` then refused: both read it strictly now (both families)."""
    from fuzz_cases import ROOT

    for stem in ("validate-tiny-sp-w2-gloo", "validate-tiny-distrifusion-w2-gloo"):
        doc = json.loads((ROOT / "traces" / "reference" / f"{stem}.trace.json").read_text())
        doc["otherData"]["scenario"]["strategy"]["kv_asnyc"] = True
        f = tmp_path / f"{stem}.trace.json"
        f.write_text(json.dumps(doc))
        _refused(run_cli(["check", str(f)]), "scenario.strategy.kv_asnyc: unknown key (allowed: name, kv_async")
