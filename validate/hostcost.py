"""What the host does per op of the executor's eager code: measured on CPU with tiny tensors.

With tensors of a few rows, an op's kernels take microseconds on CPU and what is left is the
host's own work: the Python around the op, PyTorch's dispatcher and one kernel call per launch.
This module measures that, on this CPU, for two sets of calls:

- ``bench``: the ops of the op-level GPU timings (:mod:`validate.model.blockops`, the code behind
  ``traces/gpu/h100``, ``traces/gpu/h200``), with one and two local experts;
- ``executor``: every host op kind of the executor (:data:`dicesim.sim.costs.host.HOST_OP_KINDS`),
  timed inside a real one-rank run (gloo, ``run_rank``): the action handlers, and inside the
  synchronous exchange its count exchange (``DispatcherBase.layout``), dispatch, experts
  (``ExpertBank.forward_rows``) and combine (the handler's remainder: combine, un-permute and the
  exchange's own Python); the experts' cost per local expert from ``forward_rows`` on 1..8 experts.

It also counts, per op, the kernel launches (ATen calls that do work: views excluded), the trace
marks (``RankTracer.mark``: a CUDA event created and recorded on GPU, the host clock on CPU) and the
*syncs*: the calls that read a GPU value on the host on CUDA (``.tolist()``, ``.item()`` /
``int()`` / ``float()``, ``.cpu()``, ATen ops that size their output from data on CUDA:
``bincount``, ``repeat_interleave`` with tensor repeats, ``nonzero``, ..., and ``torch.tensor(data,
device=...)``, a copy from pageable host memory that syncs the stream first). On CPU none of them
waits, so they are counted here and played by the simulator's host model.

Host time is this thread's CPU time (``time.thread_time``), the ``QUANTILE`` of many interleaved
calls: on a shared machine neither other processes' time slices nor the odd disturbed call count.
(Work other threads do for a call, gloo's for its collectives, is not counted: a GPU's collectives
are launched by the calling thread, counted as launches.) ``dicesim.calibrate.fit_host`` maps these CPU figures onto
a GPU machine's host with the op-level eager timings. ``python benchmarks/host_costs.py`` writes
``traces/host/cpu-executor.toml``. The probe model is ``tiny`` (hidden 32) with 8 experts (and 2, 4
for the per-expert cost): the host's work per op does not depend on the hidden size, only on how
many kernels and experts it issues.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import platform
import time
from collections import defaultdict
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch.utils._python_dispatch import TorchDispatchMode

from dicesim.models import get_model
from dicesim.strategy import make_strategy
from validate.executor import dispatcher as _disp
from validate.executor import interpreter as _interp
from validate.executor import tracing as _tracing
from validate.executor.worker import GroupCache, RunSpec, run_rank
from validate.model import experts as _experts
from validate.model.blockops import BLOCK_OPS, block_ops, experts_per_rank
from validate.model.model import DiTMoEBlock

QUANTILE = 0.1
#: this thread's CPU time: other processes on a shared machine do not count (wall time would)
_clock = time.thread_time
#: the probe: ``tiny`` (hidden 32) at 32 px, 8 tokens with CFG: its kernels are next to free on CPU
PROBE_MODEL, PROBE_PX = "tiny", 32
#: ATen ops that only make views (no kernel)
VIEW_OPS = frozenset({
    "view", "_unsafe_view", "t", "transpose", "expand", "expand_as", "unsqueeze", "reshape", "slice", "split",
    "split_with_sizes", "chunk", "select", "as_strided", "permute", "squeeze", "alias", "detach", "unbind",
    "_reshape_alias", "view_as", "resolve_conj", "resolve_neg", "lift_fresh", "empty", "empty_like", "new_empty",
    "empty_strided", "_local_scalar_dense"})
#: ATen ops that read a device value on the host on CUDA (output sized from data, or a scalar read)
SYNC_OPS = frozenset({"_local_scalar_dense", "bincount", "nonzero", "masked_select", "unique", "_unique2",
                      "repeat_interleave"})
#: ATen ops that, on CUDA, run more than one kernel and read the device more than once: (kernels, syncs) per
#: call. ``bincount`` reads ``self.min()`` and then ``self.max()`` back to the host to size its histogram,
#: then zero-fills it and runs the histogram kernel (PyTorch ``aten/src/ATen/native/cuda/SummaryOps.cu``,
#: ``_bincount_cuda_template``); on CPU the dispatcher shows one call.
CUDA_EXPANDS = {"bincount": (4, 2)}
#: Tensor methods that copy a device value to the host (on CPU they do not dispatch)
SYNC_METHODS = ("tolist", "cpu")
#: executor action handler -> host op kind (the synchronous exchange is split by its parts)
HANDLER_KINDS = {"embed": "embed", "attention": "attention", "gate": "gate", "shared_expert": "shared_expert",
                 "local_combine": "local_combine", "final": "final", "sync_moe": "exchange", "local_moe": "local_moe"}
#: the probe's own work inside the executor (counting the experts that have rows): kept out of every op
BOOKKEEPING = "probe_bookkeeping"
_MISSING = object()


class _Probe:
    """Times and counts the calls of named kinds; nested kinds are subtracted from their parent."""

    def __init__(self):
        self.times: dict[str, list[float]] = defaultdict(list)
        self.launches: dict[str, int] = defaultdict(int)
        self.syncs: dict[str, int] = defaultdict(int)
        self.calls: dict[str, int] = defaultdict(int)
        self.experts_with_rows: list[int] = []  # per forward_rows call, in call order
        self.launch_log: dict[str, list[int]] = defaultdict(list)  # launches of each finished call
        self.events: dict[str, int] = defaultdict(int)  # the tracer's marks: a recorded CUDA event each on GPU
        self._stack: list[list] = []  # [kind, child seconds]

    @property
    def kind(self) -> str | None:
        return self._stack[-1][0] if self._stack else None

    def wrap(self, kind: str, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            self._stack.append([kind, 0.0])
            before = self.launches[kind]
            t0 = _clock()
            try:
                return fn(*args, **kwargs)
            finally:
                dt = _clock() - t0
                _, child = self._stack.pop()
                self.times[kind].append(dt - child)
                self.calls[kind] += 1
                self.launch_log[kind].append(self.launches[kind] - before)
                if self._stack:
                    self._stack[-1][1] += dt
        return timed


class _Counter(TorchDispatchMode):
    """Counts kernel launches and syncs of every ATen call, charged to the probe's current kind."""

    def __init__(self, probe: _Probe):
        super().__init__()
        self.probe = probe

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kind, name = self.probe.kind, func.overloadpacket.__name__
        kwargs = kwargs or {}
        if kind is not None:
            kernels, syncs = CUDA_EXPANDS.get(name, (int(name not in VIEW_OPS), int(name in SYNC_OPS)))
            self.probe.launches[kind] += kernels
            if syncs and (name != "repeat_interleave" or _sized_from_data(func, args, kwargs)):
                self.probe.syncs[kind] += syncs
        return func(*args, **kwargs)


