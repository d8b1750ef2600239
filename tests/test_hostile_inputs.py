"""Named hostile inputs: the issue's three reports, XML bombs and external entities, gzip
bombs, and every size limit of docs/limits.md (each limit is hit for real, some lowered
with monkeypatch so the test stays small)."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch

from dicesim.cli import main
from dicesim.trace import TraceMeta, read_trace, write_trace
from fuzz_cases import EXEC_TRACE, TINY


def _err(capsys, argv, code=2):
    got = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert got == code, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


# --- the reports ------------------------------------------------------------------
def test_wrong_typed_run_metadata_to_calibrate(tmp_path, capsys):
    doc = json.loads(EXEC_TRACE.read_text())
    doc["otherData"]["scenario"]["batch_per_rank"] = "two"
    f = tmp_path / "bad.trace.json"
    f.write_text(json.dumps(doc))
    line = _err(capsys, ["calibrate", str(f), "--out", str(tmp_path / "p.toml")])
    assert "bad.trace.json: metadata scenario.batch_per_rank" in line and "'two'" in line
    assert not (tmp_path / "p.toml").exists()


@pytest.mark.parametrize("where", ["otherData", "traceEvents", "top"])
@pytest.mark.parametrize("command", [["check"], ["trace", "summary"]])
def test_deeply_nested_json(tmp_path, capsys, where, command):
    deep = "[" * 100_000 + "]" * 100_000
    text = {"top": deep, "traceEvents": '{"traceEvents": ' + deep + "}",
            "otherData": '{"traceEvents": [], "otherData": {"schema_version": "dicesim-trace/1", "source": "sim", '
                         '"extra": {"x": ' + "[" * 40 + "]" * 40 + "}}}"}[where]
    f = tmp_path / "deep.trace.json"
    f.write_text(text)
    line = _err(capsys, [*command, str(f)])
    assert "deep.trace.json" in line and ("nested" in line or "deeper" in line), line


def test_integers_beyond_64_bits_in_a_scenario(tmp_path, capsys):
    f = tmp_path / "big.toml"
    f.write_text("[workload]\nbatch = 100000000000000000000000\n")
    line = _err(capsys, ["check", str(f)])
    assert "big.toml: workload.batch: integer 100000000000000000000000 does not fit 64 bits" in line


# --- XML -----------------------------------------------------------------------------------
BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>
<graphml xmlns="http://graphml.graphdrawing.org/xmlns"><graph edgedefault="directed">
<node id="&lol4;"/></graph></graphml>"""
XXE = """<?xml version="1.0"?>
<!DOCTYPE g [<!ENTITY secret SYSTEM "file://{target}">]>
<graphml xmlns="http://graphml.graphdrawing.org/xmlns"><graph edgedefault="directed">
<node id="&secret;"/></graph></graphml>"""


@pytest.mark.parametrize("doc", ["billion_laughs", "xxe"])
def test_graphml_entities_are_refused(tmp_path, capsys, doc):
    secret = tmp_path / "secret.txt"
    secret.write_text("do-not-leak")
    f = tmp_path / "evil.graphml"
    f.write_text(BILLION_LAUGHS if doc == "billion_laughs" else XXE.format(target=secret))
    line = _err(capsys, ["topology", "show", str(f)])
    assert "evil.graphml: refused GraphML with a DTD" in line and "do-not-leak" not in line


# --- sizes -------------------------------------------------------------------------------
def test_gzip_bomb_stops_at_the_limit(tmp_path, capsys, monkeypatch):
    import dicesim.trace.chrome as chrome

    monkeypatch.setattr(chrome, "MAX_JSON_TRACE_BYTES", 1 << 20)
    f = tmp_path / "bomb.trace.json.gz"
    f.write_bytes(gzip.compress(b" " * (64 << 20)))  # 64 MiB of blanks in 64 KiB
    assert f.stat().st_size < 1 << 20
    line = _err(capsys, ["check", str(f)])
    assert "gzip data expands past the 1 MiB limit" in line


def test_parquet_event_limit_read_from_the_footer(tmp_path, capsys, monkeypatch):
    import dicesim.trace.parquet as parquet

    df, meta = read_trace(EXEC_TRACE)
    paths = write_trace(df, meta, tmp_path, "t")
    monkeypatch.setattr(parquet, "MAX_TRACE_EVENTS", len(df) - 1)
    line = _err(capsys, ["check", str(paths["parquet"])])
    assert f"{len(df):,} events, more than the {len(df) - 1:,} limit" in line


