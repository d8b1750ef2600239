"""Silently ignored or misread input (issue 19, class 4): every table of every input format refuses
keys it does not know and names the allowed ones; every path is resolved relative to the file
that names it; integers are ASCII digits; empty lists are refused; text from files reaches the
terminal escaped."""

from __future__ import annotations

import functools
import json
import re
import shutil
import tempfile
import tomllib
from pathlib import Path

import pytest
import tomli_w

from fuzz_cases import ACCEPTANCE, EXEC_TRACE, PUBLISHED, ROOT, TINY, run_cli, tiny_acceptance, verdict

PROFILE = ROOT / "dicesim" / "data" / "profiles" / "rtx4090.toml"
SCENARIO = {"model": {"name": "tiny"}, "workload": {"batch": 1, "image_size": 32, "steps": 2},
            "strategy": {"preset": "dice"}, "topology": {"name": "tiny-ring4", "world_size": 4},
            "routing": {"kind": "zipf", "alpha": 1.2}, "profile": {"file": "rtx4090"}}
#: tables whose keys are data, not fields: citation keys, link classes, op kinds (checked by type)
FREE_FORM = {("graph", "sources"), ("citations",), ("link_latency_s",), ("link_bw_eff",), ("collective_base_s",),
             ("ops",)}


def _err(o, needle: str) -> str:
    assert verdict(o, expect_error=True) is None, o.err or o.crash
    assert needle in o.err, o.err
    return o.err


@functools.lru_cache(maxsize=1)
def _toml_seeds() -> dict[str, dict]:
    from dicesim.topology import get_topology, save_toml

    d = Path(tempfile.mkdtemp(prefix="dicesim-seeds-"))
    save_toml(get_topology("tiny-ring4"), d / "t.toml")
    return {
        "scenario": SCENARIO,
        "sweep": {"sweep": {"name": "s", "chunk_size": 2}, "base": SCENARIO, "axes": {"strategy": ["sync", "dice"]}},
        # the sequence family's [strategy] table (its own fields) and a sweep over its presets
        "scenario-sp": {**SCENARIO, "strategy": {"preset": "distrifusion", "warmup_steps": 1}},
        "sweep-sp": {"sweep": {"name": "s", "chunk_size": 2}, "base": {**SCENARIO, "strategy": {"preset": "sp"}},
                     "axes": {"strategy": ["sp", "distrifusion"]}},
        "topology": tomllib.loads((d / "t.toml").read_text()),
        "profile": tomllib.loads(PROFILE.read_text()),
        "published": tomllib.loads(PUBLISHED.read_text()),
        "acceptance": tiny_acceptance(tomllib.loads(ACCEPTANCE.read_text())),
        "study": {"study": {"name": "s", "models": ["tiny"], "topologies": ["tiny-ring4"], "world_sizes": [4],
                            "batches": [1], "image_sizes": [32], "strategies": ["dice"], "steps": 2}},
    }