def _sized_from_data(func, args: tuple, kwargs: dict) -> bool:
    """A ``repeat_interleave`` whose output size comes from tensor repeats (int repeats never sync)."""
    if func._overloadname not in ("Tensor", "self_Tensor"):
        return False
    size = kwargs.get("output_size", args[3] if func._overloadname == "self_Tensor" and len(args) > 3 else None)
    return size is None


@contextlib.contextmanager
def _patched(probe: _Probe, *, count: bool) -> Iterator[None]:
    """Route the executor's calls through ``probe`` (and count them), restored on exit."""
    saved: list[tuple[object, str, object]] = []

    def patch(owner: object, name: str, new: object) -> None:
        saved.append((owner, name, owner.__dict__.get(name, _MISSING)))
        setattr(owner, name, new)

    init = _interp.PlanInterpreter.__init__

    def probed_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self._handlers = {k: probe.wrap(HANDLER_KINDS.get(str(k), str(k)), h) for k, h in self._handlers.items()}

    patch(_interp.PlanInterpreter, "__init__", probed_init)
    base = _disp.DispatcherBase
    for name, kind in (("layout", "count_exchange"), ("dispatch", "dispatch"), ("combine", "combine")):
        patch(base, name, probe.wrap(kind, base.__dict__[name]))
    patch(base, "unpermute", staticmethod(probe.wrap("unpermute", base.__dict__["unpermute"].__func__)))
    timed_rows = probe.wrap("experts", _experts.ExpertBank.forward_rows)
    # the probe's own bookkeeping is a kind of its own, so its time, launches and syncs are not the caller's
    experts_with_rows = probe.wrap(BOOKKEEPING, lambda ids_R: int(torch.unique(ids_R).numel()))

    def forward_rows(bank, rows_RD, expert_ids_R):
        probe.experts_with_rows.append(experts_with_rows(expert_ids_R) if rows_RD.shape[0] else 0)
        return timed_rows(bank, rows_RD, expert_ids_R)

    patch(_experts.ExpertBank, "forward_rows", forward_rows)
    if count:
        mark = _tracing.RankTracer.mark

        def counted_mark(tracer):
            if probe.kind is not None:
                probe.events[probe.kind] += 1
            return mark(tracer)

        patch(_tracing.RankTracer, "mark", counted_mark)
        patch(torch, "tensor", _counting_to_device(probe, torch.tensor))
    if count:
        for meth in SYNC_METHODS:
            patch(torch.Tensor, meth, _counting(probe, getattr(torch.Tensor, meth)))
    try:
        if count:
            with _Counter(probe):
                yield
        else:
            yield
    finally:
        for owner, name, old in reversed(saved):
            if old is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, old)


