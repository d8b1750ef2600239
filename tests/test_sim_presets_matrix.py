"""`simulate` works for every strategy preset on every topology preset (the issue's acceptance)."""

from __future__ import annotations

import json
import math

import pytest

from dicesim.cli import main
from dicesim.errors import ConfigError
from dicesim.scenario import make_scenario
from dicesim.sim.api import simulate
from dicesim.strategy import STRATEGY_NAMES
from dicesim.topology import TOPOLOGY_NAMES, get_topology, world_size

KEYS = ("step_latency_s", "total_latency_s", "exposed_comm_s", "overlap_frac", "comm_frac", "mean_lag",
        "weighted_lag", "peak_buffer_bytes")


@pytest.mark.parametrize("topology", TOPOLOGY_NAMES)
def test_every_strategy_on_every_topology(topology):
    W = world_size(get_topology(topology))
    sync_latency = None
    for strategy in STRATEGY_NAMES:
        # the small test topologies have no GPU model, so they need an explicit profile
        profile = "h100-sxm" if get_topology(topology).graph["gpu"] == "generic" else None
        if strategy == "ulysses" and 16 % W:  # XL/2's 16 heads split over 1, 2, 4, 8 or 16 GPUs only
            with pytest.raises(ConfigError, match="16 heads do not split over"):
                make_scenario(model="XL/2", topology=topology, world_size=W, batch=1, steps=4, strategy=strategy,
                              profile=profile)
            continue
        if strategy == "usp" and W % 2:  # the preset's Ulysses groups of 2 GPUs (one GPU: no group of 2)
            with pytest.raises(ConfigError, match="do not form groups of ulysses_degree = 2"):
                make_scenario(model="XL/2", topology=topology, world_size=W, batch=1, steps=4, strategy=strategy,
                              profile=profile)
            continue
        sc = make_scenario(model="XL/2", topology=topology, world_size=W, batch=1, steps=4, strategy=strategy,
                           profile=profile)
        s = simulate(sc).summary()
        assert all(math.isfinite(s[k]) for k in KEYS), (strategy, s)
        assert s["step_latency_s"] > 0 and 0 <= s["overlap_frac"] <= 1 and 0 <= s["comm_frac"] <= 1
        if strategy == "sync":
            sync_latency = s["step_latency_s"]
            assert s["mean_lag"] == 0 and s["peak_buffer_bytes"] == 0
        if strategy in ("displaced", "interweaved"):
            assert s["mean_lag"] > 0 and s["peak_buffer_bytes"] > 0
    assert sync_latency is not None


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_cli_json_for_every_strategy(capsys, strategy):
    code = main(["simulate", "--model", "G/2", "--topology", "dgx-h100", "--world-size", "8", "--batch", "2",
                 "--steps", "3", "--strategy", strategy, "--json"])
    doc = json.loads(capsys.readouterr().out)
    schema_keys = {k.replace("_lag", "_lag_steps") for k in KEYS}  # the result schema puts units in the lag names
    assert code == 0 and schema_keys <= set(doc) and doc["strategy"] == strategy
