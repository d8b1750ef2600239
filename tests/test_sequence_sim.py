"""The simulator runs sequence parallelism: K/V all-gathers over the topology, in order on the
communication stream, sync (``sp``) or asynchronous with the previous step's K/V (DistriFusion).

Closed forms on a fully connected graph (every flow crosses one link): the bytes every step moves
(K and V of every layer to every other rank, the scatter, the broadcast, the final token gather),
the collective counts, the K/V buffer bytes; and what the result says about staleness.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from dicesim.plan.sequence.buffers import kv_buffer_nbytes
from dicesim.sim.api import prepare, simulate
from dicesim.sim.costs.profile import get_profile
from dicesim.topology import fully_connected

W, L, T = 4, 4, 3
BW, LAT = 1e8, 1e-6
KW = dict(model="tiny", world_size=W, batch=1, image_size=64, steps=T)  # 16 tokens per image, 4 per rank


def _run(strategy, *, bw=BW, **kw):
    prof = get_profile("h100-sxm").with_updates(host_op_s=0.0, host_collective_s=0.0, interference=0.0)
    return simulate(**{**KW, **kw}, strategy=strategy, profile=prof, graph=fully_connected(W, bw, LAT))


def _sizes(strategy="sp"):
    prep = prepare(**KW, strategy=strategy, profile="h100-sxm", topology="tiny-ring4")
    wl = prep.spec.cost.workload
    return prep.routing.tokens_per_rank, prep.spec.row_nbytes, wl.images


def test_each_rank_works_on_a_slice_of_every_image():
    tpr, row, images = _sizes()
    assert images == 1 * 2 * W  # every rank's batch, CFG halves included
    assert tpr == images * 16 // W and row == 32 * 2


def test_sp_moves_every_layers_k_and_v_to_every_other_rank():
    tpr, row, images = _sizes()
    res = _run("sp")
    per_step = (L * 2 * W * (W - 1) * tpr  # K and V of every layer, one all-gather each
                + (W - 1) * tpr  # rank 0 scatters the other ranks' slices
                + (W - 1) * images  # and broadcasts the conditioning
                + W * (W - 1) * tpr) * row  # every rank's tokens before the final layer
    assert res.links["nbytes"].sum() == pytest.approx(T * per_step)
    assert res.totals["collectives"] == T * (3 + 2 * L)
    assert res.totals["max_lag"] == 0 and res.totals["peak_buffer_bytes"] == 0


def test_distrifusion_sends_the_same_kv_once_more_and_holds_a_full_set():
    tpr, row, images = _sizes("distrifusion")
    res = _run("distrifusion")
    kv_step = L * 2 * W * (W - 1) * tpr * row
    other = ((W - 1) * tpr + (W - 1) * images + W * (W - 1) * tpr) * row
    # step 0 gathers every layer blocking and still sends it flattened (comm_manager.py, measured in the reference)
    assert res.links["nbytes"].sum() == pytest.approx((T + 1) * kv_step + T * other)
    assert res.totals["collectives"] == L + T * (3 + math.ceil(L / 4))
    lags = res.lag_table.kept
    assert (lags[0] == 0).all() and (lags[1:] == 1).all() and res.totals["mean_lag"] == pytest.approx((T - 1) / T)
    assert res.totals["peak_buffer_bytes"] == L * kv_buffer_nbytes(W, tpr, row) == 2 * L * images * 16 * 32 * 2


def test_asynchronous_gathers_hide_communication():
    sp, df = _run("sp", bw=2e9, steps=6), _run("distrifusion", bw=2e9, steps=6)
    assert df.totals["exposed_comm_s"] < 0.5 * sp.totals["exposed_comm_s"]
    assert df.links["nbytes"].sum() > sp.links["nbytes"].sum()  # more bytes (step 0 sends K/V twice), less waiting


def test_trace_puts_the_gathers_on_the_communication_stream():
    res = simulate(**KW, strategy="distrifusion", topology="tiny-ring4", profile="h100-sxm", record=True)
    ev = res.events
    coll = ev[ev.kind == "collective"]
    assert set(coll.stream) == {"comm"}
    names = coll.groupby("name").size().to_dict()
    assert names == {"kv_gather": W * (L + T), "scatter": W * T, "broadcast": W * T, "token_gather": W * T}
    kv = coll[coll.name == "kv_gather"]
    tpr, row, _ = _sizes("distrifusion")
    assert set(kv.rows) == {2 * tpr * (W - 1), 2 * tpr * 4 * (W - 1)}  # one layer (step 0) or a group of 4
    waits = ev[(ev.kind == "wait") & (ev.name == "wait_kv_gather")]
    assert len(waits) and set(waits.stream) == {"compute"}
    assert {"sp_qkv", "sp_attend", "local_moe"} <= set(ev[ev.kind == "compute"].name)


def test_quality_model_does_not_pretend_to_cover_kv_staleness():
    res = simulate(model="XL/2", topology="dgx-h100", world_size=8, batch=1, steps=4, strategy="distrifusion")
    from dicesim.compare import predicted_quality
    from dicesim.scenario import make_scenario

    q = predicted_quality(make_scenario(model="XL/2", strategy="distrifusion", steps=4))
    assert np.isnan(q["pred_fd_change"]) and np.isnan(q["pred_deviation"])
    assert "does not cover the K/V" in q["quality_basis"]
    assert res.totals["max_lag"] == 1
