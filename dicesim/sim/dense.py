"""Time of a dense DiT / MMDiT inference run under the parallel methods the published tables use.

A run (:class:`DenseRun`) is a model preset (:mod:`dicesim.dense_models`), a resolution, frames,
steps, batch, classifier-free guidance, torch.compile on or off, and the degrees of the parallel
methods (:class:`DenseParallel`). Its time is composed per block from the simulator's parts, never
fitted on a published step time:

- compute: the roofline of :mod:`dicesim.sim.costs` (the profile's peak, bandwidth and per-kind
  efficiency): GEMMs with the ``experts`` efficiency (large dense GEMMs), the attention core with
  ``attention``, elementwise passes with ``local_combine`` (memory-bound), one ``local_combine``
  launch gap per kernel;
- communication: each collective's flows run through the simpy flow network on the machine's graph
  with the NCCL model (:func:`~dicesim.sim.microbench.collective_ops.simulate_exchange`), every
  group at once, so groups sharing a PCIe switch or a socket link slow each other.

Parallel methods (docs/step-level.md gives each with its source):

- **Ulysses** (degree u): every block all-to-alls q, k and v (three calls) and the attention
  output (one call) inside groups of u ranks; each rank attends over all tokens with 1/u of the
  heads. Blocking: nothing overlaps it.
- **Ring attention** (degree r): each rank keeps its 1/r of the queries and passes K/V blocks
  around the ring, r-1 passes per block, each overlapped with the attention on the block in hand;
  while a pass is in flight the attention runs ``1 + interference`` slower (the profile's factor;
  0 with interference off).
- **USP** = Ulysses inside, ring across. **CFG parallel** (degree 2): the two guidance branches
  run on the two halves, then one exchange of the prediction per step. **Tensor parallel** (degree
  t, Megatron-style): heads and MLP columns split, one ring all-reduce of the activations after
  attention and after the MLP of every stream.
- ConsisID's identity modules (a preset's ``identity``, :mod:`dicesim.dense_face`): the face
  cross-attention after every other block on each rank's own video tokens (no exchange), the facial
  extractor once per forward on every rank, each timed like a block (its kernels' roofline, launch
  gaps, the longer of device and host).
- Not modelled: PipeFusion (patch pipelining with stale activations), offloading, FP8 weights,
  the VAE and the text encoders (the prediction covers the denoising loop only).
"""

from __future__ import annotations

from dataclasses import dataclass
import networkx as nx

from dicesim.dense_face import extractor_work, face_cross_work
from dicesim.dense_models import BlockWork, DenseModel, block_work
from dicesim.models import OpCost
from dicesim.sim.costs.attention_kernels import KernelTable, attention_efficiency
from dicesim.sim.costs.profile import HardwareProfile
from dicesim.sim.microbench.collective_ops import simulate_exchange, simulate_op
from dicesim.sim.network.nccl import NcclModel
from dicesim.sim.sp_plumbing import sp_plumbing

#: HunyuanVideo's sequence-parallel forward splits the latent by height, else by width, else refuses:
#: Tencent/HunyuanVideo@fa14b00 hyvideo/inference.py:57-64
HUNYUAN_SPLIT_RULE = "Tencent/HunyuanVideo@fa14b00 hyvideo/inference.py:57-64"
#: sglang's diffusion runtime shards a video latent along its latent frames, padding them to a multiple of the
#: sequence degree (``PipelineConfig.shard_latents_for_sp``, "general logic for video models"): sgl-project/sglang
#: @035bf19 python/sglang/multimodal_gen/configs/pipeline_configs/base.py
FRAMES_SPLIT_RULE = ("sgl-project/sglang@035bf19 python/sglang/multimodal_gen/configs/pipeline_configs/base.py "
                     "shard_latents_for_sp")
#: the ways a framework splits a video latent over a sequence group (DenseRun.latent_split)
LATENT_SPLITS = ("height-width", "frames")
#: Ulysses splits heads over its group: the degree must divide the head count (feifeibear/long-context-attention)
ULYSSES_HEADS_RULE = "Ulysses all-to-all scatters heads: heads % ulysses_degree == 0"


@dataclass(frozen=True)
class DenseParallel:
    """Degrees of the parallel methods (1 = unused); their product is the GPU count."""

    ulysses: int = 1
    ring: int = 1
    cfg: int = 1
    tensor: int = 1
    pipefusion: int = 1
    data: int = 1

    @property
    def world(self) -> int:
        return self.ulysses * self.ring * self.cfg * self.tensor * self.pipefusion * self.data

    @property
    def seq(self) -> int:
        return self.ulysses * self.ring


