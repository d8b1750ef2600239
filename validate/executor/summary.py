"""Turn gathered per-rank results into the run summary and the trace files.

Pure functions of a :class:`~validate.executor.launch.RunOutcome`; the only writer is
:func:`write_run_trace`, which goes through :func:`dicesim.trace.write_trace` (atomic).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from dicesim.models import block_workload
from dicesim.plan import HeldBuffer, build_plan
from dicesim.plan.expert.buffers import buffer_rows
from dicesim.plan.memory import MemoryEstimate, estimate_memory
from dicesim.sim.costs.routing import TokenRouting
from dicesim.trace import write_trace
from validate.executor.launch import RunOutcome
from validate.executor.runner import RunRecord
from validate.executor.tracing import events_frame, trace_meta


def expected_held_nbytes(outcome: RunOutcome, rec: RunRecord, t: int) -> dict[tuple[int, str, int], int]:
    """Bytes the plan says rank ``rec.rank`` holds after step ``t``, from its received row counts."""
    spec = outcome.spec
    plan = build_plan(spec.strategy, spec.preset.depth, spec.steps)
    out: dict[tuple[int, str, int], int] = {}
    for hb in plan.held[t]:
        rows = buffer_rows(hb, local_tokens=rec.local_tokens, top_k=spec.preset.top_k,
                           recv_rows=rec.recv_rows.get((hb.layer, hb.tok_step), 0))
        out[_key(hb)] = rows * rec.row_nbytes
    return out


def _key(hb: HeldBuffer) -> tuple[int, str, int]:
    return (hb.layer, hb.what, hb.tok_step)


def predicted_memory(outcome: RunOutcome) -> MemoryEstimate:
    """dicesim's per-GPU memory of this run, fed the routing every rank really saw (docs/memory.md)."""
    spec, W = outcome.spec, outcome.world_size
    recs = [r.record for r in sorted(outcome.ranks, key=lambda r: r.rank)]
    layout = spec.layout(W)
    routing = TokenRouting(placement=layout.placement, tokens_per_rank=recs[0].local_tokens, top_k=spec.preset.top_k,
                           counts_LTWE=np.stack([r.router_hist for r in recs]).transpose(2, 1, 0, 3))
    wl = block_workload(spec.preset, batch=spec.batch, image_px=spec.image_size, cfg=spec.guidance_scale is not None,
                        dtype=spec.dtype)
    return estimate_memory(build_plan(spec.strategy, spec.preset.depth, spec.steps), layout, wl,
                           image_tokens=spec.preset.tokens_per_image(spec.image_size), routing=routing,
                           row_nbytes=recs[0].row_nbytes, capacity_bytes=None)


def memory_comparison(outcome: RunOutcome) -> dict[str, list[int]]:
    """Measured (``--measure-memory``) and predicted bytes per rank: the weights, and the tensors
    allocated while sampling against the working set plus the held buffers (no runtime on a CPU)."""
    est = predicted_memory(outcome)
    held = [h for h in est.holders_W if h not in ("weights", "activations", "runtime", "allocator_slack")]
    live_W = est.holders_W["activations"] + sum((est.holders_W[h] for h in held), np.zeros(outcome.world_size))
    mem = [r.memory for r in sorted(outcome.ranks, key=lambda r: r.rank)]
    return {"memory_weights_nbytes_per_rank": [m["weights_parameters_nbytes"] + m["weights_buffers_nbytes"]
                                               for m in mem],
            "memory_predicted_weights_nbytes_per_rank": [int(v) for v in est.holders_W["weights"]],
            "memory_peak_live_nbytes_per_rank": [m["peak_live_nbytes"] for m in mem],
            "memory_predicted_live_nbytes_per_rank": [int(round(v)) for v in live_W]}


