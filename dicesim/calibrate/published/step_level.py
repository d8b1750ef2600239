"""The step level of ``dicesim accuracy --published``: every published DiT inference latency predicted.

The step-level set (``traces/published/steps/``, schema ``dicesim-published-steps/1``) holds
published end-to-end latencies of dense DiT inference on one and several GPUs (and denoising-loop
times, ``denoise_only``). They are checks of
the whole simulator: nothing is fitted on them. Each latency figure is predicted by
:func:`dicesim.sim.dense.predict_dense` with the model preset of :mod:`dicesim.dense_models`, the
built-in profile of its GPU and the machine its interconnect implies (:data:`HARDWARE`), with
compute-communication interference on (the profile's factor) and off; the VAE decode is added once
per call unless the figure is ``denoise_only``.

Splits: ``held-out`` (a multi-GPU measurement, counted against the target per interconnect
family), ``baseline`` (one GPU: it checks the compute model alone, summarised apart),
``statement``, ``excluded`` (a second publication of a figure, or a run whose setting the
simulator does not model: PipeFusion, offloading, FP8 weights; ``reason`` says which). OOM and
refused-configuration outcomes and peak-memory figures are in :func:`outcome_rows` (memory:
:mod:`~dicesim.calibrate.published.step_memory`).
"""

from __future__ import annotations

import tomllib
from dataclasses import replace
from pathlib import Path

import pandas as pd

from dicesim.calibrate.published.levels import STEP_TARGET, LevelSummary, summarize
from dicesim.dense_models import get_dense_model
from dicesim.calibrate.published.schema import STEP_SCHEMA
from dicesim.calibrate.published.step_memory import fits_where_run, memory_check
from dicesim.sim.dense_vae import vae_decode_s
from dicesim.errors import ConfigError, TraceError
from dicesim.strict_table import take_table
from dicesim.sim.costs.attention_kernels import KernelTable, builtin_kernel_table
from dicesim.sim.costs.profile import HardwareProfile, get_profile
from dicesim.sim.dense import DenseParallel, DenseRun, not_modelled, predict_dense, refusal
from dicesim.sim.network.nccl import builtin_nccl_model
from dicesim.topology.machines import get_machine

DEFAULT_DIR = Path("traces/published/steps")
#: what the step level says when the places given hold no step-level figure
NOT_YET = "step level: no step-level figures in the given places (the set: traces/published/steps/)"

#: GPU as the figure states it -> (built-in profile, machine, why that machine)
HARDWARE: tuple[tuple[str, str, str, str], ...] = (
    ("H100 or H800", "h100-sxm", "dgx-h100", "H100 or H800 not stated per cell: simulated as H100 on dgx-h100"),
    ("H100", "h100-sxm", "dgx-h100", "NVLink stated or assumed (H100 SXM): dgx-h100, first N GPUs"),
    # before "H20", which "H200" starts with
    ("H200", "h200", "hgx-h200", "H200 SXM assumed (form factor not stated): hgx-h200 (NVLink 4), first N GPUs"),
    ("A800", "a100-sxm", "hgx-a800", "A800 = A100 compute (a100-sxm) with 400 GB/s NVLink: hgx-a800 (SXM assumed)"),
    ("A100", "a100-sxm", "dgx-a100", "A100-SXM4 (NVLink): dgx-a100, first N GPUs"),
    ("H20", "h20", "hgx-h20", "H20 ships only as an 8-GPU HGX board: hgx-h20"),
    ("L20", "l20", "8x-l20-pcie", "L20 is PCIe-only; switch layout not stated: the 2-8-5 PCIe server class"),
    ("RTX 4090", "rtx4090", "8x-rtx4090-pcie", "consumer PCIe card, layout not stated: 8x-rtx4090-pcie"),
)


