"""The host model of an eager executor, fitted on the op-level GPU timings and on CPU runs.

Three steps, each on data the simulator never predicts (the whole-step executor run on a GPU is
held out: docs/calibration.md):

1. **Host time of the timed ops on the GPU machine.** The op-level traces hold each op twice: eager
   (``compute``: CUDA events around back-to-back calls) and replayed from a CUDA graph
   (``compute:graph``: device time alone). Back to back, an eager op takes
   ``max(host, device)``: the host issues the next op while the GPU runs this one, until one of
   them falls behind. Per op kind (and per local expert count for ``experts``) the host time ``H``
   is the one value that makes ``max(H, graph time)`` closest to the eager time over all sizes
   (least squares on the log ratio): small batches, where the GPU waits for the host, set it;
   large ones, where the host waits for the GPU, only bound it.
2. **From this CPU to that host.** The same ops, timed on CPU with tiny tensors
   (``traces/host/cpu-executor.toml``, :mod:`validate.hostcost`), cost ``H_cpu``: the Python and
   dispatcher work, no GPU. On the GPU machine each op costs that work at another CPU's speed
   plus a CUDA launch per kernel: ``H = rho * H_cpu + tau * launches``, ``rho`` and ``tau`` by
   non-negative least squares on relative error over the timed ops.
3. **The executor's ops.** The CPU file also holds every host op kind of the executor (its action
   handlers and exchange steps, their launches and syncs, the experts' cost per local expert);
   each maps through the same ``rho``, ``tau``. What the GPU adds to the Python the CPU measured
   is counted in launches' ``tau``: a sync costs one (a driver round trip and a small copy), a trace
   mark two (on GPU the executor's tracer creates and records a CUDA event where the CPU reads a
   clock). Both are assumptions: the timings hold no sync or event to fit them on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dicesim.calibrate.fit_compute import STALL_FACTOR
from dicesim.calibrate.lsq import robust_nnls
from dicesim.errors import ConfigError, config_error_from_pydantic
from dicesim.sim.costs.host import HOST_OP_KINDS, HostModel
from dicesim.tomlio import read_toml

DEFAULT_HOST_COSTS = Path("traces/host/cpu-executor.toml")
#: driver calls of one trace mark on GPU (a CUDA event created, then recorded), in launches
EVENT_LAUNCHES = 2
#: the timed ops of the op-level traces, by (kind, local experts) -> their key in the CPU file
BENCH_KEYS = {("attention", 0): "attention", ("gate", 0): "gate", ("shared_expert", 0): "shared_expert",
              ("local_combine", 0): "local_combine", ("experts", 1): "experts_1", ("experts", 2): "experts_2"}
#: executor host op kind -> the CPU file's entries that add up to it
EXECUTOR_PARTS = {"embed": ("embed",), "attention": ("attention",), "gate": ("gate",),
                  "count_exchange": ("count_exchange",), "dispatch": ("dispatch",),
                  "combine": ("combine", "unpermute", "exchange"), "shared_expert": ("shared_expert",),
                  "local_combine": ("local_combine",), "final": ("final",), "local_moe": ("local_moe",)}


class HostCostRow(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    host_s: float = Field(ge=0, le=1)
    launches: float = Field(ge=0, le=10_000)
    syncs: float = Field(0.0, ge=0, le=1_000)
    events: float = Field(0.0, ge=0, le=1_000)  # trace marks: a CUDA event created and recorded each on GPU


class ExpertsRow(HostCostRow):
    per_expert_s: float = Field(ge=0, le=1)
    launches_per_expert: float = Field(ge=0, le=10_000)


class HostFile(BaseModel):
    """What every host-cost file holds besides its rows: where and how it was measured (``meta``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    meta: dict[str, str | float | int]


class HostCosts(HostFile):
    """``traces/host/cpu-executor.toml``: the executor's host costs measured on CPU (:mod:`validate.hostcost`)."""

    schema_: Literal["dicesim-host-costs/1"] = Field(alias="schema")
    bench: dict[str, HostCostRow]
    executor: dict[str, HostCostRow]
    experts: ExpertsRow


def load_host_costs(path: str | Path = DEFAULT_HOST_COSTS) -> HostCosts:
    """Read and validate a host-cost file (one-line error naming the field otherwise)."""
    data = read_toml(path, what="host costs", error=lambda problem: ConfigError("host_costs", f"{path}: {problem}"))
    try:
        costs = HostCosts(**data)
    except ValidationError as exc:
        raise config_error_from_pydantic(exc, prefix=f"host_costs ({path})") from None
    missing = sorted({k for parts in EXECUTOR_PARTS.values() for k in parts} - set(costs.executor)) + sorted(
        set(BENCH_KEYS.values()) - set(costs.bench))
    if missing:
        raise ConfigError("host_costs", f"{path}: no entry for {', '.join(missing)}")
    return costs


@dataclass(frozen=True)
class HostFit:
    """The fitted host model and how well each step fitted."""

    model: HostModel
    rho: float  # GPU machine's host seconds per second of this CPU's Python work
    tau_s: float  # CUDA launch cost per kernel on the GPU machine
    gpu_host_s: dict[str, float]  # step 1: host time per timed op (key as in the CPU file)
    transfer_err: dict[str, float]  # step 2: relative error of rho * H_cpu + tau * launches per timed op
    eager_err_median: float  # step 1: median |relative error| of max(H, graph) against eager, all sizes
    per_launch_s: float = 0.0  # cross-check without the CPU: step-1 host time per counted launch (least squares)
    expert_per_launch_s: float = 0.0  # the experts' cost per local expert on that basis: launches x per_launch_s


def _per_trace_means(samples: pd.DataFrame) -> pd.DataFrame:
    """Mean time per (trace, kind), absurd stalls dropped (as :func:`~dicesim.calibrate.fit_compute.config_means`)."""
    df = samples.assign(t_s=(samples["op_s"] + samples["gap_s"]).to_numpy())
    med = df.groupby(["trace", "kind"])["t_s"].transform("median")
    return df[df["t_s"] <= STALL_FACTOR * med].groupby(["trace", "kind"], as_index=False)["t_s"].mean()


def _host_time(eager: np.ndarray, device: np.ndarray) -> tuple[float, np.ndarray]:
    """The ``H`` minimising ``sum(log(eager / max(H, device))^2)``; and the relative errors at it."""
    cands = np.unique(np.concatenate([eager, np.geomspace(max(eager.min(), 1e-9) * 1e-2, eager.max(), 400)]))
    sse = [(np.log(eager / np.maximum(h, device)) ** 2).sum() for h in cands]
    h = float(cands[int(np.argmin(sse))])
    return h, np.maximum(h, device) / eager - 1.0


def gpu_host_times(eager: pd.DataFrame, graph: pd.DataFrame, local_experts: dict[str, int]) -> tuple[dict, list]:
    """Step 1: host seconds per timed op from eager and graph samples of the same traces."""
    e, g = _per_trace_means(eager), _per_trace_means(graph)
    both = e.merge(g, on=["trace", "kind"], suffixes=("_eager", "_graph"))
    if both.empty:
        raise ConfigError("host_costs", "the traces hold no op timed both eager and from a CUDA graph")
    both["local"] = [local_experts[t] if k == "experts" else 0 for t, k in zip(both["trace"], both["kind"])]
    out, errs = {}, []
    for (kind, local), rows in both.groupby(["kind", "local"]):
        key = BENCH_KEYS.get((kind, local))
        if key is None:
            continue
        h, err = _host_time(rows["t_s_eager"].to_numpy(), rows["t_s_graph"].to_numpy())
        out[key] = h
        errs += list(np.abs(err))
    return out, errs


def fit_host(eager: pd.DataFrame, graph: pd.DataFrame, local_experts: dict[str, int], costs: HostCosts, *,
             code: str = "validate/ executor, eager") -> HostFit:
    """Steps 1-3 (module docstring): the host model of the executor on the GPU machine of the traces."""
    gpu, errs = gpu_host_times(eager, graph, local_experts)
    keys = [k for k in BENCH_KEYS.values() if k in gpu]
    if len(keys) < 3:
        raise ConfigError("host_costs", f"only {len(keys)} timed ops to fit the host on; need 3 or more")
    y = np.array([gpu[k] for k in keys])
    X = np.array([[costs.bench[k].host_s, costs.bench[k].launches] for k in keys])
    rho, tau = robust_nnls(X, y, relative=True, l1=False)
    pred = X @ np.array([rho, tau])
    transfer_err = {k: float(p / v - 1.0) for k, p, v in zip(keys, pred, y)}

    def on_gpu(r: HostCostRow) -> float:
        return rho * r.host_s + tau * (r.launches + EVENT_LAUNCHES * r.events)

    op_s, syncs = {}, {}
    for kind, parts in EXECUTOR_PARTS.items():
        rows = [costs.executor[p] for p in parts]
        op_s[kind] = sum(on_gpu(r) for r in rows)
        syncs[kind] = int(round(sum(r.syncs for r in rows)))
    ex = costs.experts
    op_s["experts"] = on_gpu(ex)
    syncs["experts"] = int(round(ex.syncs))
    model = HostModel(code=code, op_s={k: op_s[k] for k in HOST_OP_KINDS},
                      expert_s=rho * ex.per_expert_s + tau * ex.launches_per_expert,
                      syncs={k: n for k, n in syncs.items() if n}, sync_s=tau)
    # the same structure costed on the GPU machine alone: every counted launch at the all-in host cost per launch
    # (Python, dispatcher, CUDA launch) of the timed ops; a check on the CPU mapping, not used by the model
    n = X[:, 1]
    per_launch = float(n @ y / (n @ n))
    return HostFit(model=model, rho=float(rho), tau_s=float(tau), gpu_host_s=gpu, transfer_err=transfer_err,
                   eager_err_median=float(np.median(errs)) if errs else 0.0, per_launch_s=per_launch,
                   expert_per_launch_s=per_launch * ex.launches_per_expert)
