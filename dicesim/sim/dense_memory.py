"""Memory per GPU of a dense DiT / MMDiT inference call (:class:`~dicesim.sim.dense.DenseRun`).

The dense counterpart of ``dicesim/plan/footprint.py`` + ``memory.py`` (docs/memory.md), by holder,
in bytes per GPU (docs/step-level.md, "Memory and out-of-memory runs", gives every count's source):

- ``dit``: the transformer's parameters, counted from the cited shapes (:func:`dit_params`) times
  the pipeline's dtype bytes; split over the tensor-parallel degree (the GEMM weights only),
  replicated under Ulysses, ring and CFG parallelism;
- ``text_encoders`` and ``vae``: the weights of the encoders and of the VAE the pipeline keeps on
  the GPU (:mod:`dicesim.sim.dense_pipelines` names them per model, with what stays resident);
- ``activations``: the peak of one block's forward at the run's tokens per GPU
  (:func:`block_peak_elements`; flash attention keeps no N x N matrix), with the Ulysses and ring
  buffers of its attention phase;
- ``vae_decode``: the decode's peak after sampling (tiled as the pipeline states);
- ``runtime`` and ``nccl``: the allowance of the expert-parallel model (footprint.RUNTIME: CUDA
  context; NCCL buffers per all-to-all peer or per ring communicator), and ``slack``: the
  allocator's share of the activations or the decode (footprint.RUNTIME.slack_frac).

``allocated`` is what ``torch.cuda.max_memory_allocated`` counts (tensors only: weights plus the
larger of the sampling and decode peaks); ``total`` adds runtime, NCCL and slack, the figure a
card's capacity is checked against.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from dicesim.dense_models import DenseModel
from dicesim.plan.footprint import RUNTIME, RuntimeAllowance
from dicesim.sim.dense import DenseRun
from dicesim.sim.dense_pipelines import PIPELINES, Pipeline, vae_decode_nbytes

#: sinusoidal features of a timestep / guidance embedding (flux src/flux/modules/layers.py timestep_embedding, 256)
FREQ_DIM = 256
#: CLIP-L pooled vector fed to ``vector_in`` (flux src/flux/util.py vec_in_dim=768)
VEC_DIM = 768
#: width of the text-encoder states fed to ``txt_in``: text_hidden 4096 for every mmdit-double-single
#: preset (traces/published/steps/models.toml; T5-XXL's and LLaMA-3-8B's hidden size)
TEXT_HIDDEN = 4096


def dit_params(m: DenseModel, *, guidance_embed: bool = True) -> tuple[int, str]:
    """Parameters of the transformer and how they were counted.

    ``mmdit-double-single`` (Flux layout, black-forest-labs/flux@802fb47 src/flux/modules/layers.py
    DoubleStreamBlock/SingleStreamBlock/LastLayer, model.py embedders): per stream of a double block
    modulation ``D x 6D``, qkv ``D x 3D``, projection ``D x D``, MLP ``D x rD`` and ``rD x D`` (all
    with biases) and q/k RMSNorm scales; per single block modulation ``D x 3D``, ``linear1``
    ``D x (3 + r)D``, ``linear2`` ``(1 + r)D x D``; embedders ``img_in`` (latent channels x patch),
    ``time_in`` (and ``guidance_in`` for guidance-distilled models) ``256 -> D -> D``, ``vector_in``
    ``768 -> D -> D``, ``txt_in`` ``text_hidden -> D``; final adaLN ``D x 2D`` and linear.
    HunyuanVideo's token refiner (two small blocks on the text) is left out. Other architectures:
    the stated parameter count of models.toml (a statement).
    """
    if m.architecture != "mmdit-double-single":
        return int(m.params_B * 1e9), "stated parameter count (models.toml, a statement)"
    D, r, hd = m.hidden, m.mlp_ratio, m.head_dim
    rD = int(r * D)
    stream = (D * 6 * D + 6 * D) + (D * 3 * D + 3 * D) + (D * D + D) + (D * rD + rD) + (rD * D + D) + 2 * hd
    single = (D * 3 * D + 3 * D) + (D * (3 * D + rD) + 3 * D + rD) + ((D + rD) * D + D) + 2 * hd
    patch_in = m.latent_channels * m.patch[0] * m.patch[1] * m.patch[2]
    mlp_in = lambda n: n * D + D + D * D + D  # noqa: E731  (an embedder MLP n -> D -> D)
    embed = (patch_in * D + D) + mlp_in(FREQ_DIM) + mlp_in(VEC_DIM) + (TEXT_HIDDEN * D + D)
    embed += mlp_in(FREQ_DIM) if guidance_embed else 0
    final = (D * 2 * D + 2 * D) + (D * patch_in + patch_in)
    total = m.double_blocks * 2 * stream + m.single_blocks * single + embed + final
    return int(total), "closed form from the cited shapes (Flux layout)"


def dit_weight_nbytes(m: DenseModel, dtype_nbytes: int, tensor: int = 1, *, guidance_embed: bool = True) -> int:
    """Bytes of the transformer's weights on one GPU: the blocks' split over ``tensor`` (Megatron-style
    column/row splits of every block GEMM), the embedders and final layer replicated."""
    total, _ = dit_params(m, guidance_embed=guidance_embed)
    outside = _outside_blocks(m, guidance_embed)
    return int((outside + (total - outside) / tensor) * dtype_nbytes)


def _outside_blocks(m: DenseModel, guidance_embed: bool) -> int:
    """Parameters outside the blocks (embedders, final layer): replicated under tensor parallelism."""
    if m.architecture != "mmdit-double-single":
        return 0
    return dit_params(replace(m, double_blocks=0, single_blocks=0), guidance_embed=guidance_embed)[0]


def largest_block_params(m: DenseModel, guidance_embed: bool = True) -> int:
    """Parameters of the largest block (what sequential CPU offload moves onto the GPU at a time);
    for other architectures an even share of the stated count over the blocks."""
    if m.architecture != "mmdit-double-single":
        return int(m.params_B * 1e9 / (m.double_blocks + m.single_blocks))
    outside = _outside_blocks(m, guidance_embed)
    one = lambda d, s: dit_params(replace(m, double_blocks=d, single_blocks=s),  # noqa: E731
                                  guidance_embed=guidance_embed)[0] - outside
    return max(one(1, 0) if m.double_blocks else 0, one(0, 1) if m.single_blocks else 0)


#: the single-stream block's forward of each code base, with the lines its inventory is counted from
#: (:func:`block_peak_elements`)
BLOCK_FORWARDS = {
    "flux": "black-forest-labs/flux@802fb47 src/flux/modules/layers.py:227-239 (fused linear1; RoPE inside "
            "attention(), its copies freed on return)",
    "hunyuanvideo": "Tencent/HunyuanVideo@fa14b00 hyvideo/modules/models.py:337-392 (Flux's steps, and RoPE in the "
                    "forward: the normed q and k stay alive through their text slices, the roped image q and k "
                    "and the concatenated q and k are locals too)",
    "open-sora": "hpcaitech/Open-Sora@7ad6a96 opensora/models/mmdit/layers.py SingleStreamBlockProcessor "
                 "(fused_qkv=False: q_proj, k_proj and v_mlp; the raw q and k are freed once normed)",
}
#: names of the tensors alive before attention returns (the attention phase adds its exchange to them)
_BEFORE_ATTENTION = ("input x", "x_mod", "projections", "q, k normed", "q, k roped and joined")


#: Elements alive at the peak of one block's forward (at ``linear2``), in units of N x D (N tokens on
#: the GPU), and whether tensor parallelism splits them: the block's input, the modulated ``x_mod``,
#: the projections (Flux and HunyuanVideo: ``linear1``'s output, of which q, k, v and the MLP input
#: are views, 3 + r; Open-Sora: ``v_mlp``'s output, 1 + r), the normed q and k, HunyuanVideo's roped
#: and concatenated q and k, the attention output, GELU(mlp), the concatenation and ``linear2``'s
#: output; the forward's locals hold them until it returns (:data:`BLOCK_FORWARDS` has the lines).
#: Flash attention (FlashAttention-2, arXiv:2307.08691: tiles in SRAM, O(N) extra memory) keeps no
#: N x N score matrix; both pipelines call it: HunyuanVideo ``flash_attn_varlen_func``
#: (hyvideo/modules/attenion.py:11, 60-64, mode "flash"), Open-Sora ``flash_attn_func`` (v3 where
#: installed, else v2: opensora/models/mmdit/math.py:3-33).
def block_peak_elements(mlp_ratio: float, forward: str = "flux") -> dict[str, tuple[float, bool]]:
    if forward not in BLOCK_FORWARDS:
        raise ValueError(f"forward must be one of {tuple(BLOCK_FORWARDS)}, got {forward!r}")
    r = mlp_ratio
    rows = {"input x": (1, False), "x_mod": (1, False),
            "projections": ((1 if forward == "open-sora" else 3) + r, True), "q, k normed": (2, True)}
    if forward == "hunyuanvideo":
        rows["q, k roped and joined"] = (4, True)
    return rows | {"attention out": (1, True), "gelu(mlp)": (r, True), "concat": (1 + r, True),
                   "linear2 out": (1, False)}


#: the attention phase's own peak, in N x D: what is alive before attention (above), then Ulysses'
#: q, k, v send copies and received (head-split, whole-sequence) tensors and its output exchange
#: (3 + 3 + 2), or ring attention's K/V block in hand and in flight (2 + 2) with its fp32 output
#: accumulator (2), or without an exchange the attention output and its head-merged copy (2)
def attention_phase_elements(mlp_ratio: float, ulysses: int, ring: int, tensor: int, forward: str = "flux") -> float:
    rows = block_peak_elements(mlp_ratio, forward)
    base = sum(n / (tensor if split else 1) for k, (n, split) in rows.items() if k in _BEFORE_ATTENTION)
    uly = (3 + 3 + 2) / tensor if ulysses > 1 else 0.0
    rng = (4 + 2) / tensor if ring > 1 else 0.0
    return base + max(uly, rng, 2 / tensor)


def tokens_per_gpu(run: DenseRun) -> int:
    """Token rows one GPU runs a block on: both CFG branches unless CFG-parallel, text included for
    joint attention, the sequence split over Ulysses x ring."""
    m, p = run.model, run.parallel
    samples = run.batch * (2 if run.cfg_on and p.cfg == 1 else 1)
    seq = m.image_tokens(run.height_px, run.width_px, run.frames) + (m.text_tokens if m.joint_text else 0)
    return -(-samples * seq // p.seq)


def activation_nbytes(run: DenseRun, dtype_nbytes: int, forward: str = "flux") -> int:
    """Peak of one block's forward on one GPU: the larger of the MLP peak and the attention phase."""
    p, r = run.parallel, run.model.mlp_ratio
    mlp = sum(n / (p.tensor if split else 1) for n, split in block_peak_elements(r, forward).values())
    attn = attention_phase_elements(r, p.ulysses, p.ring, p.tensor, forward)
    return int(max(mlp, attn) * tokens_per_gpu(run) * run.model.hidden * dtype_nbytes)


