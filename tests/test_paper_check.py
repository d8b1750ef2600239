"""The acceptance check: the paper file is validated, and every prediction is the simulator's own ratio."""

from __future__ import annotations

import pytest

from dicesim.calibrate.published.paper import load_paper_set, predict_rows
from dicesim.cli import main
from dicesim.errors import ConfigError
from dicesim.scenario import make_scenario
from dicesim.sim.api import simulate

TINY = """schema = "dicesim-acceptance/1"
[setting]
topology = "tiny-ring4"
world_size = 4
image_size = 64
steps = 4
batches = [1, 2]
profile = "h100-sxm"
[[figure]]
id = "speedup"
quantity = "q"
metric = "speedup"
strategy = "dice"
models = ["tiny"]
value = 1.1
unit = "x"
quote = "q"
source = "s"
url = "u"
date = "2025"
[[figure]]
id = "share"
quantity = "q"
metric = "sync_comm_share"
strategy = "sync"
models = ["tiny"]
low = 0.0
high = 0.99
unit = "fraction"
quote = "q"
source = "s"
url = "u"
date = "2025"
"""


def test_the_committed_file_loads_and_names_its_sources():
    ps = load_paper_set()
    assert {f.id for f in ps.figure} == {"dice-speedup", "a2a-share-xl-8gpu"}
    assert all(f.url.startswith("https://") and f.quote for f in ps.figure)


def test_predictions_are_the_simulators_ratios_and_gaps_follow_the_band(tmp_path):
    path = tmp_path / "paper.toml"
    path.write_text(TINY)
    rows = predict_rows(load_paper_set(path)).set_index(["figure", "batch"])
    for batch in (1, 2):
        kw = dict(model="tiny", topology="tiny-ring4", world_size=4, image_size=64, steps=4, batch=batch,
                  profile="h100-sxm")
        sync = simulate(make_scenario(strategy="sync", **kw)).summary()
        dice = simulate(make_scenario(strategy="dice", **kw)).summary()
        speedup = rows.loc[("speedup", batch)]
        assert speedup["predicted"] == pytest.approx(sync["step_latency_s"] / dice["step_latency_s"], rel=1e-12)
        assert speedup["gap"] == pytest.approx(speedup["predicted"] / 1.1 - 1, rel=1e-12)
        share = rows.loc[("share", batch)]
        assert 0 < share["predicted"] < 0.99 and share["gap"] == 0.0  # inside the band: no gap


@pytest.mark.parametrize("edit, needle", [
    (("value = 1.1", "value = \"fast\""), "value"),
    (("value = 1.1", "value = 0.0"), "value"),  # fuzzing: the relative gap divided by it
    (("low = 0.0\nhigh = 0.99", "low = 0.0\nhigh = 0.0"), "high"),
    (("low = 0.0\nhigh = 0.99", "low = 0.9\nhigh = 0.1"), "low"),
    (("metric = \"speedup\"", "metric = \"latency\""), "metric"),
    (("batches = [1, 2]", "batches = []"), "batches"),
])
def test_bad_files_are_one_line_errors(tmp_path, edit, needle):
    path = tmp_path / "paper.toml"
    path.write_text(TINY.replace(*edit))
    with pytest.raises(ConfigError, match=needle):
        load_paper_set(path)


def test_cli_writes_only_its_own_section(tmp_path, capsys):
    path, md = tmp_path / "paper.toml", tmp_path / "accuracy.md"
    path.write_text(TINY)
    md.write_text("# Accuracy\n\nCPU section\n")
    assert main(["accuracy", "--paper", str(path), "--out", str(md)]) == 1  # the speedup misses its point value
    out = capsys.readouterr().out
    assert "speedup: paper 1.10x" in out and "paper check: 1 of 2 figures outside their band" in out
    assert "(speedup): exit 1" in out
    text = md.read_text()
    assert text.startswith("# Accuracy\n\nCPU section\n") and "<!-- paper:begin" in text and "<!-- paper:end -->" in text
    assert main(["accuracy", "--paper", str(path), "--out", str(md)]) == 1  # rewritten in place, not appended
    assert md.read_text().count("<!-- paper:begin") == 1


def test_exit_code_gates_on_the_bands(tmp_path, capsys):
    """0 when every prediction is inside its band, 1 when one is not, 2 for bad input (a script can gate on it)."""
    inside = tmp_path / "inside.toml"
    inside.write_text(TINY.replace("value = 1.1", "low = 0.01\nhigh = 100.0"))
    assert main(["accuracy", "--paper", str(inside)]) == 0
    assert "paper check: 0 of 2 figures outside their band" in capsys.readouterr().out
    outside = tmp_path / "outside.toml"
    outside.write_text(TINY.replace("value = 1.1", "low = 50.0\nhigh = 100.0"))
    assert main(["accuracy", "--paper", str(outside), "--json"]) == 1
    assert '"outside": ["speedup"]' in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY.replace("value = 1.1", "value = \"fast\""))
    assert main(["accuracy", "--paper", str(bad)]) == 2