#: the fused attention kernel each source framework ran (a prefix of the figure's ``framework``) and why;
#: the curve of that kernel on the GPU's architecture times the attention core (attention_kernels.toml)
ATTENTION_KERNELS: tuple[tuple[str, str, str], ...] = (
    ("ParaAttention", "fa2", "torch SDPA through para_attn's dispatch, flash backend first below sm90 (A100, L20): "
                             "chengzeyi/ParaAttention@aa8676b src/para_attn/ops/__init__.py _attention_forward_with_lse; "
                             "PyTorch's flash backend is FlashAttention-2"),
    ("HunyuanVideo", "fa2", "flash-attn 2 (flash_attn_varlen_func; xDiT's L20 rows state flash-attn 2.7.2.post1, "
                            "traces/published/steps/xdit.toml notes)"),
    ("xDiT 0.3.4, one GPU", "cudnn", "with every parallel degree 1 xFuserFluxPipeline hands the call to diffusers' "
                                     "FluxPipeline (xdit-project/xDiT@35c5497, tag 0.3.4, xfuser/model_executor/"
                                     "pipelines/base_pipeline.py:170-188 use_naive_forward), whose FluxAttnProcessor2_0 "
                                     "calls torch SDPA (huggingface/diffusers@89e4d62, v0.31.0, src/diffusers/models/"
                                     "attention_processor.py:1781); torch 2.5.0 puts its cuDNN backend first on H100 "
                                     "(PyTorch 2.5 release blog, https://pytorch.org/blog/pytorch2-5/, 2024-10-17: 'a new "
                                     "CuDNN backend for SDPA, enabling "
                                     "speedups by default for users of SDPA on H100s or newer GPUs'; made opt-in after "
                                     "2.5.0's bugs, pytorch/pytorch#138522, and 'Since we deprioritized cuDNN SDPA', "
                                     "#141274, 2024-11-21). A statement, not read in torch's code"),
    ("xDiT 0.3.4", "fa2", "under sequence parallelism xfuser 0.3.4's Flux processor calls xFuserLongContextAttention "
                          "(xdit-project/xDiT@35c5497 xfuser/model_executor/layers/attention_processor.py:633-636, "
                          "738-762), whose ring loop runs flash_attn's _flash_attn_forward, FlashAttention-2 "
                          "(xfuser/core/long_ctx_attention/ring/ring_flash_attn.py:2, 54-88); read from the code"),
    ("xDiT", "fa2", "xDiT's USP attention (yunchang) calls flash-attn 2 by default; FA3 is an opt-in the tables "
                    "do not state (assumption)"),
    ("diffusers + xDiT", "fa2", "xDiT's USP attention (yunchang), flash-attn 2 (assumption, as xDiT)"),
    ("cache-dit", "fa2", "diffusers' default attention is torch SDPA, whose flash backend is FlashAttention-2; the "
                         "table's '+ FA3' column is a separate (excluded) run, so the baseline did not use FA3 "
                         "(assumption: SDPA picked flash, not cuDNN, on H100)"),
    ("Open-Sora", "fa2", "Open-Sora 2.0 installs flash-attn 2 (assumption: not FA3)"),
    ("diffusers", "fa2", "torch SDPA, flash backend (FlashAttention-2) on Ampere/Ada (assumption)"),
    ("SANA official code", "fa2", "the cross-attention calls xformers.ops.memory_efficient_attention when xformers is "
                                  "installed, else torch SDPA (NVlabs/Sana@2cfb4f7 diffusion/model/nets/sana_blocks.py "
                                  "MultiHeadCrossAttention.forward); FlashAttention-2 on A100 either way is an "
                                  "assumption. The linear self-attention is no softmax kernel (profile efficiency)"),
    ("SGLang diffusion", "fa3", "sglang's default CUDA attention backend is FA on every GPU but SM12.x "
                                "(sgl-project/sglang@026456e python/sglang/multimodal_gen/runtime/platforms/"
                                "cuda.py _resolve_default_attn_backend); on Hopper its FlashAttentionBackend calls "
                                "flash-attn 3's flash_attn_interface when installed, else sgl_kernel's "
                                "flash_attn_varlen_func at fa_ver = 3 (@0017ffd runtime/layers/attention/backends/"
                                "flash_attn.py): FlashAttention-3 (stored versions, not the PRs' base commits: an "
                                "assumption for those)"),
)