def _tables(doc: object, path: tuple = ()):
    """Every table (dict) of a document with its path; arrays of tables included."""
    if isinstance(doc, dict):
        yield path, doc
        for k, v in doc.items():
            yield from _tables(v, path + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _tables(v, path + (i,))


def _cases():
    for kind, doc in _toml_seeds().items():
        for path, _ in _tables(doc):
            named = tuple(p for p in path if not isinstance(p, int))
            if named[-2:] in FREE_FORM or named[-1:] in FREE_FORM or (kind == "profile" and named[:1] == ("ops",)
                                                                      and len(named) == 1):
                continue
            yield pytest.param(kind, path, id=f"{kind}:{'.'.join(map(str, path)) or 'top'}")


@pytest.mark.parametrize("kind, path", list(_cases()))
def test_every_table_refuses_an_unknown_key(tmp_path, kind, path):
    doc = json.loads(json.dumps(_toml_seeds()[kind]))  # a deep copy
    table = doc
    for p in path:
        table = table[p]
    table["zz_unknown"] = 1
    f = tmp_path / f"{kind}.toml"
    f.write_text(tomli_w.dumps(doc))
    o = run_cli(["check", str(f)])
    _err(o, "zz_unknown")
    assert "unknown" in o.err and "allowed" in o.err, o.err


def test_trace_metadata_refuses_an_unknown_key(tmp_path):
    doc = json.loads(EXEC_TRACE.read_text())
    doc["otherData"]["stratgy"] = "dice"  # a typo of a field is not carried along unread
    f = tmp_path / "t.trace.json"
    f.write_text(json.dumps(doc))
    _err(run_cli(["check", str(f)]), "metadata.stratgy: unknown key (allowed: source, schema_version")


def test_the_issue_s_profile_table_with_an_unknown_key(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text(tomli_w.dumps({**SCENARIO, "profile": {"file": "rtx4090", "peak_tflops": 1.0}}))
    _err(run_cli(["check", str(f)]), "s.toml: profile.peak_tflops: unknown key (allowed: file)")


# --- paths are relative to the file that names them ---------------------------------------
def _slow_profile(path: Path) -> None:
    prof = tomllib.loads(PROFILE.read_text())
    prof["peak_tflops"] = 0.5
    path.write_text(tomli_w.dumps(prof))


def test_profile_and_histogram_named_in_a_scenario_are_relative_to_it(tmp_path, monkeypatch):
    a, cwd = tmp_path / "a", tmp_path / "cwd"
    a.mkdir()
    cwd.mkdir()
    _slow_profile(a / "p.toml")
    shutil.copy(PROFILE, cwd / "p.toml")  # a different profile under the same name where the command runs
    import numpy as np

    np.save(a / "h.npy", np.arange(1, 17, dtype=float).reshape(4, 4))
    (a / "s.toml").write_text(tomli_w.dumps({**SCENARIO, "profile": {"file": "p.toml"},
                                             "routing": {"kind": "histogram", "histogram": "h.npy"}}))
    monkeypatch.chdir(cwd)
    o = run_cli(["simulate", str(a / "s.toml"), "--json"])
    assert o.code == 0, o.err
    direct = run_cli(["simulate", *TINY, "--strategy", "dice", "--profile", str(a / "p.toml"), "--histogram",
                      str(a / "h.npy"), "--json"])
    assert json.loads(o.out)["step_latency_s"] == json.loads(direct.out)["step_latency_s"]


def test_paths_in_sweep_axes_and_base_tables_are_relative_to_the_sweep_file(tmp_path, monkeypatch):
    from dicesim.topology import get_topology, save_toml

    a, cwd = tmp_path / "a", tmp_path / "cwd"
    a.mkdir()
    cwd.mkdir()
    save_toml(get_topology("tiny-ring4"), a / "t.toml")
    _slow_profile(a / "p.toml")
    base = {k: v for k, v in SCENARIO.items() if k not in ("profile", "strategy")}
    (a / "sw.toml").write_text(tomli_w.dumps({"sweep": {"name": "s"}, "base": {**base, "profile": {"file": "p.toml"}},
                                              "axes": {"topology": ["t.toml", "tiny-ring4"]}}))
    monkeypatch.chdir(cwd)
    o = run_cli(["sweep", str(a / "sw.toml"), "--out", str(tmp_path / "out"), "--workers", "0"])
    assert o.code == 0, o.err
    import pandas as pd

    table = pd.read_parquet(tmp_path / "out" / "sweep.parquet")
    assert list(table["status"]) == ["ok", "ok"], table["reason"].tolist()


# --- ASCII digits only --------------------------------------------------------------------
@pytest.mark.parametrize("rank", ["²", "٣", "３"])
def test_unicode_digits_in_a_topology_rank_are_refused(tmp_path, rank):
    from dicesim.topology import get_topology, save_graphml

    f = tmp_path / "t.graphml"
    save_graphml(get_topology("tiny-ring4"), f)
    text = f.read_text()
    key = re.search(r'<key id="(d[0-9]+)" for="node" attr.name="rank"', text).group(1)
    text = text.replace(f'attr.name="rank" attr.type="long"', 'attr.name="rank" attr.type="string"')
    text = re.sub(rf'(<node id="n0.gpu3">.*?<data key="{key}">)3(</data>)', rf"\g<1>{rank}\g<2>", text, flags=re.S)
    assert rank in text
    f.write_text(text)
    _err(run_cli(["check", str(f)]), "rank")


@pytest.mark.parametrize("argv, executor, needle", [
    (["strategy", "show", "dice", "--sync-layers", "²", "--steps", "2", "--layers", "4"], False, "sync_layers"),
    (["strategy", "show", "dice", "--sync-layers", "1,٣", "--steps", "2", "--layers", "4"], False, "ASCII"),
    (["study", "--world-sizes", "٤", "--models", "tiny", "--workers", "0"], False, "--world-sizes"),
    (["simulate", "--topology", "٣x-dgx-h100-rail", "--json"], False, "unknown topology"),
    (["run", "--sync-layers", "0,¹", "--steps", "2"], True, "sync_layers"),
    (["quality", "--model", "digits", "--check-steps", "1٠"], True, "check_steps"),
])
def test_unicode_digits_on_the_command_line_are_refused(tmp_path, monkeypatch, argv, executor, needle):
    monkeypatch.chdir(tmp_path)
    _err(run_cli(argv, executor=executor), needle)


# --- empty lists --------------------------------------------------------------------------
@pytest.mark.parametrize("argv, executor", [
    (["quality", "--strategies", ",,,", "--model", "tiny", "--steps", "2", "--image-size", "32", "--batch", "1"], True),
    (["quality", "--strategies", " , ", "--model", "tiny", "--steps", "2", "--image-size", "32", "--batch", "1"], True),
    (["compare", *TINY, "--strategies", ",,,", "--profile", "rtx4090", "--out", "o"], False),
    (["study", "--strategies", ",", "--workers", "0"], False),
])
def test_an_empty_strategy_list_is_refused_everywhere(tmp_path, monkeypatch, argv, executor):
    monkeypatch.chdir(tmp_path)
    _err(run_cli(argv, executor=executor), "strategies")


def test_blank_names_in_a_study_file_are_refused(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('[study]\nmodels = ["tiny"]\nstrategies = [" "]\n')
    _err(run_cli(["check", str(f)]), "strategies")


# --- text from files is escaped on the terminal -------------------------------------------
FORGED = "ring\x1b[2J\x1b[31m\nerror: forged\u202e"


def test_a_topology_name_cannot_drive_the_terminal(tmp_path):
    from dicesim.topology import get_topology, save_toml

    G = get_topology("tiny-ring4")
    G.graph["name"] = FORGED
    f = tmp_path / "t.toml"
    save_toml(G, f)
    for argv in (["check", str(f)], ["topology", "show", str(f)], ["topology", "route", str(f), "0", "2"]):
        o = run_cli(argv)
        assert o.code == 0, o.err
        assert "\x1b" not in o.out and "\u202e" not in o.out and "\\x1b" in o.out
        assert not any(line.startswith("error: forged") for line in o.out.splitlines()), o.out


def test_error_lines_escape_what_they_quote(tmp_path):
    f = tmp_path / "bad\x1b[2J.toml"
    f.write_text('[model]\nname = "nope\\u001b[31m"\n')
    o = run_cli(["check", str(f)])
    assert verdict(o, expect_error=True) is None, o.err
    assert "\x1b" not in o.err and "\\x1b" in o.err


def test_trace_metadata_strings_are_escaped_in_a_summary(tmp_path):
    doc = json.loads(EXEC_TRACE.read_text())
    doc["otherData"]["strategy"] = FORGED
    f = tmp_path / "t.trace.json"
    f.write_text(json.dumps(doc))
    o = run_cli(["trace", "summary", str(f)])
    assert o.code == 0, o.err
    assert "\x1b" not in o.out and "\\x1b" in o.out