def test_oversized_text_file_is_not_read(tmp_path, capsys, monkeypatch):
    import dicesim.tomlio as tomlio

    monkeypatch.setattr(tomlio, "MAX_TEXT_FILE_BYTES", 100)
    f = tmp_path / "s.toml"
    f.write_text("# padding\n" * 20)
    assert "larger than the 100 B limit" in _err(capsys, ["check", str(f)])


@pytest.mark.parametrize("flags, needle", [
    (["--model", "XL/2", "--world-size", "1024", "--topology", "8x-rtx4090-pcie"], "exceeds the 8 GPUs"),
    (["--steps", "20000"], "less than or equal to 10000"),
    (["--batch", str(2**21)], "less than or equal to 1048576"),
])
def test_run_size_flags(capsys, flags, needle):
    assert needle in _err(capsys, ["simulate", *flags, "--json"])


def test_routing_tables_beyond_memory_are_refused():
    from dicesim.errors import ConfigError
    from dicesim.scenario import RoutingConfig, Scenario, check_run_size

    sc = Scenario.model_construct(**{**Scenario().model_dump(), "num_experts": 1024, "world_size": 1024,
                                     "routing": RoutingConfig(sampling="multinomial")})
    with pytest.raises(ConfigError, match=r"needs 21\.9 GiB of routing tables, over the 4 GiB limit"):
        check_run_size(sc)
    # expected counts are one [layers, experts] table seen through broadcast views: nothing to refuse
    check_run_size(Scenario.model_construct(**{**dict(sc), "routing": RoutingConfig()}))


def test_recorded_events_beyond_the_trace_limit(tmp_path, capsys):
    line = _err(capsys, ["simulate", "--model", "XL/2", "--topology", "8x-dgx-h100-ib", "--world-size", "64",
                         "--steps", "1000", "--out", str(tmp_path / "o")])
    assert "records about 35,840,000 events" in line and not (tmp_path / "o").exists()


def test_sweep_grid_beyond_the_limit(tmp_path, capsys):
    f = tmp_path / "s.toml"
    f.write_text("[axes]\nbatch = [" + ", ".join(map(str, range(1, 401))) + "]\n"
                 "steps = [" + ", ".join(map(str, range(1, 301))) + "]\n")
    line = _err(capsys, ["sweep", str(f), "--out", str(tmp_path / "o"), "--workers", "0"])
    assert "400 batch x 300 steps = 120,000 configurations" in line
    assert not (tmp_path / "o").exists()


def test_topology_node_limit(tmp_path, capsys, monkeypatch):
    import dicesim.topology.io as io_

    monkeypatch.setattr(io_, "MAX_TOPOLOGY_NODES", 3)
    f = tmp_path / "t.toml"
    assert main(["topology", "export", "tiny-ring4", str(f)]) == 0
    capsys.readouterr()
    assert "over the limits of 3 nodes" in _err(capsys, ["check", str(f)])


# --- numbers and types -------------------------------------------------------------------
@pytest.mark.parametrize("value, needle", [("inf", "finite"), ("11.0", "host_op_s: 11.0 is outside the plausible range (allowed: 0 to 10 s)")])
def test_profile_numbers(tmp_path, capsys, value, needle):
    from fuzz_cases import ROOT

    text = (ROOT / "dicesim" / "data" / "profiles" / "rtx4090.toml").read_text()
    f = tmp_path / "p.toml"
    f.write_text(text.replace("host_op_s = ", f"host_op_s = {value} #", 1))
    assert needle in _err(capsys, ["simulate", *TINY, "--profile", str(f), "--json"])


def test_router_histogram_of_wrong_shape_in_metadata(tmp_path, capsys):
    doc = json.loads(EXEC_TRACE.read_text())
    doc["otherData"]["extra"]["router_hist"] = [[[1, 2], [3]]]
    f = tmp_path / "r.trace.json"
    f.write_text(json.dumps(doc))
    assert "router_hist is ragged" in _err(capsys, ["simulate", *TINY, "--profile", "rtx4090",
                                                      "--histogram", str(f), "--json"])