#: host seconds to issue one kernel of an eager PyTorch block: the project's host model measured on
#: H100 (eager vs CUDA-graph op timings, traces/gpu/h100; dicesim/data/profiles/h100-calibrated.toml,
#: citation "host"): the dense ops attention 234 us (11 launches), shared_expert 106 us (8 launches)
#: and local_combine 39 us (3 launches; launches from traces/host/cpu-executor.toml [bench.*]) make
#: 379 us over 22 kernels. The H200 machine's fit gives 21.5 us (283 + 138 + 51 us over 22). The
#: published runs' hosts are not stated: the H100 machine's figure is used for all (an assumption).
EAGER_HOST_PER_KERNEL_S = (234e-6 + 106e-6 + 39e-6) / (11 + 8 + 3)
#: with torch.compile the Inductor wrapper launches each fused kernel without the eager dispatcher:
#: the fitted CUDA launch cost per kernel alone, tau = 7.44 us (h100-calibrated, citation "host"; 7.59 us
#: before its refit; that Inductor's wrapper costs no Python beyond it is an assumption)
COMPILED_HOST_PER_KERNEL_S = 7.44e-6


#: where the framework keeps every text token on every rank of the sequence group (the text is a replicated
#: joint tensor; only the latent is split), per (framework prefix, model), with the rule's source:
#: - HunyuanVideo's own code splits the latent only (Tencent/HunyuanVideo@fa14b00 hyvideo/inference.py:57-67,
#:   80-93: ``x`` and the RoPE tables are chunked, ``text_states`` passed whole) and hands the text to
#:   xDiT's attention as ``joint_tensor_*`` (hyvideo/modules/attenion.py:169-180);
#: - xDiT's ConsisID splits the 226 text tokens over the sequence group only when they divide evenly, else
#:   keeps them whole on every rank (xdit-project/xDiT@970d5ce xfuser/model_executor/pipelines/
#:   pipeline_consisid.py:455-459) and its attention joins them as ``joint_tensor_*``
#:   (xfuser/model_executor/layers/attention_processor.py:1153-1327); its CogVideoX pipeline the same
#:   (pipeline_cogvideox.py:372-376).
#: - sglang's HunyuanVideo before sgl-project/sglang pull request #28319 (described 2026-06-15, merged;
#:   "run HunyuanVideo double/single stream blocks on local text shards instead of replicated text tokens"):
#:   its blocks take ``txt`` whole and hand it to ``UlyssesAttention`` beside the sharded image q/k/v (sgl-project/sglang@050bbf0
#:   python/sglang/multimodal_gen/runtime/models/dits/hunyuanvideo.py MMDoubleStreamBlock.forward,
#:   MMSingleStreamBlock.forward); after it the text is sharded (taken as split evenly, as below).
#: - xfuser 0.3.4's Flux (xdit-project/xDiT@35c5497, tag 0.3.4): the pipeline splits only the latent over the
#:   sequence group (xfuser/core/distributed/runtime_state.py:261-350) and the transformer embeds the whole text on
#:   every rank (xfuser/model_executor/models/transformers/transformer_flux.py:121-122, 167-172); its attention
#:   puts the text q/k/v in front as ``joint_tensor_*`` (xfuser/model_executor/layers/attention_processor.py:
#:   742-762; xfuser/core/long_ctx_attention/hybrid/attn_layer.py:97-123). The text split
#:   (``split_text_embed_in_sp``) came later: xdit-project/xDiT@a7bcdb8 (#361, 2024-11-23).
#: Elsewhere the joint sequence is taken as split evenly (xDiT's Flux: 512 text tokens over 2 or 4 ranks).
TEXT_REPLICATED_RULES: tuple[tuple[str, str, str], ...] = (
    ("HunyuanVideo", "hunyuanvideo-t2v", "always"),
    ("xDiT 0.3.4", "flux.1-dev", "always"),
    ("xDiT", "cogvideox-5b", "unless it divides"),
    ("xDiT", "consisid", "unless it divides"),
    ("SGLang diffusion (main before #28319", "hunyuanvideo-t2v", "always"),
)


