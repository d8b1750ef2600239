"""The published validation set: the committed files load, bad entries are one line, the command works."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

import pytest
import tomli_w

from dicesim.calibrate.published.rules import split_figures
from dicesim.calibrate.published.schema import DEFAULT_FIT_ON
from dicesim.calibrate.published.set import load_published, parse_file
from dicesim.cli import main
from dicesim.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT / "traces" / "published"


def _entry() -> dict:
    doc = tomllib.loads((PUBLISHED / "nvswitch.toml").read_text())
    return copy.deepcopy(next(f for f in doc["figure"] if f["id"] == "h100x4-nvlink-alltoall-500m"))


def _write(tmp_path: Path, figures: list[dict], schema: str = "dicesim-published/2", name: str = "x.toml") -> Path:
    p = tmp_path / name
    p.write_text(tomli_w.dumps({"schema": schema, "figure": figures}))
    return p


def test_committed_set_covers_the_issue():
    figs = load_published([PUBLISHED])
    assert len(figs) >= 15
    assert {f.family for f in figs} >= {"consumer-pcie", "nvswitch", "infiniband", "roce"}
    split = split_figures(figs, DEFAULT_FIT_ON)
    assert split.fit and split.held_out
    # every figure is quoted and dated; consumer PCIe without P2P has both collectives
    assert all(f.quote and f.source.date for f in figs)
    shm = {(f.operation, f.metric) for f in figs if f.family == "consumer-pcie" and "no peer-to-peer" in f.interconnect}
    assert {("all_reduce", "busbw"), ("all_to_all", "busbw")} <= shm
    assert any(f.operation.startswith("deepep") and f.nodes > 1 for f in figs)


def _set(d: dict, path: str, value) -> dict:
    keys = path.split(".")
    tgt = d
    for k in keys[:-1]:
        tgt = tgt[k]
    if value is None:
        del tgt[keys[-1]]
    else:
        tgt[keys[-1]] = value
    return d


BAD = {
    "unknown_key": ("colour", "blue", "colour: unknown key"),
    "missing_quote": ("quote", None, "quote: is required"),
    "bad_operation": ("operation", "all_gather", "operation"),
    "metric_for_op": ("metric", "deepep_rdma", "does not apply to 'all_to_all'"),
    "unit_for_metric": ("unit", "us", "unit of 'busbw' must be 'GB/s'"),
    "unknown_topology": ("topology", "dgx-b300", "unknown machine 'dgx-b300'"),
    "too_many_gpus": ("gpus", 16, "16 GPUs but topology 'dgx-h100' has 8"),
    "negative_value": ("value", -1.0, "value"),
    "bad_date": ("source.date", "May 2026", "source.date"),
    "no_size": ("nbytes", 0, "nbytes must be > 0"),
    "deepep_table_on_nccl_op": ("deepep", {"tokens": 1, "hidden": 1, "topk": 1, "experts": 8}, "only applies to deepep"),
    "bad_role": ("role", "train", "role"),
    "statement_as_check": ("evidence", "statement", "a statement has role"),
    "exclude_without_reason": ("role", "exclude", "exclude_reason is required"),
    "table_without_row": ("table", "nccl-2169:t", "table and row go together"),
    "group_without_source": ("group", "nocolon", "group"),
    "constrains_on_check": ("role", "check", "constrains only applies"),
    "dup_of_itself": ("dup_of", "h100x4-nvlink-alltoall-500m", "dup_of names another figure"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_entry_is_one_line_naming_file_figure_and_field(tmp_path, case):
    path, value, expect = BAD[case]
    p = _write(tmp_path, [_set(_entry(), path, value)])
    with pytest.raises(ConfigError) as exc:
        parse_file(p)
    msg = exc.value.one_line()
    assert expect in msg and str(p) in msg and "h100x4-nvlink-alltoall-500m" in msg
    assert "\n" not in str(exc.value)


def test_file_level_errors(tmp_path):
    with pytest.raises(ConfigError, match="schema: must be one of 'dicesim-published/1', 'dicesim-published/2'"):
        parse_file(_write(tmp_path, [_entry()], schema="published/0"))
    with pytest.raises(ConfigError, match=r"figure: needs at least one \[\[figure\]\]"):
        parse_file(_write(tmp_path, []))
    a, b = _write(tmp_path, [_entry()], name="a.toml"), _write(tmp_path, [_entry()], name="b.toml")
    with pytest.raises(ConfigError, match="duplicate id"):
        load_published([a, b])


def test_schema_1_files_are_still_read(tmp_path):
    """A /1 figure (no split metadata) reads as a measurement of its own run; its source URL is the
    independence unit, so two figures of one page never count as two sources."""
    old = {k: v for k, v in _entry().items() if k in ("id", "role", "family", "gpu", "gpus", "nodes", "interconnect",
                                                      "topology", "operation", "nbytes", "metric", "value", "unit",
                                                      "quote", "source")}
    twin = {**old, "id": "twin", "role": "check"}
    figs = parse_file(_write(tmp_path, [old, twin], schema="dicesim-published/1"))
    assert [f.evidence for f in figs] == ["measurement", "measurement"]
    assert figs[0].group != figs[1].group and figs[0].source_unit == figs[1].source_unit == "github.com/NVIDIA/nccl/issues/2169"
    with pytest.raises(ConfigError, match="evidence: unknown key in schema dicesim-published/1"):
        parse_file(_write(tmp_path, [{**old, "evidence": "measurement"}], schema="dicesim-published/1"))


def test_every_figure_has_a_source_a_reader_can_open():
    """An http(s) URL (GitHub ones pinned to a commit or an issue/PR number), a locator inside it and a date."""
    for f in load_published([PUBLISHED]):
        assert f.source.opens, f"{f.id}: {f.source.url}"
        u = f.source.url
        if u.startswith("https://github.com/") and "/blob/" in u:
            assert len(u.split("/blob/")[1].split("/")[0]) == 40, f"{f.id}: blob URL not pinned to a commit"
        assert f.source.locator and f.source.date and f.quote


def test_low_latency_rdma_needs_a_topology_with_nics(tmp_path):
    doc = tomllib.loads((PUBLISHED / "deepep-low-latency.toml").read_text())
    fig = next(f for f in doc["figure"] if f["id"] == "h800x8-deepep-ll-dispatch-feb-rdma")
    assert parse_file(_write(tmp_path, [fig]))[0].deepep.ll_transport == "rdma"
    with pytest.raises(ConfigError, match="no NIC for the low-latency kernels' RDMA path"):
        parse_file(_write(tmp_path, [{**fig, "topology": "hgx-h800"}]))


def _small_set(tmp_path: Path) -> Path:
    """A100 (fit) and the 4-GPU H100 all-to-all (held out): the command in a second."""
    doc = tomllib.loads((PUBLISHED / "nvswitch.toml").read_text())
    keep = [f for f in doc["figure"] if f["id"] in ("a100x8-nvlink-allreduce-10g", "h100x4-nvlink-alltoall-500m")]
    held = next(f for f in keep if f["id"] == "h100x4-nvlink-alltoall-500m")
    held["role"] = "check"
    del held["constrains"]
    d = tmp_path / "set"
    d.mkdir()
    _write(d, keep, name="nv.toml")
    return d


def test_accuracy_published_writes_its_own_section_and_keeps_the_page(tmp_path, capsys):
    md = tmp_path / "accuracy.md"
    md.write_text("# CPU accuracy\n\nkept text\n")
    steps = Path(__file__).parents[1] / "traces" / "published" / "steps"  # the step level reads the given places
    args = ["accuracy", "--published", str(_small_set(tmp_path)), str(steps), "--out", str(md),
            "--write-model", str(tmp_path / "nccl.toml"), "--no-cross-validation"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "h100x4-nvlink-alltoall-500m" in out and "collective level: 1 held-out measurements" in out
    assert "target median <= 10%, max <= 25% on >= 24 held-out measurements: not met" in out  # 1 < 24
    assert "\nstep level: 88 held-out measurements" in out  # the committed step set, predicted (test_step_level.py)
    assert main(args) == 0  # twice: the section is replaced, not appended again
    text = md.read_text()
    assert text.startswith("# CPU accuracy\n\nkept text") and text.count("published:begin") == 1
    assert "## Accuracy against published GPU measurements" in text and "| h100x4-nvlink-alltoall-500m | held-out |" in text
    assert "### Step level" in text and "step level: 88 held-out measurements" in text
    assert "one-GPU baselines (the compute model alone, reported apart): 52 measurements" in text
    fitted = tomllib.loads((tmp_path / "nccl.toml").read_text())
    assert fitted["fitted"]["bw_eff.nvlink"] == "fitted on a100x8-nvlink-allreduce-10g (1 independent sources)"
    assert fitted["bw_eff"]["shm"] == 1.0  # nothing in this split crosses SHM: prior kept, and said so
    assert fitted["fitted"]["bw_eff.shm"].startswith("prior")
    # no DeepEP figure in this split: the kernel rate is no bound at all, not the solver's start value
    assert not fitted.get("kernel_Bps") and fitted["fitted"]["kernel_Bps.deepep_nvlink"].startswith("prior")


@pytest.mark.parametrize("args, expect", [
    (["--fit-on", "colour == 1"], "fit-on: 'colour == 1': unknown name 'colour'"),
    (["--fit-on", 'role == "nope"'], "selects no published measurement"),
    (["--fit-on", "gpus > 0"], "nothing is left to predict"),
])
def test_accuracy_published_bad_fit_on_is_one_line(tmp_path, capsys, args, expect):
    code = main(["accuracy", "--published", str(_small_set(tmp_path)), *args])
    err = capsys.readouterr().err
    assert code == 2 and expect in err and err.count("\n") == 1 and "Traceback" not in err


def test_accuracy_without_traces_or_published_is_one_line(capsys):
    assert main(["accuracy"]) == 2
    assert "give trace directories or files, or --published" in capsys.readouterr().err


def test_cpu_page_rewrite_keeps_the_published_section(tmp_path):
    from dicesim.calibrate.published.doc import BEGIN, END, carry_section, write_published_section

    md = tmp_path / "accuracy.md"
    write_published_section(f"{BEGIN}\nfigures\n{END}\n", md)
    kept = carry_section(md.read_text())
    assert kept.startswith(BEGIN) and kept.rstrip().endswith(END)
    md.write_text("# new CPU page\n\n" + kept)  # what write_accuracy does with a fresh CPU report
    write_published_section(f"{BEGIN}\nnew figures\n{END}\n", md)
    text = md.read_text()
    assert text.startswith("# new CPU page") and "new figures" in text and text.count(BEGIN) == 1
