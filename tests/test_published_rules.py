"""The fitted/held-out rules of the published collective set, checked against the set's own metadata."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicesim.calibrate.published.crossval import SPLITS
from dicesim.calibrate.published.rules import role_problems, split_figures
from dicesim.calibrate.published.schema import DEFAULT_FIT_ON
from dicesim.calibrate.published.set import load_published
from dicesim.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
FIGS = load_published([ROOT / "traces" / "published"])
BY_ID = {f.id: f for f in FIGS}


def test_the_files_roles_are_what_the_rules_give():
    assert role_problems(FIGS) == []


@pytest.mark.parametrize("fit_on", [s[1] for s in SPLITS], ids=[s[0] for s in SPLITS])
def test_no_held_out_figure_is_a_fitted_run_or_its_neighbour(fit_on):
    split = split_figures(FIGS, fit_on)
    fit_groups = {f.group for f in split.fit}
    fit_cells = {(f.table, f.row) for f in split.fit if f.table}
    for f in split.held_out:
        assert f.group not in fit_groups, f.id
        if f.table:
            assert (f.table, f.row - 1) not in fit_cells and (f.table, f.row + 1) not in fit_cells, f.id
    # and nothing is left out that the rules allow: every excluded figure has one of the reasons
    for fid, why in split.excluded.items():
        f = BY_ID[fid]
        neighbour = f.table and ((f.table, f.row - 1) in fit_cells or (f.table, f.row + 1) in fit_cells)
        assert f.group in fit_groups or neighbour or f.dup_of, (fid, why)


@pytest.mark.parametrize("fit_on", [s[1] for s in SPLITS], ids=[s[0] for s in SPLITS])
def test_statements_and_second_readings_never_count(fit_on):
    split = split_figures(FIGS, fit_on)
    statements = {f.id for f in FIGS if f.evidence == "statement"}
    assert statements == {f.id for f in split.statements}
    assert not statements & {f.id for f in (*split.fit, *split.held_out)}
    dups = {f.id for f in FIGS if f.dup_of}
    assert dups and not dups & {f.id for f in (*split.fit, *split.held_out)}


def test_a_statement_repeated_elsewhere_is_one_figure():
    # the NDR per-NIC claim (nccl-tests#267, repeated in #290) and the H100 370 GB/s rule of thumb
    statements = [f for f in FIGS if f.evidence == "statement"]
    assert {f.id for f in statements} == {"ndr-per-nic-alltoall", "h100x8-nvlink-nonallreduce-busbw"}
    assert len({f.group for f in statements}) == len(statements)
    assert not any("370" in f.quote for f in FIGS if f.evidence == "measurement" and f.metric == "busbw"
                   and f.source.url.endswith("nccl-tests/issues/212"))


def test_selecting_a_second_reading_does_not_fit_it():
    split = split_figures(FIGS, 'id in ("h100x2-nvlink-ring-allreduce", "a100x8-nvlink-allreduce-10g")')
    assert [f.id for f in split.fit] == ["a100x8-nvlink-allreduce-10g"]
    assert "counts once" in split.excluded["h100x2-nvlink-ring-allreduce"]


def test_neighbours_are_rows_one_apart_in_the_same_table():
    # fitting the DeepEP README's EP32 row excludes EP16 and EP64 (rows 1 and 3), not the EP8 intranode row 0
    split = split_figures(FIGS, 'id == "h800x32-deepep-dispatch"')
    for fid in ("h800x16-deepep-dispatch", "h800x64-deepep-dispatch", "h800x32-deepep-combine"):
        assert fid in split.excluded, fid
    assert BY_ID["h800x8-deepep-dispatch"] in split.held_out
    assert "neighbouring" in split.excluded["h800x64-deepep-dispatch"]
    assert "same run" in split.excluded["h800x32-deepep-combine"]


def test_a_dangling_dup_of_is_one_line(tmp_path):
    bad = [f.model_copy(update={"dup_of": "no-such-figure"}) if f.dup_of else f for f in FIGS]
    with pytest.raises(ConfigError, match="dup_of: names no figure of the set: h100x2-nvlink-ring-allreduce"):
        split_figures(bad, DEFAULT_FIT_ON)