def nccl_nbytes(run: DenseRun, allowance: RuntimeAllowance = RUNTIME) -> int:
    """NCCL's buffers (footprint.RUNTIME's figures): Ulysses all-to-alls per peer, ring passes per
    neighbour (point-to-point: 1 with two ranks, 2 otherwise), one ring communicator each for
    tensor parallelism's all-reduces, CFG's exchange and the output gather."""
    p = run.parallel
    peers = (p.ulysses - 1) + (min(p.ring - 1, 2) if p.ring > 1 else 0)
    comms = (p.tensor > 1) + (p.cfg > 1) + (p.seq > 1)
    return peers * allowance.p2p_per_peer_nbytes + comms * allowance.ring_per_comm_nbytes


@dataclass(frozen=True)
class DenseMemory:
    """Bytes per GPU by holder, the two peaks and the verdict against a capacity."""

    holders: dict[str, int]
    allocated_nbytes: int
    total_nbytes: int
    phase: str  # which phase peaks: "sampling" or "vae decode"
    capacity_nbytes: int | None

    @property
    def fits(self) -> bool | None:
        return None if self.capacity_nbytes is None else self.total_nbytes <= self.capacity_nbytes


#: offload modes: "none" (every weight the pipeline names stays on the GPU), "sequential"
#: (diffusers/accelerate sequential CPU offload, HunyuanVideo's --use-cpu-offload:
#: hyvideo/inference.py:443-444: each submodule's weights are moved in for its forward and out again,
#: so the largest block's weights are resident at a time; the text encoders and the VAE likewise)
OFFLOAD_MODES = ("none", "sequential")