#: how each framework splits a video latent over its sequence group (``DenseRun.latent_split``): a prefix of the
#: figure's ``framework`` -> "frames" (sglang: along the latent frames, FRAMES_SPLIT_RULE in sim/dense.py);
#: every other framework "height-width" (HunyuanVideo's own rule, the only one the layout check knew before)
LATENT_SPLIT_RULES: tuple[tuple[str, str], ...] = (
    ("SGLang diffusion", "frames"),
)


def _first_rule(rules: tuple[tuple[str, ...], ...], text: str) -> tuple[str, ...] | None:
    """The first rule whose needle (its first field) starts ``text``: the rule tables here are matched so."""
    return next((r for r in rules if text.startswith(r[0])), None)


def latent_split_for(framework: str) -> str:
    """How ``framework`` splits a video latent over a sequence group (rules above)."""
    rule = _first_rule(LATENT_SPLIT_RULES, framework)
    return "height-width" if rule is None else rule[1]


def text_replicated_for(framework: str, model: str, text_tokens: int, seq: int) -> bool:
    """Whether every rank of a sequence group of ``seq`` holds all the text tokens (rules above)."""
    for needle, name, when in TEXT_REPLICATED_RULES:
        if framework.startswith(needle) and model == name and seq > 1:
            return when == "always" or text_tokens % seq != 0
    return False


def attention_kernel_for(framework: str) -> tuple[str, str] | None:
    """(kernel, basis) for a figure's framework, or None when it is not known."""
    rule = _first_rule(ATTENTION_KERNELS, framework)
    return None if rule is None else rule[1:]


def hardware_for(gpu: str) -> tuple[str, str, str] | None:
    """(profile, machine, basis) for a figure's stated GPU, or None when the GPU is not stated."""
    rule = _first_rule(HARDWARE, gpu)
    return None if rule is None else rule[1:]


#: the fields of a step figure (traces/published/steps/README.md) and the checks a hostile file meets
_STEP_TEXT = ("id", "source", "model", "task", "gpu", "interconnect", "interconnect_basis", "topology_hint",
              "framework", "precision", "scope", "notes", "method", "quote", "doubts", "dup_of", "cfg")
_STEP_CHOICES = {"kind": ("latency", "memory", "oom", "unsupported"), "evidence": ("measurement", "statement"),
                 "use": ("check", "reference"), "unit": ("s", "GB"), "interconnect_family": ("none", "nvlink", "pcie")}
#: integer fields and their plausible range (a frame count, a GPU count, ...)
_STEP_INTS = {"height_px": (1, 16384), "width_px": (1, 16384), "frames": (1, 100_000), "steps": (1, 100_000),
              "batch": (1, 65536), "nodes": (1, 4096), "gpus": (1, 16384), "text_tokens": (1, 65536)}
#: boolean fields: ``denoise_only`` marks a time that covers the denoising loop alone (no VAE decode, no text encoding)
_STEP_BOOLS = ("compiled", "denoise_only")
_STEP_KEYS = (*_STEP_TEXT, *_STEP_CHOICES, *_STEP_INTS, *_STEP_BOOLS, "optimizations", "value", "parallel")
#: a published latency or memory figure above this many seconds or GB is not a DiT inference figure
MAX_STEP_VALUE = 1e6


