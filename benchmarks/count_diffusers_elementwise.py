"""Count the eager kernels and elementwise passes of DiT blocks (diffusers', HunyuanVideo's), op by op, on CPU.

    python3 -m pip install diffusers==0.32.1      # only this script needs it (not a dicesim dependency)
    PYTHONPATH=. python3 benchmarks/count_diffusers_elementwise.py [BLOCK ...]     # BLOCK: a key of BLOCKS

Run each block on the code its published runs used (docs/step-level.md, "Elementwise passes"): CogVideoX, Flux,
SANA (``sana-1600m``; ``sana-1600m-fp16`` adds fp16's clip) and diffusers' HunyuanVideo on diffusers 0.32.1; Mochi
on diffusers main of 2024-11 (``git archive 5c94937 src/diffusers`` of huggingface/diffusers, its ``src`` first on
PYTHONPATH); ``hunyuanvideo-official-*`` with
Tencent/HunyuanVideo's root (fa14b00) on PYTHONPATH (einops is stood in for where it is missing).

The dense step model (``dicesim/dense_models.py``: ``elementwise_split``, ``block_kernels``) charges an eager
block its kernels and its memory passes per token, in units of D bf16 elements read or written (an fp32
element counts 2). This replays one block forward in bf16 under a ``TorchDispatchMode`` and records, per ATen
call: a kernel or a view (:data:`validate.hostcost.VIEW_OPS`), the module it ran in, and the bytes it reads
and writes. Each block runs at several shapes (video tokens, text tokens, heads) and each op's bytes are fitted
exactly: the per-video-token and per-text-token coefficients of the part that grows with the width D (heads x
head dim at a fixed head dim; what grows with the head dim alone, a RoPE table shared by the heads, is left
out, as the Flux count leaves it out).

GPU conventions, as the wave-5 Flux replay (docs/step-level.md, "Where it is weakest", xDiT Flux):

- the attention core (``_scaled_dot_product_*``) is one kernel, its output laid out like the query (torch's
  CUDA flash kernel allocates ``empty_like`` of the query's ``[B, S, H, d]`` view: torch 2.5.1
  ``_meta_registrations.py:5060-5061``); GEMMs (``mm``, ``addmm``, ``bmm``) are one kernel each; both are
  kernels but not elementwise passes (the model times them apart);
- ``native_layer_norm`` reads its input once and writes its output once (its per-row mean and rstd are not
  counted); on a non-contiguous input it first makes it contiguous (``input.expect_contiguous()`` in
  ATen's CUDA and CPU layer norm), a copy kernel that runs inside the op: counted here as one more kernel
  and one read + write (the dispatch mode does not see it);
- an in-place op reads its inputs and writes ``self``; ``copy_`` reads its source and writes ``self``;
  a broadcast operand (stride 0) counts its stored elements once;
- ``convolution`` (SANA's GLUMBConv) runs as cuDNN does it from torch's ``_convolution`` (pytorch/pytorch
  aten/src/ATen/native/Convolution.cpp, ``case ConvBackend::Cudnn``: ``output = at::cudnn_convolution(
  input.contiguous(backend_memory_format), weight, ...); if (bias.defined()) { output.add_(reshape_bias(input.dim(),
  bias)); }``; a channels-last input selects cuDNN for a depthwise conv too: ``use_cudnn_depthwise``, "always use
  cudnn_depthwise for channels_last format"): the conv is one kernel (a 1x1 conv a GEMM, a depthwise one a memory
  pass: input read, output written), its bias a second kernel (output read and written, bias read), and an input
  contiguous in neither format a copy before it (``cudnn_conv_suggest_memory_format``: channels-last when the input
  is); each op's ``layout`` says which memory format its output has;
- ``constant_pad_nd`` (``F.pad``) is ``at::empty``, ``output.fill_(value)`` and ``c_output.copy_(c_input)``
  (pytorch/pytorch@0298aaa aten/src/ATen/native/PadNd.cpp:91-105): two kernels, the fill writing the padded
  output, the copy reading the input and writing its part.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from validate.hostcost import VIEW_OPS

DTYPE = torch.bfloat16
#: GEMMs and the attention core: kernels, but timed apart (not elementwise passes)
GEMM_OPS = frozenset({"mm", "addmm", "bmm", "baddbmm", "matmul"})
ATTENTION_PREFIX = "_scaled_dot_product"
#: ops whose bytes are the main output only (the rest are per-row statistics)
MAIN_OUTPUT_ONLY = frozenset({"native_layer_norm"})


def _stored_bytes(t: torch.Tensor) -> int:
    """Bytes a pass over ``t`` touches: broadcast (stride 0) dimensions count once."""
    n = 1
    for size, stride in zip(t.shape, t.stride()):
        if stride != 0:
            n *= size
    return n * t.element_size()


def _tensors(x) -> list[torch.Tensor]:
    return [a for a in tree_flatten(x)[0] if isinstance(a, torch.Tensor)]


@dataclass
class Op:
    """One ATen call (or the hidden copy inside one)."""

    name: str
    module: str
    kernel: bool
    kind: str  # "elementwise", "gemm", "attention", "view"
    read_bytes: int
    write_bytes: int
    out_shape: tuple[int, ...]  # the shape of the op's largest tensor
    out_dtype: str
    layout: str = ""  # a 4D output's memory format: "channels_last", "contiguous" or "strided"


def _layout(t: torch.Tensor) -> str:
    if t.dim() != 4:
        return ""
    if t.is_contiguous():
        return "contiguous"
    return "channels_last" if t.is_contiguous(memory_format=torch.channels_last) else "strided"


@dataclass
class Recorder(TorchDispatchMode):
    """Records every ATen call of a forward (see the module docstring for what each counts)."""

    modules: list[str] = field(default_factory=lambda: ["block"])
    ops: list[Op] = field(default_factory=list)

    def __post_init__(self):
        super().__init__()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        out = func(*args, **kwargs)
        module = self.modules[-1]
        if name.startswith(ATTENTION_PREFIX):
            q = args[0]
            main = out[0] if isinstance(out, tuple) else out
            laid = torch.empty_like(q)  # the CUDA flash kernel's output follows the query's layout
            laid.copy_(main)
            out = (laid, *out[1:]) if isinstance(out, tuple) else laid
            self.ops.append(Op(name, module, True, "attention", 0, 0, tuple(main.shape), str(main.dtype)))
            return out
        if name in VIEW_OPS:
            self.ops.append(Op(name, module, False, "view", 0, 0, (), ""))
            return out
        if name == "convolution":
            return self._convolution(args, out, module)
        if name == "constant_pad_nd":
            b_in, b_out = _stored_bytes(args[0]), _stored_bytes(out)
            self.ops.append(Op("fill_(in constant_pad_nd)", module, True, "elementwise", 0, b_out,
                               tuple(out.shape), str(out.dtype)))
            self.ops.append(Op("copy_(in constant_pad_nd)", module, True, "elementwise", b_in, b_in,
                               tuple(args[0].shape), str(out.dtype)))
            return out
        ins = _tensors((args, kwargs))
        outs = _tensors(out)
        if name in MAIN_OUTPUT_ONLY:
            outs = outs[:1]
            if not args[0].is_contiguous():
                b = _stored_bytes(args[0])
                self.ops.append(Op("contiguous(in native_layer_norm)", module, True, "elementwise", b, b,
                                   tuple(args[0].shape), str(args[0].dtype)))
        if name.endswith("_") and ins:  # in place: the output is self
            outs = [ins[0]]
            if name == "copy_":
                ins = ins[1:]
        kind = "gemm" if name in GEMM_OPS else "elementwise"
        read = sum(_stored_bytes(t) for t in ins)
        write = sum(_stored_bytes(t) for t in outs)
        # the op's work shape: its largest tensor (a reduction's input, a broadcast op's full operand)
        big = max(ins + outs, key=lambda t: t.numel()) if ins + outs else None
        shape = tuple(big.shape) if big is not None else ()
        dtype = str(outs[0].dtype) if outs else ""
        self.ops.append(Op(name, module, True, kind, read, write, shape, dtype))
        return out

    def _convolution(self, args, out: torch.Tensor, module: str) -> torch.Tensor:
        """cuDNN's convolution (module docstring): [layout copy], conv, [bias add_]."""
        x, w, bias = args[0], args[1], args[2]
        groups = args[8]
        shape, dt = tuple(out.shape), str(out.dtype)
        if not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
            b = _stored_bytes(x)
            self.ops.append(Op("contiguous(in convolution)", module, True, "elementwise", b, b, tuple(x.shape),
                               str(x.dtype)))
        depthwise = groups > 1 and groups == x.shape[1]
        kind, name = ("elementwise", "convolution(depthwise)") if depthwise else ("gemm", "convolution(1x1)")
        self.ops.append(Op(name, module, True, kind, _stored_bytes(x) + _stored_bytes(w), _stored_bytes(out),
                           shape, dt, _layout(out)))
        if bias is not None:
            b = _stored_bytes(out)
            self.ops.append(Op("add_(bias, in convolution)", module, True, "elementwise", b + _stored_bytes(bias), b,
                               shape, dt, _layout(out)))
        return out