def dense_memory(run: DenseRun, capacity_nbytes: int | None = None, *, pipeline: Pipeline | None = None,
                 offload: str = "none", allowance: RuntimeAllowance = RUNTIME) -> DenseMemory:
    """Per-GPU memory of ``run`` under its pipeline (``PIPELINES[model]`` unless given)."""
    if offload not in OFFLOAD_MODES:
        raise ValueError(f"offload must be one of {OFFLOAD_MODES}, got {offload!r}")
    pl = pipeline or PIPELINES[run.model.name]
    m, w = run.model, pl.dit_dtype_nbytes
    if offload == "sequential":
        h = {"dit": largest_block_params(m, pl.guidance_embed) * pl.dit_weight_nbytes, "text_encoders": 0, "vae": 0}
    else:
        h = {"dit": dit_weight_nbytes(m, pl.dit_weight_nbytes, run.parallel.tensor, guidance_embed=pl.guidance_embed),
             "text_encoders": pl.encoder_nbytes(), "vae": pl.vae_weight_nbytes()}
    act = activation_nbytes(run, w, pl.block_forward)
    dec = vae_decode_nbytes(pl, run.height_px, run.width_px, run.frames, run.batch)
    weights = sum(h.values())
    h |= {"activations": act, "vae_decode": dec, "runtime": allowance.context_nbytes, "nccl": nccl_nbytes(run)}
    phase, peak = ("sampling", act) if act >= dec else ("vae decode", dec)
    h["slack"] = int(allowance.slack_frac * peak)
    allocated = weights + peak
    total = allocated + h["runtime"] + h["nccl"] + h["slack"]
    return DenseMemory(holders=h, allocated_nbytes=allocated, total_nbytes=total, phase=phase,
                       capacity_nbytes=capacity_nbytes)