def _check_step_figure(fig: object, where: str) -> None:
    """One line naming the first wrong field of a step figure and what is allowed."""
    if not isinstance(fig, dict):
        raise ConfigError(where, "a [[figure]] must be a table")
    where = f"{where}: figure {fig.get('id', '?')!r}"
    take_table(fig, _STEP_KEYS, where)
    for k, allowed in _STEP_CHOICES.items():
        if k in fig and fig[k] not in allowed:
            raise ConfigError(f"{where}.{k}", f"got {fig[k]!r}", allowed)
    for k, (lo, hi) in _STEP_INTS.items():
        v = fig.get(k)
        if v is not None and (type(v) is not int or not lo <= v <= hi):
            raise ConfigError(f"{where}.{k}", f"must be an integer in {lo}..{hi}, got {v!r}")
    v = fig.get("value")
    if v is not None and (type(v) not in (int, float) or not 0 < v <= MAX_STEP_VALUE):
        raise ConfigError(f"{where}.value", f"must be a number in (0, {MAX_STEP_VALUE:g}] {fig.get('unit', '')}, "
                                            f"got {v!r}")
    for k in _STEP_BOOLS:
        if k in fig and not isinstance(fig[k], bool):
            raise ConfigError(f"{where}.{k}", f"must be true or false, got {fig[k]!r}")
    for k in _STEP_TEXT:
        if k in fig and not isinstance(fig[k], str):
            raise ConfigError(f"{where}.{k}", f"must be text, got {type(fig[k]).__name__}")


