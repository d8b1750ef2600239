"""Merging a simulated and an executed trace into one Perfetto document."""

from __future__ import annotations

import json

from dicesim.cli import main
from dicesim.trace import EventRecorder, TraceMeta, write_trace
from dicesim.trace.merge import PID_STRIDE, merged_document


def _trace(source: str, t0: float, ranks: int):
    rec = EventRecorder(source)
    for r in range(ranks):
        rec.add(r, "compute", "compute", "attention", t0 + 0.0, t0 + 10.0, layer=0, step=0)
        rec.add(r, "comm", "collective", "dispatch", t0 + 5.0, t0 + 20.0, layer=0, step=0, nbytes=64)
    return rec.to_frame(), TraceMeta(source=source, world_size=ranks)


def test_each_input_gets_its_own_ranks_from_time_zero():
    a, b = _trace("executor", 1e6, 2), _trace("sim", 0.0, 3)
    doc = merged_document([("exec", *a), ("sim", *b)])
    names = {e["pid"]: e["args"]["name"] for e in doc["traceEvents"] if e.get("name") == "process_name"}
    assert names == {0: "exec rank 0", 1: "exec rank 1", PID_STRIDE: "sim rank 0",
                     PID_STRIDE + 1: "sim rank 1", PID_STRIDE + 2: "sim rank 2"}
    xs = [e for e in doc["traceEvents"] if e.get("ph") == "X"]
    assert len(xs) == 10
    assert min(e["ts"] for e in xs if e["pid"] < PID_STRIDE) == 0.0  # executor clock shifted to 0


def test_cli_merge_writes_one_document(tmp_path, capsys):
    for label, (df, meta) in {"e": _trace("executor", 5.0, 2), "s": _trace("sim", 0.0, 2)}.items():
        write_trace(df, meta, tmp_path, label)
    out = tmp_path / "both.json"
    code = main(["trace", "merge", str(tmp_path / "e.trace.json"), str(tmp_path / "s.events.parquet"),
                 "--labels", "executor,sim", "--out", str(out)])
    assert code == 0
    doc = json.loads(out.read_text())
    assert {m["label"] for m in doc["otherData"]["merged"]} == {"executor", "sim"}


def test_cli_merge_label_count_mismatch_is_one_line(tmp_path, capsys):
    df, meta = _trace("sim", 0.0, 1)
    write_trace(df, meta, tmp_path, "s")
    p = str(tmp_path / "s.trace.json")
    code = main(["trace", "merge", p, p, "--labels", "only-one", "--out", str(tmp_path / "x.json")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--labels" in err
