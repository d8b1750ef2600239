"""The sequence-parallel attention's plumbing (dicesim/sim/sp_plumbing.py): closed forms of its counts,
and that predict_dense charges it to the block exactly once (device passes, launch gaps, host kernels)."""

from __future__ import annotations

import pytest

from dicesim.dense_models import block_kernels, get_dense_model
from dicesim.sim.costs.profile import get_profile
from dicesim.sim.dense import DenseParallel, DenseRun, predict_dense
from dicesim.sim.microbench.collective_ops import simulate_exchange
from dicesim.sim.network.nccl import builtin_nccl_model
from dicesim.sim.sp_plumbing import sp_plumbing
from dicesim.topology.machines import get_machine


def _pl(**kw):
    base = dict(ulysses=1, ring=1, local_tokens=1000.0, attn_q=2000.0, local_width=3072.0, attn_width=1536.0,
                softmax=True, compiled=False)
    return sp_plumbing(**{**base, **kw})


def test_one_gpu_has_no_plumbing():
    pl = _pl()
    assert pl.kernels == 0 and pl.elementwise.nbytes == 0 and pl.elementwise.flops == 0


def test_ulysses_copies_each_of_four_tensors_twice():
    pl = _pl(ulysses=2)
    # 4 calls x (copy in + copy out, each read + write) over 1000 x 3072 bf16 elements
    assert pl.elementwise.nbytes == 2 * 4 * 4 * 1000 * 3072
    assert pl.kernels == 4 * 3
    assert _pl(ulysses=8).elementwise.nbytes == pl.elementwise.nbytes  # the rank's tensor, not the degree


def test_ring_merges_grow_with_passes_and_fuse_when_compiled():
    out = 2000 * 1536
    for r in (2, 3, 4):
        eager, comp = _pl(ring=r), _pl(ring=r, compiled=True)
        assert eager.elementwise.nbytes == 2 * (6 + 19 * (r - 1)) * out
        assert comp.elementwise.nbytes == 2 * (6 + 5 * (r - 1)) * out
        assert eager.kernels == 2 + 11 * (r - 1) and comp.kernels == 2 + 4 * (r - 1)
    assert _pl(ring=4, softmax=False).kernels == 0  # linear attention: no softmax merge


def test_usp_adds_both_parts():
    both, u, r = _pl(ulysses=2, ring=2), _pl(ulysses=2), _pl(ring=2)
    assert both.kernels == u.kernels + r.kernels
    assert both.elementwise.nbytes == u.elementwise.nbytes + r.elementwise.nbytes


def test_predict_dense_charges_the_plumbing_on_device_and_host():
    G, nccl, p = get_machine("dgx-h100"), builtin_nccl_model(), get_profile("h100-sxm")
    m = get_dense_model("flux.1-dev")
    run = DenseRun(model=m, height_px=1024, width_px=1024, frames=1, steps=1, batch=1, cfg_on=False,
                   compiled=False, parallel=DenseParallel(ulysses=2))
    pl = sp_plumbing(ulysses=2, ring=1, local_tokens=(4096 + 512) / 2, attn_q=4096 + 512, local_width=m.hidden,
                     attn_width=m.hidden / 2, softmax=True, compiled=False)
    # a host slow enough to bind (1 s a kernel): each block takes its kernels, the plumbing's included,
    # and the output gather of the sequence group comes on top
    host = predict_dense(run, p, G, nccl, host_kernel_s=1.0)
    gather = simulate_exchange(G, [[0, 1]], 4096 * 64 * 2 / 2, nccl, pattern="all_to_all")
    kernels = (m.double_blocks * (block_kernels(m, 2, False) + pl.kernels)
               + m.single_blocks * (block_kernels(m, 1, False) + pl.kernels))
    assert host.total_s == pytest.approx(kernels + gather, rel=1e-12)
    # on the device the plumbing costs more than nothing and less than the block's own elementwise work
    t = predict_dense(run, p, G, nccl)
    op = p.ops["local_combine"]
    per_block = pl.elementwise.nbytes / (p.mem_bw_Bps * op.mem_eff) + pl.kernels * op.launch_s
    assert t.compute_s > (m.double_blocks + m.single_blocks) * per_block > 0