def load_step_figures(paths: list[Path] | None = None) -> tuple[list[dict], dict[str, dict]]:
    """Every ``[[figure]]`` and every ``[sources.*]`` of the step files (models.toml skipped)."""
    files: list[Path] = []
    for p in paths or [DEFAULT_DIR]:
        files += sorted(p.glob("*.toml")) if p.is_dir() else [p]
    figs: list[dict] = []
    sources: dict[str, dict] = {}
    for f in files:
        try:
            data = tomllib.loads(f.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise TraceError(f, f"not a readable TOML step-level file: {exc}") from None
        if data.get("schema") != STEP_SCHEMA:
            continue
        if not isinstance(data.get("sources", {}), dict) or not isinstance(data.get("figure", []), list):
            raise TraceError(f, "[sources] must be a table and [[figure]] an array of tables")
        sources.update(data.get("sources", {}))
        for fig in data.get("figure", []):
            _check_step_figure(fig, str(f))
            figs.append({**fig, "_file": str(f)})
    return figs, sources


def _figure_error(f: object, exc: Exception) -> ConfigError:
    """A step figure the predictor cannot read, named by its file and id, in one line."""
    where = f"{f.get('_file', 'step set')}: figure {f.get('id', '?')!r}" if isinstance(f, dict) else "step set"
    what = f"missing field {exc.args[0]!r}" if isinstance(exc, KeyError) else str(exc).splitlines()[0]
    return ConfigError(where, what, f"the fields of schema {STEP_SCHEMA} (traces/published/steps/README.md)")


def dense_run(fig: dict) -> DenseRun:
    """The run a figure describes (with the attention kernel its framework ran)."""
    par = {k: int(v) for k, v in fig["parallel"].items()}
    framework = str(fig.get("framework", ""))
    kern = attention_kernel_for(framework)
    model = get_dense_model(fig["model"])
    if "text_tokens" in fig:  # the text length the run fed the DiT, where it is not the preset's
        model = replace(model, text_tokens=int(fig["text_tokens"]))
    seq = par.get("ulysses", 1) * par.get("ring", 1)
    return DenseRun(model=model, height_px=int(fig["height_px"]),
                    width_px=int(fig["width_px"]), frames=int(fig["frames"]), steps=int(fig["steps"]),
                    batch=int(fig["batch"]), cfg_on=str(fig["cfg"]).startswith("on"),
                    compiled=bool(fig.get("compiled", False)), parallel=DenseParallel(**par),
                    attention_kernel=kern[0] if kern else None,
                    text_replicated=text_replicated_for(framework, model.name, model.text_tokens, seq),
                    latent_split=latent_split_for(framework))


def _split(fig: dict, run: DenseRun, hw: tuple | None) -> tuple[str, str]:
    if fig.get("use") == "reference":
        return "excluded", f"second publication of {fig.get('dup_of', 'another figure')}"
    if fig.get("evidence") == "statement":
        return "statement", "a statement, not a measurement"
    why = not_modelled(run)
    if why:
        return "excluded", why
    if fig.get("optimizations"):
        return "excluded", "not modelled: " + ", ".join(fig["optimizations"])
    if hw is None:
        return "excluded", "GPU not stated"
    if refusal(run):
        return "excluded", "published as run, but the layout rules refuse it: " + str(refusal(run))
    return ("baseline", "") if int(fig["gpus"]) == 1 else ("held-out", "")


def step_level_rows(paths: list[Path] | None = None) -> pd.DataFrame | None:
    """One row per latency figure (module docstring): published, predicted with interference on and off."""
    figs, sources = load_step_figures(paths)
    lat = [f for f in figs if f.get("kind") == "latency"]
    if not lat:
        return None
    nccl = builtin_nccl_model()
    kernels = builtin_kernel_table()
    graphs: dict[str, object] = {}
    rows = []
    for f in lat:
        try:
            rows.append(_row(f, sources, nccl, graphs, kernels))
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise _figure_error(f, exc) from None
    return pd.DataFrame(rows)


def _row(f: dict, sources: dict, nccl: object, graphs: dict, kernels: KernelTable) -> dict:
    """One latency figure's row: its split, the prediction with interference on and off, its source."""
    run = dense_run(f)
    hw = hardware_for(str(f["gpu"]))
    split, reason = _split(f, run, hw)
    pred = pred_off = comp = exposed = vae = float("nan")
    prof = machine = basis = ""
    if hw is not None and not not_modelled(run) and not refusal(run):
        prof, machine, basis = hw
        G = graphs.setdefault(machine, get_machine(machine))
        profile = get_profile(prof)
        host_s = COMPILED_HOST_PER_KERNEL_S if run.compiled else EAGER_HOST_PER_KERNEL_S
        on = predict_dense(run, profile, G, nccl, interference=True, kernels=kernels, host_kernel_s=host_s)
        off = predict_dense(run, profile, G, nccl, interference=False, kernels=kernels, host_kernel_s=host_s)
        # once per call, on each GPU (not divided among them); none where the figure times the denoising loop alone
        vae = 0.0 if f.get("denoise_only", False) else vae_decode_s(run, profile)
        pred, pred_off, comp, exposed = on.total_s + vae, off.total_s + vae, on.compute_s, on.exposed_comm_s
        need_tflops = on.flops / float(f["value"]) / 1e12
        if split in ("held-out", "baseline") and need_tflops > profile.peak_flops / 1e12:
            split, reason = "excluded", (
                f"inconsistent with its recorded setting: {on.flops / 1e15:.3g} PFLOP per GPU in {f['value']:g} s is "
                f"{need_tflops:.0f} TFLOP/s, above the GPU's {profile.peak_flops / 1e12:.0f} TFLOP/s dense peak")
    src = sources.get(f["source"], {})
    value = float(f["value"])
    return {
        "id": f["id"], "split": split, "reason": reason, "family": f["interconnect_family"],
        "published": value, "predicted": pred, "unit": "s", "error": pred / value - 1,
        "predicted_no_interference": pred_off, "error_no_interference": pred_off / value - 1,
        "compute_s": comp, "exposed_comm_s": exposed, "vae_decode_s": vae, "model": f["model"], "gpu": f["gpu"],
        "gpus": int(f["gpus"]), "method": f["method"], "compiled": bool(f.get("compiled", False)),
        "profile": prof, "machine": machine, "hardware_basis": basis, "scope": f.get("scope", ""),
        "denoise_only": bool(f.get("denoise_only", False)),
        "attention_kernel": run.attention_kernel or "",
        "group": f"{f['source']}:{f['model']}:{f['height_px']}x{f['width_px']}:{f['gpu']}",
        "source_file": Path(f.get("_file", "")).stem,
        "source_unit": f["source"], "source": f["source"], "url": src.get("url", ""),
    }


#: the columns of :func:`outcome_rows` (also when the places hold no outcome figure)
OUTCOME_COLUMNS = ("id", "kind", "evidence", "gpus", "gpu", "published", "predicted", "verdict", "error", "source",
                   "url")


def outcome_rows(paths: list[Path] | None = None) -> pd.DataFrame:
    """Refused configurations checked against the layout rules; OOM runs and peak-memory figures
    against the dense memory model (:mod:`dicesim.calibrate.published.step_memory`)."""
    figs, sources = load_step_figures(paths)
    rows = []
    for f in figs:
        kind = f.get("kind")
        if kind not in ("unsupported", "oom", "memory"):
            continue
        run = dense_run(f)
        error = None
        if kind == "unsupported":
            why = refusal(run)
            verdict = "agrees" if why else "disagrees: the layout rules let it run"
            predicted = why or "runs"
        else:
            chk = memory_check(f, run, hardware_for(str(f["gpu"])))
            predicted, verdict, error = chk["predicted"], chk["verdict"], chk["error"]
        published = f"{f['value']:g} {f['unit']}" if kind == "memory" else kind.upper()
        rows.append({"id": f["id"], "kind": kind, "evidence": f.get("evidence", ""), "gpus": int(f["gpus"]),
                     "gpu": f["gpu"], "published": published, "predicted": predicted, "verdict": verdict,
                     "error": error, "source": f["source"], "url": sources.get(f["source"], {}).get("url", "")})
    return pd.DataFrame(rows, columns=OUTCOME_COLUMNS)


def ran_rows(paths: list[Path] | None = None) -> pd.DataFrame:
    """Latency figures of the modelled pipelines: does the memory model let them run where they ran?"""
    return fits_where_run(load_step_figures(paths)[0], dense_run, hardware_for)


def step_summaries(rows: pd.DataFrame) -> dict[str, LevelSummary]:
    """The held-out multi-GPU figures against the step target with interference on and off, and the
    one-GPU baselines (the compute model alone) with interference on (it changes nothing on one GPU)."""
    held = rows[rows["split"] == "held-out"]
    off = held.assign(error=held["error_no_interference"])
    base = rows[rows["split"] == "baseline"]
    return {"interference on": summarize("step", held, STEP_TARGET),
            "interference off": summarize("step (interference off)", off, STEP_TARGET),
            "one-GPU baselines": summarize("one-GPU baseline", base, STEP_TARGET)}


def step_lines(rows: pd.DataFrame) -> list[str]:
    """What ``dicesim accuracy --published`` prints for the step level."""
    out = [f"step level: {len(rows)} latency figures; predicted on built-in profiles and machines, never fitted"]
    out.append(f"{'figure':46s} {'split':9s} {'published':>11s} {'predicted':>11s} {'error':>8s} {'no interf.':>10s}")
    for r in rows.itertuples():
        pred = "-" if r.predicted != r.predicted else f"{r.predicted:9.4g} s"
        err = "-" if r.error != r.error else f"{r.error:+8.1%}"
        off = "-" if r.error_no_interference != r.error_no_interference else f"{r.error_no_interference:+10.1%}"
        out.append(f"{r.id:46s} {r.split:9s} {r.published:9.4g} s {pred:>11s} {err:>8s} {off:>10s}"
                   + (f"  ({r.reason})" if r.reason else ""))
    for name, s in step_summaries(rows).items():
        for fam, v in s.per_family.items():
            out.append(f"  {name:18s} {fam:7s} {v['figures']:3d}: median |error| {v['median_abs']:.1%}, "
                       f"max {v['max_abs']:.1%}")
    sums = step_summaries(rows)
    out.append(sums["interference off"].line())
    b = sums["one-GPU baselines"]
    out.append(baseline_line(b))
    return out


def baseline_line(b: LevelSummary) -> str:
    """The one-GPU baselines on one line (they check the compute model; no target of their own)."""
    return (f"one-GPU baselines (the compute model alone, reported apart): {b.figures} measurements: "
            f"median |error| {b.median_abs:.1%}, max {b.max_abs:.1%}")