def _hook_modules(root: torch.nn.Module, rec: Recorder) -> None:
    for mname, mod in root.named_modules():
        if not mname:
            continue
        mod.register_forward_pre_hook(lambda m, a, n=mname: rec.modules.append(n) and None)
        mod.register_forward_hook(lambda m, a, o: rec.modules.pop() and None)  # a hook's return replaces the output


def record(make: Callable[[int, int, int], tuple[torch.nn.Module, Callable[[], object], set[int]]],
           video: int, text: int, heads: int) -> list[Op]:
    """The ops of one forward at ``video`` + ``text`` tokens and ``heads`` heads."""
    torch.manual_seed(0)
    block, call, _ = make(video, text, heads)
    rec = Recorder()
    _hook_modules(block, rec)
    with torch.no_grad(), rec:  # not inference_mode: under it composite ops (linear, layer_norm) reach the mode whole
        call()
    return rec.ops


@dataclass
class Fitted:
    """One op with its bytes per token in units of D bf16 elements, by token kind."""

    op: Op
    per_video_D: float
    per_text_D: float
    split: str  # "hidden" (every tensor-parallel rank) or "heads" (over heads or the MLP hidden)


def fit(make, *, video: int, text: int, heads: int, head_dim: int) -> list[Fitted]:
    """Per op: the coefficients of (video tokens x D) and (text tokens x D) in its bytes / 2."""
    dv, dt, dh = video, max(text, 4), heads
    runs = {key: record(make, *key) for key in [(video, text, heads), (video + dv, text, heads),
                                                 (video, text + dt, heads), (video + dv, text, heads + dh),
                                                 (video, text + dt, heads + dh), (video, text, heads + dh)]}
    lengths = {len(r) for r in runs.values()}
    if len(lengths) != 1:
        raise RuntimeError(f"op sequence depends on the shape: {lengths}")
    base = runs[(video, text, heads)]
    widths = make(video, text, heads)[2]
    out = []
    for i, op in enumerate(base):
        names = {r[i].name for r in runs.values()}
        if len(names) != 1:
            raise RuntimeError(f"op {i} differs between shapes: {names}")

        def b(key, i=i):
            o = runs[key][i]
            return (o.read_bytes + o.write_bytes) / 2  # bf16 elements (fp32 counts 2)

        def slope_v(h):
            return (b((video + dv, text, h)) - b((video, text, h))) / dv

        def slope_t(h):
            return (b((video, text + dt, h)) - b((video, text, h))) / dt

        per_v = (slope_v(heads + dh) - slope_v(heads)) / (dh * head_dim)
        per_t = (slope_t(heads + dh) - slope_t(heads)) / (dh * head_dim)
        out.append(Fitted(op, round(per_v, 6), round(per_t, 6), split_of(op, widths)))
    return out