def shadow_error(outcome: RunOutcome) -> np.ndarray | None:
    """Relative L2 error [T, L] of each MoE layer's output over all ranks' tokens (NaN: not measured)."""
    if not outcome.spec.shadow:
        return None
    sq = np.sum([r.record.shadow_sq for r in outcome.ranks], axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(sq[..., 0] / sq[..., 1])


def summarize(outcome: RunOutcome) -> dict[str, Any]:
    """One JSON-ready summary object; every key carries its unit."""
    spec, recs = outcome.spec, [r.record for r in outcome.ranks]
    K = spec.preset.top_k
    lat = np.array([r.step_latency_s for r in recs])  # [R, T]
    exposed = np.array([r.exposed_comm_s for r in recs])
    held = np.array([r.held_total_nbytes for r in recs])
    lag_kept, lag_dropped = recs[0].lag_kept, recs[0].lag_dropped
    copy_lag = (lag_kept + (K - 1) * lag_dropped) / K
    lag_score = np.sum([r.lag_score for r in recs], axis=0)
    out: dict[str, Any] = {
        "strategy": spec.strategy.name,
        "strategy_desc": spec.strategy.describe(),
        "model": spec.preset.name,
        "world_size": outcome.world_size,
        "backend": outcome.backend,
        "device": outcome.ranks[0].device,
        "steps": spec.steps,
        "batch_per_rank": spec.batch,
        "image_size_px": spec.image_size,
        "step_latency_s": _floats(lat.max(axis=0)),
        "step_latency_s_per_rank": [_floats(r) for r in lat],
        "exposed_comm_s": _floats(exposed.max(axis=0)),
        "exposed_comm_s_per_rank": [_floats(r) for r in exposed],
        "mean_step_latency_s": float(lat.max(axis=0)[1:].mean() if lat.shape[1] > 1 else lat.max()),
        "total_exposed_comm_s": float(exposed.max(axis=0).sum()),
        "held_nbytes_per_rank": held.astype(int).tolist(),
        "peak_held_nbytes": int(held.max(initial=0)),
        "lag_of": spec.strategy.lag_subject,  # what the lags below are the lag of
        "mean_lag_steps": float(copy_lag.mean()),
        "max_lag_steps": int(max(lag_kept.max(initial=0), lag_dropped.max(initial=0))),
        "score_weighted_mean_lag_steps": float(lag_score[..., 0].sum() / max(lag_score[..., 1].sum(), 1e-30)),
        "lag_kept_steps": lag_kept.tolist(),
        "lag_dropped_steps": lag_dropped.tolist(),
        "clock_alignment": outcome.clock_method,
    }
    if all(r.memory for r in outcome.ranks):  # --measure-memory: measured beside predicted (docs/memory.md)
        out.update(memory_comparison(outcome))
    err = shadow_error(outcome)
    if err is not None:
        out["shadow_rel_l2"] = [[None if np.isnan(v) else float(v) for v in row] for row in err]
        out["shadow_rel_l2_mean"] = float(np.nanmean(err)) if np.isfinite(err).any() else None
        out["shadow_rel_l2_max"] = float(np.nanmax(err)) if np.isfinite(err).any() else None
    return out


def _floats(a: np.ndarray) -> list[float]:
    return [round(float(v), 9) for v in a]


def trace_stem(outcome: RunOutcome) -> str:
    spec = outcome.spec
    raw = f"validate-{spec.preset.name}-{spec.strategy.name}-w{outcome.world_size}-{outcome.backend}"
    return re.sub(r"[^A-Za-z0-9_.@+-]+", "_", raw).strip("._") or "validate"


def write_run_trace(outcome: RunOutcome, out_dir: str | Path, stem: str | None = None,
                    extra: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write every rank's events (one clock) plus calibration side tables into ``out_dir``.

    ``meta.extra`` carries the router histogram (copies per expert, per rank, step and layer),
    the placement, received rows per (layer, tok_step) and the held bytes per rank and step,
    plus ``extra`` (e.g. the host-staged mode's emulated ranks).
    """
    spec = outcome.spec
    df = events_frame({r.rank: r.trace_rows for r in outcome.ranks}, outcome.clock_offsets_ns)
    placement = spec.placement(outcome.world_size)
    extra = {
        "router_hist_axes": ["rank", "step", "layer", "expert"],
        "router_hist": [r.record.router_hist.tolist() for r in outcome.ranks],
        "placement": placement.describe(),
        "ep_groups": [list(g) for g in placement.groups()],
        "recv_rows": [{f"{l}:{s}": n for (l, s), n in sorted(r.record.recv_rows.items())} for r in outcome.ranks],
        "held_nbytes_per_rank": [r.record.held_total_nbytes for r in outcome.ranks],
        "clock_alignment": outcome.clock_method,
        "summary": {k: v for k, v in summarize(outcome).items() if not k.startswith(("lag_", "shadow_rel_l2"))},
        **(extra or {}),
    }
    meta = trace_meta(strategy=spec.strategy.name, world_size=outcome.world_size, model=spec.preset.name,
                      backend=outcome.backend, device=outcome.ranks[0].device,
                      scenario=spec.scenario(outcome.world_size, outcome.backend), extra=extra)
    return write_trace(df, meta, out_dir, stem or trace_stem(outcome))
