"""Memory, special files and the environment (issue 19, classes 6 and 7): a reader bounds what it
builds, not only what it reads; parallel runs fit the CPUs and the memory; what ``check`` accepts
runs within the documented limits; FIFOs are refused before they are opened; any stdout encoding
and any ``COLUMNS`` still give the result; bad training options are one line.

Limits are lowered with monkeypatch where the real one would need gigabytes to reach."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import signal
import tomllib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tomli_w

from fuzz_cases import ACCEPTANCE, EXEC_TRACE, TINY, run_cli, tiny_acceptance, verdict

SIM = [*TINY, "--profile", "rtx4090"]


def _one_line(o, needle: str = "") -> str:
    assert verdict(o, expect_error=True) is None, o.err or o.crash
    assert needle in o.err, o.err
    return o.err


# --- readers bound what they build --------------------------------------------------------
def test_a_trace_of_empty_events_is_refused_before_it_is_built(tmp_path, monkeypatch):
    """1.1 MB of gzip held 85 M empty events that were all built (6.6 GB) before any count."""
    monkeypatch.setattr("dicesim.inputs.MAX_JSON_VALUES", 100_000)
    head = '{"otherData": {"schema_version": "dicesim-trace/1", "source": "sim"}, "traceEvents": ['
    f = tmp_path / "empty.trace.json.gz"
    f.write_bytes(gzip.compress((head + "{}," * 200_000 + "{}]}").encode()))
    for argv in (["check", str(f)], ["trace", "summary", str(f)], ["results", "table", str(f)]):
        _one_line(run_cli(argv), "values, more than the 100,000 a reader builds")


def _dictionary_trace(path, rows: int, text: str) -> None:
    from dicesim.trace.parquet import ARROW_SCHEMA, _META_KEY, _VERSION_KEY
    from dicesim.trace.schema import SCHEMA_VERSION, TraceMeta

    cols = {}
    for f in ARROW_SCHEMA:
        if f.type == pa.string():  # one long value, stored once, referenced by every row
            cols[f.name] = pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, dtype=np.int32)), pa.array([text]))
        else:
            cols[f.name] = pa.array(np.zeros(rows, dtype=f.type.to_pandas_dtype()))
    t = pa.table(cols)
    with pq.ParquetWriter(str(path), t.schema, store_schema=False) as w:  # read back as plain strings
        w.write_table(t)
        w.add_key_value_metadata({_VERSION_KEY: SCHEMA_VERSION.encode(),
                                  _META_KEY: TraceMeta(source="sim").to_json().encode()})


def test_a_dictionary_encoded_parquet_trace_is_bounded_by_what_it_decodes_to(tmp_path, monkeypatch):
    """16 KB of dictionary indices decoded to 7 GB before a MemoryError."""
    monkeypatch.setattr("dicesim.trace.parquet.MAX_PARQUET_DECODED_BYTES", 16 << 20)
    f = tmp_path / "d.events.parquet"
    _dictionary_trace(f, 20_000, "x" * 1000)  # 80 MB decoded, a few KB stored
    assert f.stat().st_size < 200_000
    for argv in (["check", str(f)], ["trace", "summary", str(f)], ["calibrate", str(f), "--out",
                                                                   str(tmp_path / "p.toml")]):
        _one_line(run_cli(argv), "columns decode to 78.1 MiB, more than the 16 MiB limit")


def test_a_small_result_table_that_decodes_to_gigabytes_is_refused(tmp_path):
    f = tmp_path / "t.parquet"
    text = pa.DictionaryArray.from_arrays(pa.array(np.zeros(100_000, dtype=np.int32)), pa.array(["y" * 40_000]))
    pq.write_table(pa.table({"strategy": text, "step_latency_s": np.ones(100_000)}), f)
    assert f.stat().st_size < 100_000
    for argv in (["check", str(f)], ["results", "report", str(f), "--out", str(tmp_path / "r.html")]):
        _one_line(run_cli(argv), "columns decode to 3.73 GiB, more than the 256 MiB limit")
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_result_table_with_too_many_columns_is_refused(tmp_path, suffix):
    import pandas as pd

    df = pd.DataFrame({f"c{i}": [1.0] for i in range(300)})
    f = tmp_path / f"t{suffix}"
    df.to_csv(f, index=False) if suffix == ".csv" else df.to_parquet(f, index=False)
    _one_line(run_cli(["check", str(f)]), "300 columns, more than the 256")


# --- parallel runs fit the CPUs and the memory --------------------------------------------
@pytest.mark.parametrize("argv", [
    ["compare", *SIM, "--workers", "256"],
    ["sweep", "{sweep}", "--workers", "256"],
    ["study", "--models", "tiny", "--topologies", "tiny-ring4", "--batches", "1", "--steps", "2", "--workers", "256"],
    ["recommend", *SIM, "--workers", "256"],
])
def test_more_workers_than_cpus_are_refused(tmp_path, argv):
    from dicesim.membudget import usable_cpus

    (tmp_path / "s.toml").write_text('[sweep]\nname = "s"\n[base.model]\nname = "tiny"\n[axes]\nbatch = [1, 2]\n')
    args = [a.format(sweep=tmp_path / "s.toml") for a in argv] + ["--out", str(tmp_path / "o")]
    _one_line(run_cli(args), f"--workers: 256 worker processes on {usable_cpus()} usable CPUs")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_parallel_runs_are_bounded_by_the_memory_they_need(tmp_path, monkeypatch):
    """Each recorded run below needs ~0.9 GiB; with 1.2 GiB to plan with, two at once do not fit."""
    monkeypatch.setattr("dicesim.membudget.available_nbytes", lambda: int(1.5 * 2**30))
    monkeypatch.setattr("dicesim.membudget.usable_cpus", lambda: 4)
    big = ["--model", "XL/2", "--topology", "8x-rtx4090-pcie", "--world-size", "8", "--steps", "150", "--batch", "1"]
    _one_line(run_cli(["compare", *big, "--workers", "2", "--out", str(tmp_path / "c")]),
              "--workers: 2 workers x about")
    line = _one_line(run_cli(["simulate", *big, "--steps", "1000", "--out", str(tmp_path / "s")]), "memory:")
    assert "one simulation needs about" in line and not (tmp_path / "s").exists()


def test_the_default_worker_count_is_what_fits():
    from dicesim.membudget import plan_workers

    gib = 2**30
    assert plan_workers(None, [gib], jobs=10, budget_nbytes=3 * gib, cpus=8) == 3
    assert plan_workers(None, [gib], jobs=2, budget_nbytes=3 * gib, cpus=8) == 2
    assert plan_workers(None, [gib], jobs=10, budget_nbytes=10 * gib, cpus=2) == 2
    assert plan_workers(0, [gib], jobs=10, budget_nbytes=3 * gib, cpus=2) == 0
    from dicesim.errors import ConfigError

    with pytest.raises(ConfigError, match="one simulation needs about 4 GiB"):
        plan_workers(0, [4 * gib], jobs=1, budget_nbytes=3 * gib, cpus=2)


# --- what check accepts runs within the limits --------------------------------------------
def test_an_acceptance_file_that_would_run_for_minutes_is_refused(tmp_path):
    """10,000 steps and a batch of a million passed `check`, then accuracy --paper ran for minutes."""
    doc = tomllib.loads(ACCEPTANCE.read_text())
    doc["setting"].update(steps=10_000, batches=[1_000_000])
    f = tmp_path / "a.toml"
    f.write_text(tomli_w.dumps(doc))
    for argv in (["check", str(f)], ["accuracy", "--paper", str(f), "--json"]):
        _one_line(run_cli(argv), "GPU-layer-steps, more than the 2,000,000 one check may run")
    small = tmp_path / "small.toml"
    small.write_text(tomli_w.dumps(tiny_acceptance(tomllib.loads(ACCEPTANCE.read_text()))))
    assert run_cli(["check", str(small)]).code == 0


# --- special files ------------------------------------------------------------------------
@pytest.mark.parametrize("name, argv", [
    ("f.toml", ["check", "{f}"]),
    ("f.trace.json", ["check", "{f}"]),
    ("f.events.parquet", ["check", "{f}"]),
    ("f.graphml", ["check", "{f}"]),
    ("f.trace.json", ["trace", "summary", "{f}"]),
    ("f.events.parquet", ["trace", "summary", "{f}"]),
    ("f.trace.json", ["calibrate", "{f}", "--out", "{d}/p.toml"]),
    ("f.json", ["results", "table", "{f}"]),
    ("f.csv", ["results", "report", "{f}", "--out", "{d}/r.html"]),
    ("f.toml", ["simulate", *SIM, "--profile", "{f}", "--json"]),
    ("f.npy", ["simulate", *SIM, "--histogram", "{f}", "--json"]),
    ("f.toml", ["sweep", "{f}", "--out", "{d}/o", "--workers", "0"]),
    ("f.toml", ["accuracy", "--paper", "{f}"]),
])
def test_a_fifo_is_refused_before_it_is_opened(tmp_path, name, argv):
    f = tmp_path / name
    os.mkfifo(f)

    def alarm(signum, frame):
        raise TimeoutError("blocked on a FIFO")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(30)
    try:
        o = run_cli([a.format(f=f, d=tmp_path) for a in argv])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    _one_line(o, "is a FIFO, not a regular file")


# --- the terminal -------------------------------------------------------------------------
def _run_with_stdout(argv, encoding: str) -> tuple[int, bytes]:
    from dicesim.cli import main

    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding=encoding, errors="strict", write_through=True)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(argv)
    out.flush()
    return code, raw.getvalue()


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_a_stdout_that_cannot_encode_still_gets_the_result(tmp_path, encoding):
    """The simulation ran, then printing a box character raised UnicodeEncodeError: result lost."""
    code, out = _run_with_stdout(["simulate", *SIM], encoding)
    assert code == 0 and b"step latency" in out
    code, out = _run_with_stdout(["presets"], encoding)
    assert code == 0 and b"XL/2" in out


@pytest.mark.parametrize("columns", ["0", "-5", "abc", "1"])
def test_a_useless_columns_value_does_not_hide_the_output(monkeypatch, columns):
    monkeypatch.setenv("COLUMNS", columns)
    for argv, needle in ((["presets"], "XL/2"), (["strategy", "show", "dice", "--layers", "4", "--steps", "2"], "t1"),
                         (["topology", "list"], "tiny-ring4")):
        o = run_cli(argv)
        assert o.code == 0 and needle in o.out, (argv, o.out[:200])


# --- executor options ---------------------------------------------------------------------
@pytest.mark.parametrize("args, needle", [
    (["--lr", "nan"], "lr: nan is out of range"),
    (["--lr", "-0.1"], "lr: -0.1 is out of range"),
    (["--lr", "inf"], "lr: inf is out of range"),
    (["--threads", "100000"], "threads: 100000 is out of range"),
    (["--batch", "100000000"], "batch"),
    (["--steps", "10000000000"], "steps"),
])
def test_train_small_options_are_checked_before_training(tmp_path, args, needle):
    _one_line(run_cli(["train-small", *args, "--out-dir", str(tmp_path / "o")], executor=True), needle)
    assert not (tmp_path / "o").exists()


def test_the_seed_trace_still_reads(tmp_path):
    """The bounds above leave real inputs alone: the committed executor trace reads as before."""
    o = run_cli(["check", str(EXEC_TRACE)])
    assert o.code == 0, o.err
    doc = json.loads(EXEC_TRACE.read_text())
    from dicesim.inputs import json_value_bound

    assert json_value_bound(json.dumps(doc)) < 1_000_000