# ---- the blocks --------------------------------------------------------------------------------------------------


def cogvideox(rope: bool, head_dim: int = 64) -> Callable:
    """diffusers' ``CogVideoXBlock`` as ``CogVideoXTransformer3DModel`` builds it (attention_bias True,
    time_embed_dim 512), with ``CogVideoXAttnProcessor2_0``; RoPE on the video tokens when ``rope``."""
    from diffusers.models.transformers.cogvideox_transformer_3d import CogVideoXBlock

    def make(video: int, text: int, heads: int):
        D = heads * head_dim
        blk = CogVideoXBlock(dim=D, num_attention_heads=heads, attention_head_dim=head_dim, time_embed_dim=512,
                             attention_bias=True).to(DTYPE).eval()
        x = torch.randn(1, video, D, dtype=DTYPE)
        c = torch.randn(1, text, D, dtype=DTYPE)
        temb = torch.randn(1, 512, dtype=DTYPE)
        # the pipeline's RoPE table: fp32 [video tokens, head dim] cos and sin (pipeline_cogvideox.py
        # _prepare_rotary_positional_embeddings -> get_3d_rotary_pos_embed)
        rot = (torch.randn(video, head_dim), torch.randn(video, head_dim)) if rope else None
        return blk, lambda: blk(hidden_states=x, encoder_hidden_states=c, temb=temb, image_rotary_emb=rot), {D}

    return make


