"""Every scenario field reachable, overrides visible, tables whole, traces small, machines derivable,
the robust choice of recommend (issue 20)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from dicesim.cli import main
from dicesim.robust import regrets
from dicesim.scenario import FILE_KEYS, Scenario, scenario_from_dict
from dicesim.topology import get_topology, route, world_size
from dicesim.trust.sensitivity import Knob, KnobResult, Sensitivity

SMALL = ["--model", "XL/2", "--topology", "dgx-h100", "--batch", "8", "--steps", "4"]


def test_scenario_reference_page_is_current():
    from dicesim.cli.scenario_doc import scenario_markdown
    from dicesim.cli.simulate_cmd import compare, simulate

    page = Path("docs/scenario.md").read_text(encoding="utf-8")
    assert page == scenario_markdown(simulate, compare), "rerun: python tools/write_docs.py scenario"
    for name in Scenario.model_fields:
        assert f"`{name}`" in page


def test_every_file_key_reaches_its_field():
    """Each field's documented place in a scenario file is where the reader takes it from."""
    values = {"model": "G/2", "num_experts": 32, "batch": 3, "image_size": 128, "steps": 7, "cfg": False,
              "dtype": "fp32", "seed": 5, "topology": "2x-dgx-h100-ib", "world_size": 16, "placement": "strided",
              "strategy": "dice", "routing": "zipf", "profile": "h100-calibrated", "interference": False}
    assert set(values) == set(FILE_KEYS) == set(Scenario.model_fields)
    doc: dict = {}
    for field, (section, key) in FILE_KEYS.items():
        doc.setdefault(section, {})[key] = values[field]
    sc = scenario_from_dict(doc)
    got = {**sc.model_dump(), "strategy": sc.strategy.name, "routing": sc.routing.kind}
    assert {k: got[k] for k in values} == values