@pytest.mark.parametrize("arr, needle", [(np.array([["a", "b"]]), "<U1"), (np.ones((2, 2), complex), "complex")])
def test_histogram_file_types(tmp_path, capsys, arr, needle):
    f = tmp_path / "h.npy"
    np.save(f, arr)
    assert needle in _err(capsys, ["simulate", *TINY, "--profile", "rtx4090", "--histogram", str(f), "--json"])


def test_trace_meta_nan_is_refused(tmp_path):
    from dicesim.errors import TraceError
    from dicesim.trace.schema import TraceMeta as M

    with pytest.raises(TraceError, match=r"meta.extra.x: nan is not a finite number"):
        M.from_dict({"schema_version": "dicesim-trace/1", "source": "sim", "extra": {"x": float("nan")}}, "w")


# --- checkpoints ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_state(tmp_path_factory):
    from fuzz_cases import make_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    make_checkpoint(path)
    return torch.load(path, weights_only=True)


@pytest.mark.parametrize("change, needle", [
    ("nan", "holds NaN or infinite values"), ("int", "holds torch.int64 values"), ("pickle", "cannot read"),
])
def test_checkpoint_contents(tmp_path, tiny_state, change, needle):
    from dicesim.errors import ConfigError
    from validate.model.checkpoint import read_checkpoint

    state = dict(tiny_state)
    key = sorted(state)[0]
    f = tmp_path / "c.pt"
    if change == "nan":
        state[key] = state[key].clone().fill_(float("nan"))
    elif change == "int":
        state[key] = state[key].to(torch.int64)
    if change == "pickle":
        import pickle

        f.write_bytes(pickle.dumps(print))  # a global torch's weights-only unpickler refuses
    else:
        torch.save(state, f)
    with pytest.raises(ConfigError, match=needle):
        read_checkpoint(f)


def test_checkpoint_size_limit(tmp_path):
    from dicesim.errors import ConfigError
    from validate.model.checkpoint import read_checkpoint

    f = tmp_path / "c.pt"
    f.write_bytes(b"\0" * 2048)
    with pytest.raises(ConfigError, match="larger than the 1 KiB limit"):
        read_checkpoint(f, max_bytes=1024)


@pytest.mark.slow
def test_checkpoint_that_does_not_fit_the_model_is_exit_2_from_the_ranks(tmp_path, capsys, tiny_state):
    from validate.cli import main as vmain

    state = {k: v for k, v in tiny_state.items() if not k.startswith("final_layer")}
    f = tmp_path / "c.pt"
    torch.save(state, f)
    code = vmain(["run", "--world-size", "2", "--steps", "2", "--batch", "1", "--checkpoint", str(f)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("error: rank ") and "missing: final_layer" in err


@pytest.mark.parametrize("argv, needle", [
    (["run", "--timeout", "nan"], "timeout"), (["run", "--guidance-scale", "inf"], "guidance_scale"),
    (["run", "--world-size", "65"], "1..64"), (["run", "--seed", "-1"], "seed"),
])
def test_executor_ranges(capsys, argv, needle):
    from validate.cli import main as vmain

    code = vmain(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and needle in err, err


def test_trace_meta_written_by_the_project_still_reads(tmp_path):
    df, meta = read_trace(EXEC_TRACE)
    assert isinstance(meta, TraceMeta) and meta.extra["router_hist"]


def test_error_in_a_compare_worker_process_is_one_line(tmp_path, capsys):
    """A reader's error raised in a worker process must cross back (errors pickle)."""
    f = tmp_path / "bad.npy"
    f.write_bytes(b"not an array")
    line = _err(capsys, ["compare", *TINY, "--profile", "rtx4090", "--histogram", str(f), "--strategies", "sync,dice",
                         "--workers", "2", "--out", str(tmp_path / "o")])
    assert "routing.histogram" in line and "bad.npy" in line and not (tmp_path / "o").exists()


def test_errors_survive_pickling():
    import pickle

    from dicesim.errors import ConfigError

    err = pickle.loads(pickle.dumps(ConfigError("batch", "too big", ["1..8"])))
    assert isinstance(err, ConfigError) and err.field == "batch" and err.one_line() == "batch: too big (allowed: 1..8)"
