"""Staleness vs output study: exact lags from the plan, zero deviation only for sync."""

from __future__ import annotations

import pytest
import torch

from dicesim.plan import build_plan, lag_table
from dicesim.strategy import make_strategy
from validate.quality.staleness import staleness_markdown, staleness_table
from validate.executor.worker import RunSpec


@pytest.fixture(scope="module")
def table():
    torch.set_num_threads(1)
    base = RunSpec(strategy=make_strategy("sync"), model="tiny", steps=5, batch=1, image_size=32)
    return staleness_table(["displaced", "interweaved", "dice"], base, world_size=2).set_index("strategy")


def test_sync_is_the_reference(table):
    row = table.loc["sync"]
    assert row.mean_lag_steps == 0 and row.sample_rel_l2 == 0 and row.layer_rel_l2 == 0 and row.sample_cosine == 1


@pytest.mark.parametrize("name", ["displaced", "interweaved", "dice"])
def test_lags_are_the_plans_and_staleness_moves_the_output(table, name):
    lags = lag_table(build_plan(make_strategy(name), 4, 5))
    assert table.loc[name].mean_lag_steps == pytest.approx(float(((lags.kept + lags.dropped) / 2).mean()))
    assert table.loc[name].sample_rel_l2 > 1e-4 and table.loc[name].layer_rel_l2 > 1e-4


def test_half_the_lag_gives_less_layer_error(table):
    # interweaved's outputs are one step old, displaced's two: on the same run the stale
    # outputs must be closer to the fresh ones
    assert table.loc["interweaved"].layer_rel_l2 < table.loc["displaced"].layer_rel_l2


def test_markdown_has_one_row_per_strategy(table):
    text = staleness_markdown(table.reset_index(), "cmd")
    assert text.count("\n| ") == 1 + len(table)  # header + rows
