"""ConsisID's preset: the CogVideoX-5B transformer plus the identity modules (dicesim/dense_face.py).

The counts are hand-computed from diffusers' ConsisIDTransformer3DModel at its class defaults
(huggingface/diffusers@23b467c src/diffusers/models/transformers/consisid_transformer_3d.py).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from dicesim.calibrate.published.step_level import (EAGER_HOST_PER_KERNEL_S, dense_run, load_step_figures,
                                                    text_replicated_for)
from dicesim.dense_face import (FaceCrossAttention, FacialExtractor, extractor_flops, extractor_params, face_cross_work,
                                face_params)
from dicesim.dense_models import get_dense_model
from dicesim.sim.costs.attention_kernels import builtin_kernel_table
from dicesim.sim.costs.profile import get_profile
from dicesim.sim.dense import DenseParallel, DenseRun, identity_s, predict_dense
from dicesim.sim.dense_vae import vae_decode_s
from dicesim.sim.network.nccl import builtin_nccl_model
from dicesim.topology.machines import get_machine

D = 3072
#: one PerceiverCrossAttention per video token: to_q 3072 -> 2048 and to_out 2048 -> 3072, and the two
#: matmuls against 32 identity tokens over 16 heads of 128
CROSS_PER_TOKEN = 2 * D * 2048 + 2 * 2048 * D + 2 * (2 * 16 * 32 * 128)
#: to_kv on the 32 identity tokens of batch 1: 2048 -> 4096
CROSS_KV = 2 * 32 * 2048 * 4096
#: the local facial extractor once: 10 layers (37 latents, 582 context tokens + the 37 latents as keys),
#: five mappings over 577 ViT tokens, the identity mapping, proj_out
EXTRACTOR = (10 * (2 * 37 * 1024 * 1024 + 2 * 619 * 1024 * 2048 + 4 * 37 * 619 * 1024 + 2 * 37 * 1024 * 1024
                   + 2 * 2 * 37 * 1024 * 4096)
             + 5 * 3 * 2 * 577 * 1024 * 1024 + 2 * (1280 * 1024 + 1024 * 1024 + 1024 * 5120) + 2 * 32 * 1024 * 2048)



def _consisid_figures() -> list[dict]:
    figs, _ = load_step_figures()
    return [f for f in figs if f.get("source") == "xdit-consisid"]


def test_preset_is_cogvideox_plus_the_identity_modules():
    cog, con = get_dense_model("cogvideox-5b"), get_dense_model("consisid")
    assert cog.identity is None and con.identity is not None
    assert replace(con, name=cog.name, identity=None, params_B=cog.params_B) == cog
    x = con.identity
    c = x.cross
    assert (c.interval, c.heads, c.head_dim, c.id_tokens, c.id_dim) == (2, 16, 128, 32, 2048)
    assert x.cross.count(42) == 21  # blocks 0, 2, ..., 40
    # parameters: per cross-attention two LayerNorms (2048, 3072, weight and bias) and three bias-free linears
    assert face_params(x.cross, D, 42) == 21 * (2 * 2048 + 2 * D + D * 2048 + 2048 * 4096 + 2048 * D) == 440_616_960
    assert extractor_params(x.extractor) == 151_398_400
    assert con.params_B == pytest.approx(5.0 + (440_616_960 + 151_398_400) / 1e9)


def test_face_cross_attention_work_closed_form():
    face, n = FaceCrossAttention(), 35100.0
    ops, elem, kernels = face_cross_work(face, D, video_tokens=n, batch=2, tp=1, compiled=False)
    assert sum(op.flops for op in ops) == pytest.approx(n * CROSS_PER_TOKEN + CROSS_KV, rel=1e-12)
    # elementwise, elements per video token: 7 D (LayerNorm, scale, residual), 6 x 2048 (query scale, head copy,
    # batch-2 query copy), 10 x 16 x 32 (fp32 cast, softmax, cast back), bf16
    assert elem.nbytes == pytest.approx(2 * n * (7 * D + 6 * 2048 + 10 * 512), rel=1e-12)
    assert kernels == 18
    _, elem1, k1 = face_cross_work(face, D, video_tokens=n, batch=1, tp=1, compiled=False)
    assert k1 == 15 and elem1.nbytes == pytest.approx(2 * n * (7 * D + 4 * 2048 + 10 * 512), rel=1e-12)
    half, _, _ = face_cross_work(face, D, video_tokens=n, batch=2, tp=2, compiled=False)
    assert sum(op.flops for op in half) == pytest.approx((n * CROSS_PER_TOKEN + CROSS_KV) / 2, rel=1e-12)
    assert extractor_flops(FacialExtractor()) == EXTRACTOR == 52_960_583_680


def test_consisid_adds_its_flops_per_forward_and_nothing_else():
    prof, G, nccl = get_profile("h100-sxm"), get_machine("dgx-h100"), builtin_nccl_model()
    cog = DenseRun(model=get_dense_model("cogvideox-5b"), height_px=480, width_px=720, frames=49, steps=50, batch=1,
                   cfg_on=True, compiled=False, parallel=DenseParallel())
    con = replace(cog, model=get_dense_model("consisid"))
    a, b = predict_dense(cog, prof, G, nccl), predict_dense(con, prof, G, nccl)
    tokens = 2 * 13 * 30 * 45  # CFG in one batch: two samples of 13 x 30 x 45 video tokens
    added = 21 * (tokens * CROSS_PER_TOKEN + CROSS_KV) + EXTRACTOR
    assert b.flops - a.flops == pytest.approx(50 * added, rel=1e-9)
    assert b.total_s > a.total_s and b.comm_s == a.comm_s and b.exposed_comm_s == a.exposed_comm_s
    # sequence parallelism: each rank runs the cross-attention on its shard; the extractor whole
    six = replace(con, parallel=DenseParallel(ulysses=2, ring=3))
    six_base = replace(cog, parallel=DenseParallel(ulysses=2, ring=3))
    d6 = predict_dense(six, prof, G, nccl).flops - predict_dense(six_base, prof, G, nccl).flops
    assert d6 == pytest.approx(50 * (21 * (tokens / 6 * CROSS_PER_TOKEN + CROSS_KV) + EXTRACTOR), rel=1e-9)


def test_consisid_is_cogvideox_plus_exactly_its_identity_modules():
    """Each ConsisID figure predicted on the consisid preset takes the cogvideox-5b prediction plus the identity
    modules' time per forward x steps, nothing else: the base preset is untouched by them."""
    prof, G, nccl = get_profile("h100-sxm"), get_machine("dgx-h100"), builtin_nccl_model()
    kernels = builtin_kernel_table()
    figs = _consisid_figures()
    assert len(figs) == 12
    for f in figs:
        run, base = dense_run(f), dense_run({**f, "model": "cogvideox-5b"})
        t = predict_dense(run, prof, G, nccl, interference=True, kernels=kernels, host_kernel_s=EAGER_HOST_PER_KERNEL_S)
        b = predict_dense(base, prof, G, nccl, interference=True, kernels=kernels, host_kernel_s=EAGER_HOST_PER_KERNEL_S)
        p = run.parallel
        samples = run.batch * (2 if run.cfg_on and p.cfg == 1 else 1)
        n_img = samples * run.model.image_tokens(run.height_px, run.width_px, run.frames) / p.seq
        ident_s, ident_flops = identity_s(run, prof, n_img, samples, prof.ops["local_combine"].launch_s,
                                          EAGER_HOST_PER_KERNEL_S, 2)
        assert ident_s > 0
        assert t.total_s - b.total_s == pytest.approx(run.steps * ident_s, rel=1e-9)
        assert t.flops - b.flops == pytest.approx(run.steps * ident_flops, rel=1e-9)
        assert t.comm_s == b.comm_s  # the identity modules exchange nothing


def test_consisid_figures_use_the_preset_and_its_decoder():
    figs = _consisid_figures()
    assert len(figs) == 12 and all(f["model"] == "consisid" for f in figs)
    prof = get_profile("h100-sxm")
    for f in figs:
        run = dense_run(f)
        assert run.model.identity is not None
        base = dense_run({**f, "model": "cogvideox-5b"})
        assert vae_decode_s(run, prof) == vae_decode_s(base, prof) > 0  # the same CogVideoX VAE, untiled
        # xDiT keeps the 226 text tokens whole on 3 and 6 ranks (pipeline_consisid.py:455-459)
        assert run.text_replicated == (run.parallel.seq in (3, 6))
    assert text_replicated_for("xDiT", "consisid", 226, 2) is False
    assert text_replicated_for("xDiT", "consisid", 226, 3) is True