def test_what_if_flags_show_in_labels_and_in_checks_line(tmp_path, capsys):
    f = tmp_path / "whatif.toml"
    f.write_text('[model]\nname = "XL/2"\nnum_experts = 16\n[workload]\ndtype = "fp32"\n'
                 '[topology]\nname = "2x-dgx-h100-ib"\nworld_size = 16\nplacement = "strided"\n')
    assert main(["check", str(f)]) == 0
    line = capsys.readouterr().out
    assert "XL/2 (16 experts) x16 2x-dgx-h100-ib" in line and "placement=strided" in line and "fp32" in line
    assert main(["simulate", *SMALL, "--num-experts", "16", "--placement", "strided", "--dtype", "fp16",
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["num_experts"] == 16 and "(16 experts)" in doc["label"] and "fp16" in doc["label"]
    what = "What-if (num_experts 8 -> 16, placement contiguous -> strided, dtype bf16 -> fp16)"
    assert what in doc["extra"]["what_if"]


def test_topology_derive_writes_a_named_machine(tmp_path, capsys):
    out = tmp_path / "my-box.toml"
    assert main(["topology", "derive", "8x-rtx4090-pcie", "--gpu", "l40s", "--p2p", "--name", "my-box",
                 "--bw", "upi=40", "--out", str(out)]) == 0
    G = get_topology(str(out))
    assert (G.graph["name"], G.graph["gpu"], G.graph["p2p"]) == ("my-box", "l40s", True)
    upi = [d for _, _, d in G.edges(data=True) if d["link"] == "upi"]
    assert upi and all(d["bw_Bps"] == 40e9 and d["source"] == "user-upi" for d in upi)
    assert "assumption until measured" in G.graph["sources"]["user-upi"]
    # peer-to-peer: a same-switch route no longer climbs to host memory
    assert not any("mem" in u or "mem" in v for u, v in route(G, 0, 1))
    capsys.readouterr()
    assert main(["topology", "show", str(out)]) == 0
    text = capsys.readouterr().out
    assert "assumed" in text and "cited" in text
    assert main(["topology", "derive", "8x-rtx4090-pcie", "--gpu", "tpu", "--name", "x"]) == 2
    assert main(["topology", "derive", "8x-rtx4090-pcie", "--bw", "nvlink4=3", "--name", "x"]) == 2


@pytest.mark.parametrize("name, gpus", [("1x-dgx-h100-rail", 8), ("1x-l40s-roce", 8), ("1x-hgx-h100-roce", 8),
                                        ("4x-hgx-h100-roce", 32), ("8x-l40s-pcie", 8)])
def test_single_server_and_roce_variants_exist(name, gpus):
    G = get_topology(name)
    assert world_size(G) == gpus and G.graph["name"] == name
    if "roce" in name and "l40s" not in name:
        nics = [n for n, d in G.nodes(data=True) if d.get("kind") == "nic"]
        assert len(nics) == gpus  # one 400 GbE NIC per GPU (the 2-8-9-400 reference design)


def test_tables_are_whole_when_piped_and_csv_on_request(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    args = ["compare", *SMALL, "--strategies", "sync,dice", "--traces", "none", "--out", str(tmp_path / "o")]
    assert main([*args, "--format", "csv"]) == 0
    text = capsys.readouterr().out
    head = next(line for line in text.splitlines() if line.startswith("strategy,"))
    assert head.endswith("pred_deviation") and "step_latency_low_s" in head
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    top = next(line for line in lines if line.startswith("┏"))
    assert len(top) > 160 and top.endswith("┓")  # drawn at its own width: never cut at the console's
    assert any("predicted deviation" in line for line in lines)
    assert main([*args, "--format", "markdown"]) == 0
    assert "| strategy | step latency (ms) | band low (ms)" in capsys.readouterr().out


def test_default_compare_writes_compressed_traces(tmp_path):
    out = tmp_path / "c"
    assert main(["compare", *SMALL, "--strategies", "dice", "--out", str(out)]) == 0
    assert [p.name for p in out.glob("*.trace.json*")] == ["dice.trace.json.gz"]
    assert main(["compare", *SMALL, "--strategies", "dice", "--out", str(out), "--traces", "bogus"]) == 2


def test_presets_list_profiles_with_their_basis(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["presets"]) == 0
    text = capsys.readouterr().out
    rows = {line.split("│")[1].strip(): line for line in text.splitlines()
            if "calibrated" in line or "l40s  " in line}
    assert "measured" in rows["h100-calibrated"] and "measured" in rows["h200-calibrated"]
    assert "datasheet" in text and "<N>x-hgx-h100-roce" in text


def _sens(latency: dict[float, dict[str, float]]) -> Sensitivity:
    knob = Knob(key="link:x", label="x bandwidth", base=10.0, unit="GB/s", status="assumed", low=0.5, high=2.0)
    return Sensitivity(nominal="a", results=(KnobResult(knob=knob, latency=latency),), strategies=("a", "b", "c"))


def test_robust_choice_is_the_least_regret():
    """a is fastest at the nominal point but falls 50% behind at x2; b is never more than 5% behind."""
    sens = _sens({0.5: {"a": 1.0, "b": 1.05, "c": 1.2}, 1.0: {"a": 1.0, "b": 1.02, "c": 1.1},
                  2.0: {"a": 1.5, "b": 1.0, "c": 1.05}})
    worst, where = regrets(sens)
    assert worst == pytest.approx({"a": 0.5, "b": 0.05, "c": 0.2})
    assert where["a"] == "x bandwidth 20 GB/s"
    assert min(worst, key=worst.get) == "b"


def test_recommend_sensitivity_names_its_choice(tmp_path, capsys):
    assert main(["recommend", "--model", "XL/2", "--topology", "dgx-h100", "--batch", "8", "--steps", "6",
                 "--max-lag", "1", "--warmups", "1", "--cond-intervals", "1", "--cond-policies", "low",
                 "--robust-top", "2", "--sensitivity", "--workers", "0", "--out", str(tmp_path / "r")]) == 0
    text = capsys.readouterr().out
    assert "How far to trust it" in text and "Sensitivity" in text
    assert ("robust" in text) or ("Preferred for robustness" in text) or ("stays the recommendation" in text)
    html = (tmp_path / "r" / "report.html").read_text(encoding="utf-8")
    assert "Assumptions and accuracy" in html


def test_study_named_custom_with_bands_per_setting(tmp_path, capsys):
    assert main(["study", "--models", "XL/2", "--topologies", "8x-rtx4090-pcie,dgx-h100", "--batches", "8",
                 "--steps", "4", "--workers", "0", "--out", str(tmp_path / "s"), "--format", "csv"]) == 0
    text = capsys.readouterr().out
    assert "study 'custom'" in text and "Error bands (XL/2)" in text
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("model,") and ",fastest," in line)
    n = lines[head].count(",")
    block = [lines[head], *(line for line in lines[head + 1:head + 3] if line.count(",") >= n)]
    table = pd.read_csv(io.StringIO("\n".join(block)))
    assert len(table) == 2  # one row per setting: the whole table, never cut
    assert {"step_latency_low_s", "step_latency_high_s", "order_resolved"} <= set(table.columns)
    csv = pd.read_csv(tmp_path / "s" / "study.csv")
    assert (csv["step_latency_low_s"] <= csv["step_latency_s"]).all()
    assert (csv["step_latency_s"] <= csv["step_latency_high_s"]).all()


def test_bands_read_your_own_accuracy_file(tmp_path, capsys):
    from dicesim.evidence import make_level, record_level

    mine = tmp_path / "mine.toml"
    fam = {"consumer-pcie": {"held_out": 4, "median_abs_err": 0.3, "max_abs_err": 0.5}}
    record_level(mine, "collective", make_level({"held_out": 4, "median_abs_err": 0.3, "max_abs_err": 0.5}, fam,
                                                command="dicesim accuracy --published my.toml"))
    args = ["simulate", "--model", "XL/2", "--batch", "8", "--steps", "4", "--strategy", "dice", "--json"]
    assert main([*args, "--accuracy", str(mine)]) == 0
    assert json.loads(capsys.readouterr().out)["error_band"]["comm_max_err"] == 0.5
    assert main([*args, "--accuracy", str(tmp_path / "absent.toml")]) == 2
    assert "--accuracy" in capsys.readouterr().err


def test_study_of_the_sequence_family_has_bands_and_names_its_lag(tmp_path, capsys):
    assert main(["study", "--models", "XL/2", "--topologies", "dgx-h100", "--batches", "4", "--steps", "4",
                 "--strategies", "sp,distrifusion,dice", "--workers", "0", "--out", str(tmp_path / "s")]) == 0
    text = " ".join(capsys.readouterr().out.split())
    df = pd.read_parquet(tmp_path / "s" / "study.parquet")
    assert (df["status"] == "ok").all(), df[["strategy", "reason"]]  # sp has no scheme; the sweep must not ask
    seq = df[df["strategy"].isin(["sp", "distrifusion"])]
    assert len(seq) == 2 and seq["band_covers"].isin(["step", "communication"]).all()
    assert (seq["band_family"] == "nvswitch").all()
    assert (seq["step_latency_low_s"] < seq["step_latency_high_s"]).all()
    assert re.search(r"distrifusion \d\.\d\d steps of K/V", text) and re.search(r"dice \d\.\d\d steps \(max", text)