def _counting_to_device(probe: _Probe, make: Callable) -> Callable:
    """``torch.tensor(data, device=...)``: Python data to the compute device; on GPU a copy from pageable
    host memory, which syncs the stream before it starts (CUDA runtime API, "API synchronization behavior")."""
    def counted(*args, **kwargs):
        if probe.kind is not None and kwargs.get("device") is not None:
            probe.syncs[probe.kind] += 1
        return make(*args, **kwargs)
    return counted


def _counting(probe: _Probe, method: Callable) -> Callable:
    def counted(self, *args, **kwargs):
        if probe.kind is not None:
            probe.syncs[probe.kind] += 1
        return method(self, *args, **kwargs)
    return counted


def _q(values: list[float]) -> float:
    return float(np.quantile(np.asarray(values), QUANTILE))


def _one_rank_group() -> None:
    if not dist.is_initialized():
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)


def _run(probe: _Probe, *, strategy: str, steps: int, count: bool, num_experts: int = 8) -> None:
    spec = RunSpec(strategy=make_strategy(strategy), model=PROBE_MODEL, num_experts=num_experts, steps=steps,
                   batch=1, image_size=PROBE_PX)
    with _patched(probe, count=count):
        run_rank(spec, rank=0, world_size=1, device=torch.device("cpu"), groups=GroupCache())


def _per_call(probe: _Probe, kind: str) -> np.ndarray:
    return np.array(probe.launch_log[kind], dtype=float)


STRATEGIES = ("sync", "data_parallel")


def executor_counts() -> dict[str, dict[str, float]]:
    """Per executor host op kind (the experts op excepted): launches, syncs and trace marks per call,
    counted over one step of each of :data:`STRATEGIES` (deterministic: no timing)."""
    _one_rank_group()
    counted = _Probe()
    for strategy in STRATEGIES:
        _run(counted, strategy=strategy, steps=1, count=True)
    return {kind: {"launches": counted.launches[kind] / n, "syncs": counted.syncs[kind] / n,
                   "events": counted.events[kind] / n}
            for kind, n in sorted(counted.calls.items()) if kind not in ("experts", BOOKKEEPING)}


def measure_executor(*, steps: int) -> dict:
    """Per executor host op kind: host seconds (quantile) and :func:`executor_counts`."""
    _one_rank_group()
    timed = _Probe()
    for strategy in STRATEGIES:
        _run(timed, strategy=strategy, steps=steps, count=False)
    counts = executor_counts()
    # the experts op is measured on its own, per local expert: measure_experts
    return {kind: {"host_s": _q(timed.times[kind]), "calls": timed.calls[kind], **counts[kind]} for kind in counts}


