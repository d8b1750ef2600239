"""Answers that go stale silently (issue 19, class 2): a resumed sweep reuses a stored result only
when nothing that determined it changed. Files are compared by content, so the same path with new
content is a new configuration; the built-in data files count too.

The stateful test (hypothesis ``RuleBasedStateMachine``) changes the topology and the profile a
sweep references (same paths, new content), touches them without changing them, interrupts runs
after any number of chunks, resumes, and after every completed run compares the table with a
fresh run on the same files in an empty directory. The simulator is the real one, on the tiny
model (~10 ms a configuration).
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import tomllib
from pathlib import Path

import pandas as pd
import pytest
import tomli_w
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from dicesim.cli import main
from fuzz_cases import FUZZ_SCALE, ROOT

METRICS = ["step_latency_s", "exposed_comm_step_s", "weighted_lag_steps"]
PROFILE = ROOT / "dicesim" / "data" / "profiles" / "rtx4090.toml"


class Stop(Exception):
    """An interruption after some chunks (what Ctrl-C or a killed worker leaves)."""


def write_files(d: Path, *, bw_Bps: float, tflops: float) -> None:
    """A scenario naming a topology file (relative to itself) and a profile file, and a sweep
    whose base is that scenario."""
    from dicesim.topology import get_topology, save_toml

    save_toml(get_topology("tiny-ring4"), d / "topo.toml")
    doc = tomllib.loads((d / "topo.toml").read_text())
    for link in doc["links"]:
        link["bw_Bps"] = bw_Bps
    (d / "topo.toml").write_text(tomli_w.dumps(doc))
    prof = tomllib.loads(PROFILE.read_text())
    prof["peak_tflops"] = tflops
    (d / "prof.toml").write_text(tomli_w.dumps(prof))
    # the topology by a relative name, the profile by an absolute one (relative profile names were
    # resolved against the working directory before issue 19: this test is about content, not names)
    (d / "base.toml").write_text(tomli_w.dumps({
        "model": {"name": "tiny"}, "workload": {"image_size": 32, "steps": 2},
        "topology": {"file": "topo.toml", "world_size": 4}, "profile": {"file": str(d / "prof.toml")}}))
    (d / "sweep.toml").write_text(tomli_w.dumps({
        "sweep": {"name": "resume", "base": "base.toml", "chunk_size": 1},
        "axes": {"strategy": ["sync", "dice"], "batch": [1, 2]}}))


def run(d: Path, out: Path, *, stop_after: int | None = None):
    from dicesim.sweep import load_sweep, run_sweep

    done = itertools.count(1)

    def on_chunk(path, rows):
        if stop_after is not None and next(done) > stop_after:
            raise Stop

    return run_sweep(load_sweep(d / "sweep.toml"), out, workers=0, on_chunk=on_chunk)


def same_results(a: pd.DataFrame, b: pd.DataFrame) -> None:
    cols = ["index", "key", "status", "strategy", "batch", *METRICS]
    pd.testing.assert_frame_equal(a[cols].reset_index(drop=True), b[cols].reset_index(drop=True))


class SweepResume(RuleBasedStateMachine):
    """Change referenced files, interrupt, resume: the table always equals a fresh run's."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="dicesim-resume-"))
        self.out = self.dir / "out"
        self.fresh = itertools.count()
        self.bw, self.tflops = 25e9, 82.6

    @initialize()
    def files(self) -> None:
        write_files(self.dir, bw_Bps=self.bw, tflops=self.tflops)

    @rule(bw=st.sampled_from([1e7, 1e8, 25e9]))
    def change_topology(self, bw: float) -> None:
        self.bw = bw
        write_files(self.dir, bw_Bps=self.bw, tflops=self.tflops)

    @rule(tflops=st.sampled_from([10.0, 82.6, 330.0]))
    def change_profile(self, tflops: float) -> None:
        self.tflops = tflops
        write_files(self.dir, bw_Bps=self.bw, tflops=self.tflops)

    @rule()
    def touch_without_change(self) -> None:
        for name in ("topo.toml", "prof.toml"):
            (self.dir / name).write_bytes((self.dir / name).read_bytes())

    @rule(after=st.integers(0, 3))
    def interrupt(self, after: int) -> None:
        try:
            run(self.dir, self.out, stop_after=after)
        except Stop:
            pass

    @rule()
    def resume_and_compare(self) -> None:
        resumed = run(self.dir, self.out)
        fresh = run(self.dir, self.dir / f"fresh-{next(self.fresh)}")
        assert resumed.n_cached + resumed.n_run == resumed.n_total == 4
        assert list(resumed.table["index"]) == [0, 1, 2, 3]  # one row per configuration, no gap
        assert fresh.n_cached == 0
        same_results(resumed.table, fresh.table)
        again = run(self.dir, self.out)  # nothing changed since: everything is reused, nothing redone
        assert again.n_run == 0 and again.n_cached == 4
        same_results(again.table, fresh.table)

    def teardown(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


TestSweepResume = SweepResume.TestCase
TestSweepResume.settings = settings(max_examples=12 * FUZZ_SCALE, stateful_step_count=6, deadline=None, database=None,
                                    suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("change", ["topology", "profile"])
def test_resume_after_a_referenced_file_changed_recomputes(tmp_path, capsys, change):
    """The issue's report: same path, new content; the resumed sweep must not reuse old rows."""
    write_files(tmp_path, bw_Bps=25e9, tflops=82.6)
    out = tmp_path / "out"
    assert main(["sweep", str(tmp_path / "sweep.toml"), "--out", str(out), "--workers", "0"]) == 0
    old = pd.read_parquet(out / "sweep.parquet")
    write_files(tmp_path, bw_Bps=1e7 if change == "topology" else 25e9, tflops=82.6 if change == "topology" else 1.0)
    capsys.readouterr()
    assert main(["sweep", str(tmp_path / "sweep.toml"), "--out", str(out), "--workers", "0"]) == 0
    assert "0 reused from earlier runs" in capsys.readouterr().out
    new = pd.read_parquet(out / "sweep.parquet")
    fresh = run(tmp_path, tmp_path / "fresh").table
    same_results(new, fresh)
    assert (new["step_latency_s"] > old["step_latency_s"]).all()  # slower links or compute: every step slower


def test_the_key_covers_the_built_in_data_files(tmp_path, monkeypatch):
    import dicesim.content_key as content_key
    from dicesim.content_key import Digests
    from dicesim.scenario import make_scenario
    from dicesim.sweep import config_key

    base = make_scenario(model="tiny", topology="tiny-ring4", world_size=4, steps=2, batch=1, image_size=32)
    key = config_key(base, {"strategy": "dice"}, Digests())
    data = tmp_path / "data"
    shutil.copytree(ROOT / "dicesim" / "data", data)
    monkeypatch.setattr(content_key, "_DATA_DIR", data)
    assert config_key(base, {"strategy": "dice"}, Digests()) == key  # same content, same key
    (data / "nccl.toml").write_text((data / "nccl.toml").read_text() + "\n# changed\n")
    assert config_key(base, {"strategy": "dice"}, Digests()) != key


def test_duplicate_axis_values_are_refused(tmp_path, capsys):
    """The same value twice would simulate one configuration twice and leave a gap in the index."""
    write_files(tmp_path, bw_Bps=25e9, tflops=82.6)
    for axis, values in (("strategy", '["dice", "sync", "dice"]'), ("batch", "[1, 2, 1.0]"),
                         ("sync_layers", '[[0, 1], [1], [0, 1]]')):
        text = (tmp_path / "sweep.toml").read_text().split("[axes]")[0] + f"[axes]\n{axis} = {values}\n"
        (tmp_path / "dup.toml").write_text(text)
        assert main(["check", str(tmp_path / "dup.toml")]) == 2
        err = capsys.readouterr().err
        assert f"axes.{axis}[2]: repeats the value" in err and "(allowed: each value once)" in err