@dataclass(frozen=True)
class DenseRun:
    """One inference call: what the published figure ran."""

    model: DenseModel
    height_px: int
    width_px: int
    frames: int
    steps: int
    batch: int
    cfg_on: bool
    compiled: bool
    parallel: DenseParallel
    #: the fused attention kernel the framework ran ("fa2", "fa3", "cudnn"; attention_kernels.toml),
    #: None: the profile's one attention efficiency
    attention_kernel: str | None = None
    #: the framework keeps every text token on every rank of the sequence group (only the latent is
    #: split; the text rides along as a replicated joint tensor): which frameworks do is in
    #: ``calibrate/published/step_level.py`` (``text_replicated_for``)
    text_replicated: bool = False
    #: how the framework splits a video latent over a sequence group: "height-width" (HunyuanVideo's own code:
    #: height, else width, else refuse; HUNYUAN_SPLIT_RULE) or "frames" (sglang: along the latent frames,
    #: padded to a multiple of the degree; FRAMES_SPLIT_RULE). Which framework does which is in
    #: ``calibrate/published/step_level.py`` (``latent_split_for``)
    latent_split: str = "height-width"

    def __post_init__(self) -> None:
        if self.latent_split not in LATENT_SPLITS:
            raise ValueError(f"latent_split must be one of {LATENT_SPLITS}, got {self.latent_split!r}")


@dataclass(frozen=True)
class DenseTime:
    """Predicted seconds of a run and where they go (per GPU, whole call)."""

    total_s: float
    compute_s: float
    exposed_comm_s: float
    comm_s: float
    flops: float = 0.0  # GEMM and attention FLOPs one GPU runs over the call (the dense work alone)


def not_modelled(run: DenseRun) -> str | None:
    """Why the simulator cannot predict ``run`` (None: it can)."""
    p = run.parallel
    if p.pipefusion > 1:
        return "PipeFusion (patch pipeline with stale activations) is not modelled"
    if p.data > 1:
        return "data parallelism over prompts is not modelled for dense runs"
    if p.cfg > 2:
        return "CFG parallel degree above 2"
    if run.latent_split == "frames" and p.seq > 1 and run.model.latent_frames(run.frames) % p.seq:
        return (f"{run.model.latent_frames(run.frames)} latent frames padded to a multiple of the sequence degree "
                f"{p.seq} ({FRAMES_SPLIT_RULE}): the padding is not modelled")
    return None