def measure_experts(*, steps: int, local: tuple[int, ...] = (2, 4, 8)) -> dict:
    """The experts op inside real runs: one rank holding 2, 4 and 8 experts; host time per call against
    the experts that had rows, fitted as fixed + per expert (least squares on the per-count quantiles)."""
    _one_rank_group()
    timed, counted = _Probe(), _Probe()
    for E in local:
        _run(timed, strategy="sync", steps=steps, count=False, num_experts=E)
        _run(counted, strategy="sync", steps=1, count=True, num_experts=E)
    n_R, t_R = np.array(timed.experts_with_rows), np.array(timed.times["experts"])
    counts = sorted({int(n) for n in n_R if n > 0 and (n_R == n).sum() >= 10})
    if len(counts) < 2:
        raise RuntimeError(f"too few distinct expert counts with rows to fit a per-expert cost: {counts}")
    q_C = np.array([_q(list(t_R[n_R == n])) for n in counts])
    A = np.stack([np.ones(len(counts)), np.array(counts, dtype=float)], axis=1)
    (a, b), *_ = np.linalg.lstsq(A, q_C, rcond=None)
    # launches per call against the experts with rows of that call
    n_C = np.array(counted.experts_with_rows, dtype=float)
    per_call = _per_call(counted, "experts")
    (la, lb), *_ = np.linalg.lstsq(np.stack([np.ones(len(n_C)), n_C], axis=1), per_call, rcond=None)
    return {"host_s": float(max(a, 0.0)), "per_expert_s": float(max(b, 0.0)), "launches": float(round(la, 3)),
            "launches_per_expert": float(round(lb, 3)), "syncs": counted.syncs["experts"] / counted.calls["experts"],
            "events": counted.events["experts"] / counted.calls["experts"],
            "experts_with_rows": counts, "host_s_by_count": [float(q) for q in q_C]}


def measure_bench(*, reps: int) -> dict:
    """The op-level GPU timings' ops (one and two local experts) on tiny CPU tensors."""
    out = {}
    for X, experts in ((1, 8), (2, 16)):
        preset = get_model(PROBE_MODEL, experts)
        block = DiTMoEBlock(preset, 0, expert_ids=tuple(range(experts_per_rank(preset, 8)))).eval()
        ops = block_ops(preset, block, batch=1, image_px=PROBE_PX, ep_world=8, device=torch.device("cpu"),
                        dtype=torch.float32, seed=0)
        names = BLOCK_OPS if X == 1 else ("experts",)
        times: dict[str, list[float]] = defaultdict(list)
        probe = _Probe()
        with torch.inference_mode():
            with _Counter(probe):
                for name in names:
                    probe.wrap(name, ops[name].fn)()
            for _ in range(reps):  # interleaved: a disturbance hits every op alike
                for name in names:
                    t0 = _clock()
                    ops[name].fn()
                    times[name].append(_clock() - t0)
        for name in names:
            key = f"experts_{X}" if name == "experts" else name
            out[key] = {"host_s": _q(times[name]), "launches": probe.launches[name], "syncs": probe.syncs[name],
                        "local_experts": X if name == "experts" else 0}
    return out


def measure(*, steps: int = 30, reps: int = 300, rounds: int = 5) -> dict:
    """Everything :mod:`dicesim.calibrate.fit_host` reads, with where it was measured.

    A shared machine changes speed between minutes (other processes' caches, clocks), so each round
    times the op-level ops and the executor back to back, and every executor figure is taken relative
    to that round's op-level ops: the median over rounds of that ratio, times the median op-level
    figure, is what is written (what fit_host compares is the ratio, which a slow round keeps).
    """
    torch.set_num_threads(1)
    meta = {"device": "cpu", "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
            "python": platform.python_version(), "date": _dt.date.today().isoformat(), "quantile": QUANTILE,
            "steps": steps, "reps": reps, "rounds": rounds,
            "model": f"{PROBE_MODEL} (hidden 32), batch 1, {PROBE_PX} px (8 tokens with CFG), one gloo rank"}
    runs = [{"bench": measure_bench(reps=reps), "executor": measure_executor(steps=steps),
             "experts": measure_experts(steps=steps)} for _ in range(rounds)]
    return {"schema": "dicesim-host-costs/1", "meta": meta, **_combine_rounds(runs)}


_TIMES = ("host_s", "per_expert_s")


def _combine_rounds(runs: list[dict]) -> dict:
    """Op-level figures: the median over rounds; executor figures: the median of their ratio to the
    round's op-level total, times the median total (counts are the same in every round)."""
    scale_R = np.array([sum(row["host_s"] for row in r["bench"].values()) for r in runs])
    scale = float(np.median(scale_R))

    def combined(rows: list[dict], relative: bool) -> dict:
        out = dict(rows[0])
        for key in _TIMES:
            if key in out:
                v_R = np.array([row[key] for row in rows])
                out[key] = float(np.median(v_R / scale_R) * scale) if relative else float(np.median(v_R))
        return out

    return {"bench": {k: combined([r["bench"][k] for r in runs], False) for k in runs[0]["bench"]},
            "executor": {k: combined([r["executor"][k] for r in runs], True) for k in runs[0]["executor"]},
            "experts": combined([r["experts"] for r in runs], True)}