def mochi(head_dim: int = 128) -> Callable:
    """diffusers' ``MochiTransformerBlock`` (not ``context_pre_only``: 47 of the 48 blocks) with
    ``MochiAttnProcessor2_0``, text width D/2 (Mochi: 1536 of 3072) and the per-head fp32 RoPE table
    ``MochiRoPE`` makes ([video tokens, heads, d/2] cos and sin). Run it on the diffusers the published runs used
    (see docs/step-level.md): a version whose forward takes ``encoder_attention_mask`` gets an all-ones mask."""
    import inspect

    from diffusers.models.transformers.transformer_mochi import MochiTransformerBlock

    def make(video: int, text: int, heads: int):
        D = heads * head_dim
        blk = MochiTransformerBlock(dim=D, num_attention_heads=heads, attention_head_dim=head_dim,
                                    pooled_projection_dim=D // 2).to(DTYPE).eval()
        x = torch.randn(1, video, D, dtype=DTYPE)
        c = torch.randn(1, text, D // 2, dtype=DTYPE)
        temb = torch.randn(1, D, dtype=DTYPE)
        rot = (torch.randn(video, heads, head_dim // 2), torch.randn(video, heads, head_dim // 2))
        kw = dict(hidden_states=x, encoder_hidden_states=c, temb=temb, image_rotary_emb=rot)
        if "encoder_attention_mask" in inspect.signature(blk.forward).parameters:
            kw["encoder_attention_mask"] = torch.ones(1, text, dtype=torch.bool)
        return blk, lambda: blk(**kw), {D, D // 2}

    return make


def hunyuanvideo_diffusers(kind: str, head_dim: int = 128) -> Callable:
    """diffusers' ``HunyuanVideoTransformerBlock`` ('double') or ``HunyuanVideoSingleTransformerBlock`` ('single')
    with ``HunyuanVideoAttnProcessor2_0``, mlp_ratio 4, the fp32 RoPE table [video tokens, d] of
    ``HunyuanVideoRotaryPosEmbed``; no attention mask (the model's text-padding mask only changes the core)."""
    from diffusers.models.transformers.transformer_hunyuan_video import (HunyuanVideoSingleTransformerBlock,
                                                                         HunyuanVideoTransformerBlock)

    def make(video: int, text: int, heads: int):
        D = heads * head_dim
        cls = HunyuanVideoTransformerBlock if kind == "double" else HunyuanVideoSingleTransformerBlock
        blk = cls(num_attention_heads=heads, attention_head_dim=head_dim, mlp_ratio=4.0).to(DTYPE).eval()
        x = torch.randn(1, video, D, dtype=DTYPE)
        c = torch.randn(1, text, D, dtype=DTYPE)
        temb = torch.randn(1, D, dtype=DTYPE)
        rot = (torch.randn(video, head_dim), torch.randn(video, head_dim))
        if kind == "double":
            return blk, lambda: blk(x, c, temb, freqs_cis=rot), {D}
        return blk, lambda: blk(x, c, temb, image_rotary_emb=rot), {D}

    return make


def flux(kind: str, head_dim: int = 128) -> Callable:
    """diffusers' ``FluxTransformerBlock`` ('double') or ``FluxSingleTransformerBlock`` ('single') with
    ``FluxAttnProcessor2_0``, the fp32 RoPE table [joint tokens, d] (Flux rotates text and image tokens): a check of
    the wave-5 Flux count (dicesim/dense_models.py ``elementwise_split``, ``EAGER_STREAM_KERNELS``)."""
    from diffusers.models.transformers.transformer_flux import FluxSingleTransformerBlock, FluxTransformerBlock

    def make(video: int, text: int, heads: int):
        D = heads * head_dim
        cls = FluxTransformerBlock if kind == "double" else FluxSingleTransformerBlock
        blk = cls(dim=D, num_attention_heads=heads, attention_head_dim=head_dim).to(DTYPE).eval()
        x = torch.randn(1, video, D, dtype=DTYPE)
        c = torch.randn(1, text, D, dtype=DTYPE)
        xs = torch.randn(1, video + text, D, dtype=DTYPE)
        temb = torch.randn(1, D, dtype=DTYPE)
        rot = (torch.randn(video + text, head_dim), torch.randn(video + text, head_dim))
        if kind == "double":
            return blk, lambda: blk(hidden_states=x, encoder_hidden_states=c, temb=temb, image_rotary_emb=rot), {D}
        return blk, lambda: blk(hidden_states=xs, temb=temb, image_rotary_emb=rot), {D}

    return make


#: SANA's two head dims: the linear self-attention's 32 and the cross-attention's 112 (diffusers
#: SanaTransformer2DModel defaults, sana_transformer.py:222-228 in 0.32.1); the replay's width unit is their least
#: common multiple, so that both head counts stay whole as the width grows
SANA_LINEAR_HEAD_DIM, SANA_CROSS_HEAD_DIM, SANA_WIDTH_UNIT = 32, 112, 224


def sana(dtype: torch.dtype = DTYPE, mlp_ratio: float = 2.5) -> Callable:
    """diffusers' ``SanaTransformerBlock`` with ``SanaLinearAttnProcessor2_0`` (self), ``AttnProcessor2_0`` (cross)
    and ``GLUMBConv`` (mlp_ratio 2.5), as ``SanaTransformer2DModel`` builds it: linear heads of 32, cross-attention
    heads of 112, the embedded timestep [B, 6D] and the text mask as the bias [B, 1, text] that
    ``SanaTransformer2DModel.forward`` makes of it (sana_transformer.py:404-407) and the pipelines pass. In fp16 the
    linear attention's output is clipped (one more kernel)."""
    from diffusers.models.transformers.sana_transformer import SanaTransformerBlock

    def make(video: int, text: int, heads: int):
        D = heads * SANA_WIDTH_UNIT
        blk = SanaTransformerBlock(dim=D, num_attention_heads=D // SANA_LINEAR_HEAD_DIM,
                                   attention_head_dim=SANA_LINEAR_HEAD_DIM,
                                   num_cross_attention_heads=D // SANA_CROSS_HEAD_DIM,
                                   cross_attention_head_dim=SANA_CROSS_HEAD_DIM, cross_attention_dim=D,
                                   mlp_ratio=mlp_ratio).to(dtype).eval()
        height, width = video // 8, 8
        x = torch.randn(1, video, D, dtype=dtype)
        c = torch.randn(1, text, D, dtype=dtype)
        mask = torch.zeros(1, 1, text, dtype=dtype)  # (1 - all-ones mask) * -10000
        t = torch.randn(1, 6 * D, dtype=dtype)
        return blk, lambda: blk(x, encoder_hidden_states=c, encoder_attention_mask=mask, timestep=t, height=height,
                                width=width), {D}

    return make


def _einops_shim() -> None:
    """HunyuanVideo's blocks call ``einops.rearrange(qkv, "B L (K H D) -> K B L H D", K=3, H=heads)``: where einops
    is not installed, the same views (reshape, permute) stand in for it (einops' torch backend makes views too)."""
    import types

    try:
        import einops  # noqa: F401
        return
    except ImportError:
        pass

    def rearrange(x, pattern, **sizes):
        if pattern.replace(" ", "") != "BL(KHD)->KBLHD":
            raise NotImplementedError(pattern)
        B, L, _ = x.shape
        return x.reshape(B, L, sizes["K"], sizes["H"], -1).permute(2, 0, 1, 3, 4)

    shim = types.ModuleType("einops")
    shim.rearrange = rearrange
    shim.repeat = None
    sys.modules["einops"] = shim


def hunyuanvideo_official(kind: str, head_dim: int = 128) -> Callable:
    """Tencent/HunyuanVideo's own ``MMDoubleStreamBlock`` / ``MMSingleStreamBlock`` (hyvideo/modules/models.py: put
    the repository's root on PYTHONPATH), mlp ratio 4, gelu_tanh, RMS q/k norm, its fp32 RoPE table [video tokens, d].
    Its one-GPU attention is flash-attn's varlen kernel on [B*S, H, d] views of the concatenated q, k, v
    (hyvideo/modules/attenion.py ``attention``, mode 'flash'), replaced here by one SDPA call on the same views whose
    output comes back in the same [B, S, H, d] layout: one attention kernel, no layout copy, as on the GPU."""
    _einops_shim()
    import torch.nn.functional as F
    from hyvideo.modules import models as hy

    def flash_like(q, k, v, **_):
        b, s, a, d = q.shape
        x = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
        return x.reshape(b, s, -1)

    hy.attention = flash_like

    def make(video: int, text: int, heads: int):
        D = heads * head_dim
        cls = hy.MMDoubleStreamBlock if kind == "double" else hy.MMSingleStreamBlock
        blk = cls(D, heads, mlp_width_ratio=4.0, mlp_act_type="gelu_tanh", qk_norm=True, qk_norm_type="rms")
        blk = blk.to(DTYPE).eval()
        x = torch.randn(1, video, D, dtype=DTYPE)
        c = torch.randn(1, text, D, dtype=DTYPE)
        xs = torch.randn(1, video + text, D, dtype=DTYPE)
        vec = torch.randn(1, D, dtype=DTYPE)
        rot = (torch.randn(video, head_dim), torch.randn(video, head_dim))
        cu = torch.zeros(3, dtype=torch.int32)  # the blocks only check its length (2 x batch + 1)
        if kind == "double":
            return blk, lambda: blk(x, c, vec, cu, cu, video + text, video + text, freqs_cis=rot), {D}
        return blk, lambda: blk(xs, vec, text, cu, cu, video + text, video + text, freqs_cis=rot), {D}

    return make


BLOCKS: dict[str, Callable[[], tuple[Callable, int]]] = {
    "cogvideox-5b": lambda: (cogvideox(True), 64),
    "cogvideox-2b": lambda: (cogvideox(False), 64),
    "mochi-1-preview": lambda: (mochi(), 128),
    "flux-double": lambda: (flux("double"), 128),
    "flux-single": lambda: (flux("single"), 128),
    "hunyuanvideo-diffusers-double": lambda: (hunyuanvideo_diffusers("double"), 128),
    "hunyuanvideo-diffusers-single": lambda: (hunyuanvideo_diffusers("single"), 128),
    "hunyuanvideo-official-double": lambda: (hunyuanvideo_official("double"), 128),
    "hunyuanvideo-official-single": lambda: (hunyuanvideo_official("single"), 128),
    "sana-1600m": lambda: (sana(), SANA_WIDTH_UNIT),
    "sana-1600m-fp16": lambda: (sana(torch.float16), SANA_WIDTH_UNIT),
}


def split_of(op: Op, widths: set[int]) -> str:
    """'heads' for passes over q/k/v, the attention output or the MLP hidden (tensor parallelism splits them):
    4 or more dimensions ([B, H, S, d], RoPE's [B, H, S, d/2, 2]) or a last dimension that is no stream's hidden
    width; 'hidden' for passes over a stream's hidden states (every rank runs them)."""
    shape = op.out_shape
    if shape and shape[-1] == 1:
        return "rowstat"  # per-row statistics (an RMSNorm's + eps, rsqrt): 2/d of a pass per op, not counted
    if len(shape) >= 4 or (shape and shape[-1] not in widths):
        return "heads"
    return "hidden"


def summarise(name: str) -> dict[str, float]:
    make, head_dim = BLOCKS[name]()
    rows = fit(make, video=48, text=8, heads=3, head_dim=head_dim)
    tot = {"kernels": 0, "gemm": 0, "attention": 0}
    for key in ("hidden", "heads", "rowstat"):
        for tok in ("video", "text"):
            tot[f"{key}_{tok}"] = 0.0
    print(f"{name}: op, module, kind, split, per video token (D), per text token (D)")
    for f in rows:
        if not f.op.kernel:
            continue
        tot["kernels"] += 1
        if f.op.kind != "elementwise":
            tot[f.op.kind] += 1
            print(f"  {f.op.name:34s} {f.op.module:18s} {f.op.kind:15s} (bytes not passes: "
                  f"{f.per_video_D:7.3f} {f.per_text_D:7.3f}) {f.op.layout}")
            continue
        s = f.split
        tot[f"{s}_video"] += f.per_video_D
        tot[f"{s}_text"] += f.per_text_D
        print(f"  {f.op.name:34s} {f.op.module:18s} {f.op.out_dtype:15s} {s:6s} "
              f"{f.per_video_D:7.3f} {f.per_text_D:7.3f} {f.op.layout}")
    print("  totals:", {k: round(v, 4) for k, v in tot.items()})
    return tot


def main(argv: list[str]) -> int:
    unknown = [a for a in argv if a not in BLOCKS]
    if unknown:
        print(f"error: unknown block {unknown[0]!r}; allowed: {', '.join(BLOCKS)}", file=sys.stderr)
        return 2
    try:
        import diffusers
    except ImportError:
        print("error: this script needs diffusers: python3 -m pip install diffusers==0.32.1", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    print(f"diffusers {diffusers.__version__} ({diffusers.__file__}), torch {torch.__version__}")
    for name in argv or [b for b in BLOCKS if "official" not in b]:
        summarise(name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