def refusal(run: DenseRun) -> str | None:
    """Why the framework refuses ``run``'s layout (None: it runs), with the rule's source."""
    m, p = run.model, run.parallel
    if p.cfg == 2 and not run.cfg_on:
        return "CFG parallel needs classifier-free guidance (this model runs one forward per step)"
    for heads in sorted({m.heads, m.self_heads}):  # SANA: 70 linear self-attention heads, 20 cross-attention
        if heads % (p.ulysses * p.tensor):
            return (f"{heads} heads do not split over Ulysses x tensor degree {p.ulysses * p.tensor} "
                    f"({ULYSSES_HEADS_RULE})")
    if m.name == "hunyuanvideo-t2v" and p.seq > 1 and run.latent_split == "height-width":
        h, w = m.latent_hw(run.height_px, run.width_px)
        if (h // 2) % p.seq and (w // 2) % p.seq:
            return (f"Cannot split video sequence into ulysses_degree x ring_degree ({p.seq}): latent "
                    f"{h // 2} x {w // 2} patches, neither divisible ({HUNYUAN_SPLIT_RULE})")
    return None


def _op_s(profile: HardwareProfile, kind: str, c: OpCost, compute_eff: float | None = None) -> float:
    eff = profile.ops[kind]
    ce = eff.compute_eff if compute_eff is None else compute_eff
    return max(c.flops / (profile.peak_flops * ce), c.nbytes / (profile.mem_bw_Bps * eff.mem_eff))


def attention_compute_eff(run: DenseRun, profile: HardwareProfile, kernels: KernelTable | None,
                          kv_tokens: float) -> float | None:
    """The attention core's fraction of peak from the kernel's published curve at this head dim and
    key length (None: the profile's ``attention`` efficiency applies: no kernel named, a profile
    without ``arch``/``sms``, no curve for this GPU's architecture, or linear attention, which is
    not a fused softmax kernel)."""
    if kernels is None or run.attention_kernel is None or run.model.architecture == "dit-crossattn-linear":
        return None
    return attention_efficiency(kernels, run.attention_kernel, profile.arch, profile.sms, run.model.head_dim,
                                kv_tokens, peak_tflops=profile.peak_flops / 1e12, gemm_eff=profile.ops["experts"].compute_eff,
                                gpu=profile.gpu)


def _groups(p: DenseParallel) -> tuple[list[list[int]], ...]:
    """Rank groups (xDiT's order: Ulysses innermost, then ring, then CFG): Ulysses, ring, CFG, sequence."""
    u, r, c = p.ulysses, p.ring, p.cfg
    rank = lambda ui, ri, ci: ci * u * r + ri * u + ui  # noqa: E731
    uly = [[rank(i, j, k) for i in range(u)] for j in range(r) for k in range(c)]
    ring = [[rank(i, j, k) for j in range(r)] for i in range(u) for k in range(c)]
    cfg = [[rank(i, j, k) for k in range(c)] for i in range(u) for j in range(r)]
    seq = [[rank(i, j, k) for j in range(r) for i in range(u)] for k in range(c)]
    return uly, ring, cfg, seq


def predict_dense(run: DenseRun, profile: HardwareProfile, G: nx.DiGraph, nccl: NcclModel, *,
                  interference: bool = True, dtype_nbytes: int = 2, kernels: KernelTable | None = None,
                  host_kernel_s: float = 0.0) -> DenseTime:
    """Seconds of the whole denoising loop of ``run`` on ``G`` (see the module docstring).

    ``host_kernel_s``: host seconds to issue one kernel (Python, dispatcher, launch). The host issues
    a block's kernels while the GPU runs the previous ones, so a block takes the longer of its device
    time and its host time (0: the host never binds)."""
    m, p = run.model, run.parallel
    why = not_modelled(run) or refusal(run)
    if why:
        raise ValueError(why)
    D, w = m.hidden, dtype_nbytes
    # classifier-free guidance without CFG parallel: both branches in one batch of twice the size
    samples = run.batch * (2 if run.cfg_on and p.cfg == 1 else 1)
    img = m.image_tokens(run.height_px, run.width_px, run.frames)
    txt = m.text_tokens
    joint = img + (txt if m.joint_text else 0)
    S, u, r, t = p.seq, p.ulysses, p.ring, p.tensor
    rep = run.text_replicated and S > 1 and m.joint_text
    # tokens per rank: the joint sequence is split, or only the latent when the text is replicated
    n_img, n_txt = samples * img / S, samples * txt / (1 if rep else S)
    n_loc = n_img + (n_txt if m.joint_text else 0)
    # replicated text queries ride into the Ulysses all-to-all with each rank's share: u copies after it
    attn_q = samples * ((img / r + u * txt) if rep else (joint if m.joint_text else img) / r)
    attn_kv = joint if m.joint_text else img
    i_f = profile.interference if interference else 0.0
    uly, ring, cfg, seq = _groups(p)
    launch_s = profile.ops["local_combine"].launch_s
    memo: dict[tuple, float] = {}

    def exchange_s(groups: list[list[int]], nbytes: float, pattern: str) -> float:
        key = (id(groups), nbytes, pattern)  # each block kind asks for the same exchanges again
        if key not in memo:
            memo[key] = simulate_exchange(G, groups, nbytes, nccl, pattern=pattern)
        return memo[key]

    work = {"flops": 0.0}

    def block_s(kind: str) -> tuple[float, float, float]:
        bw: BlockWork = block_work(m, kind, img_tokens=n_img, txt_tokens=n_txt, attn_q=attn_q, attn_kv=attn_kv,
                                   heads_share=1.0 / (u * t), tp=t, compiled=run.compiled, dtype_nbytes=w)
        work[kind] = bw.linear.flops + bw.attention.flops
        # each GEMM is its own kernel: the roofline per kernel (a narrow text-stream GEMM can be weight-bound
        # while the image stream's are compute-bound; one sum of both would hide that)
        other = sum(_op_s(profile, "experts", op) for op in bw.linear_ops)
        other += _op_s(profile, "local_combine", bw.elementwise)
        # the sequence-parallel attention's layout copies and ring merges (dicesim/sim/sp_plumbing.py)
        pl = sp_plumbing(ulysses=u, ring=r, local_tokens=n_loc, attn_q=attn_q, local_width=D / t,
                         attn_width=D / (u * t), softmax=m.architecture != "dit-crossattn-linear", compiled=run.compiled,
                         dtype_nbytes=w)
        other += _op_s(profile, "local_combine", pl.elementwise)
        n_kernels = bw.kernels + pl.kernels
        other += n_kernels * launch_s
        # each ring pass attends to one K/V block: the kernel runs at that block's length
        eff = attention_compute_eff(run, profile, kernels, attn_kv / r)
        attn = sum(_op_s(profile, "attention", op, eff) for op in bw.attention_ops)  # each core its own kernel
        comm = exposed = blocking = 0.0  # blocking: exposed time outside the attention (Ulysses, TP)
        if u > 1:  # q, k, v in (three calls) and the output back (one call)
            a2a = exchange_s(uly, n_loc * D * w, "all_to_all")
            comm += 4 * a2a
            exposed += 4 * a2a
            blocking += 4 * a2a
        if r > 1:  # r-1 K/V passes, each under the attention on the block in hand
            kv_pass = exchange_s(ring, 2.0 * n_loc * D * w, "ring_pass")
            blk = attn / r
            step = max(kv_pass, blk + i_f * min(blk, kv_pass))
            comm += (r - 1) * kv_pass
            exposed += (r - 1) * (step - blk)
            attn = blk + (r - 1) * step
        if t > 1:  # one all-reduce after attention and one after the MLP, per stream
            streams = [n_img, n_txt] if kind == "double" else [n_loc]
            for n in streams:
                ar = simulate_op(G, "all_reduce", nccl, gpus=t, nbytes=n * D * w).time_s
                comm += 2 * ar
                exposed += 2 * ar
                blocking += 2 * ar
        host = n_kernels * host_kernel_s
        # ring's exposed passes are inside ``attn``; Ulysses' all-to-alls and TP's all-reduces block the stream
        device = other + attn + blocking
        return max(device, host), comm, exposed

    fwd = comm = exposed = 0.0
    for kind, count in (("double", m.double_blocks), ("single", m.single_blocks)):
        if count:
            b, c, e = block_s(kind)
            fwd, comm, exposed = fwd + count * b, comm + count * c, exposed + count * e
            work["flops"] += count * work[kind]
    if m.identity is not None:  # ConsisID: no communication, all of it compute
        ident_s, ident_flops = identity_s(run, profile, n_img, samples, launch_s, host_kernel_s, w)
        fwd, work["flops"] = fwd + ident_s, work["flops"] + ident_flops
    compute = fwd - exposed
    out_nbytes = samples * img * m.latent_channels * m.patch[0] * m.patch[1] * m.patch[2] * w
    if S > 1:  # the output gathered over the sequence group once per forward
        g = exchange_s(seq, out_nbytes / S, "all_to_all")
        fwd, comm, exposed = fwd + g, comm + g, exposed + g
    if p.cfg > 1:  # the two branches' predictions exchanged once per step
        g = exchange_s(cfg, out_nbytes / S, "all_to_all")
        fwd, comm, exposed = fwd + g, comm + g, exposed + g
    steps = run.steps
    return DenseTime(total_s=steps * fwd, compute_s=steps * compute, exposed_comm_s=steps * exposed,
                     comm_s=steps * comm, flops=steps * work["flops"])


def identity_s(run: DenseRun, profile: HardwareProfile, video_tokens: float, samples: int, launch_s: float,
               host_kernel_s: float, dtype_nbytes: int) -> tuple[float, float]:
    """(seconds, GEMM FLOPs) per forward of ConsisID's identity modules on one rank: the face
    cross-attentions (each on the rank's ``video_tokens``) and the facial extractor (whole on every
    rank), each the longer of its device time and the host's issue of its kernels."""
    m = run.model
    ident, t = m.identity, run.parallel.tensor
    ops, elem, n_k = face_cross_work(ident.cross, m.hidden, video_tokens=video_tokens, batch=samples, tp=t,
                                     compiled=run.compiled, dtype_nbytes=dtype_nbytes)
    device = sum(_op_s(profile, "experts", op) for op in ops) + _op_s(profile, "local_combine", elem)
    cross_s = max(device + n_k * launch_s, n_k * host_kernel_s)
    x_op, x_k = extractor_work(ident.extractor, dtype_nbytes)
    x_s = max(_op_s(profile, "experts", x_op) + x_k * launch_s, x_k * host_kernel_s)
    n_cross = ident.cross.count(m.double_blocks + m.single_blocks)
    return n_cross * cross_s + x_s, n_cross * sum(op.flops for op in ops) + x_op.flops
