"""The host of an eager executor: how long it takes to issue each op, and where it waits for the GPU.

An eager PyTorch executor issues every op from Python: the interpreter, PyTorch's dispatcher and
one CUDA launch per kernel, all on one host thread. While the host is ahead, the GPU queue is
full and the host costs nothing; once the host falls behind, the GPU waits for each launch and
the step runs at the host's pace. Where the code reads a GPU value (``.tolist()``, ``.item()``,
``bincount`` on CUDA, a tensor-valued slice bound), the host *syncs*: it waits until the GPU has
drained its queue and only then goes on, so the next ops start from an empty queue.

:class:`HostModel` holds, per host op kind, the host seconds to issue one op and the syncs it
makes before issuing it; the experts op adds a cost per local expert (the executor and the DICE
reference loop over local experts, ``validate/model/experts.py`` ``forward_rows``, reference
``expertpara/ep_fwd.py:206-210``). The engine (:mod:`dicesim.sim.engine.rank`) plays it on each
rank's host clock: an op issued over ``[a, a + H]`` with device time ``D`` starts on the device
when the stream is free and the host has begun it, and ends at ``max(start + D, a + H)``
(its kernels trickle out while the host issues them). A profile without a host model keeps the
older, simpler host: ``host_op_s`` per op launch, paid before the op starts.

How the numbers are obtained (fitted on the op-level GPU traces and on CPU runs of the executor):
:mod:`dicesim.calibrate.fit_host`.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dicesim.limits import physical_problem

#: what the host issues: the compute op kinds of the cost model, and the executor's exchange steps
#: (``local_moe``: the data-parallel handler's own work around its experts, ``validate/executor/runner.py``
#: ``_do_local_moe``: the routed rows, the trace marks, the weighted combine of the copies)
HOST_OP_KINDS: tuple[str, ...] = ("embed", "attention", "gate", "experts", "shared_expert", "local_combine", "final",
                                  "count_exchange", "dispatch", "combine", "local_moe")
HostOpKind = Literal["embed", "attention", "gate", "experts", "shared_expert", "local_combine", "final",
                     "count_exchange", "dispatch", "combine", "local_moe"]
#: the most syncs one op may make (a sanity bound on counted data)
MAX_SYNCS = 64


class HostCost(NamedTuple):
    """How the host issues one op: ``issue_s`` seconds of host work, the first kernel ``first_s``
    seconds after it begins, ``syncs`` drains of the GPU queue before it begins."""

    issue_s: float
    first_s: float
    syncs: int


class HostModel(BaseModel):
    """Host seconds and syncs per op of one eager code path (see the module docstring).

    ``op_s[kind]``: host seconds to issue one op (for ``experts``: the part that does not depend
    on the local expert count); ``expert_s``: host seconds per local expert of the experts op;
    ``syncs[kind]``: device-to-host syncs the host makes before issuing the op (missing: 0);
    ``sync_s``: host seconds of one sync once the GPU has drained; ``code``: which code path the
    figures describe.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    code: str
    op_s: dict[HostOpKind, float]
    expert_s: float = Field(0.0, ge=0)
    syncs: dict[HostOpKind, int] = Field(default_factory=dict)
    sync_s: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _complete(self) -> "HostModel":
        missing = [k for k in HOST_OP_KINDS if k not in self.op_s]
        if missing:
            raise ValueError(f"host.op_s is missing {missing}")
        times = {**{f"host.op_s.{k}": v for k, v in self.op_s.items()}, "host.expert_s": self.expert_s,
                 "host.sync_s": self.sync_s}
        bad = sorted((k, p) for k, v in times.items() if (p := physical_problem("fixed_time_s", v)) is not None)
        if bad:
            raise ValueError(f"{bad[0][0]}: {bad[0][1]}")
        bad = sorted(k for k, n in self.syncs.items() if not 0 <= n <= MAX_SYNCS)
        if bad:
            raise ValueError(f"host.syncs.{bad[0]}: must be in 0..{MAX_SYNCS}")
        return self

    def cost(self, kind: str, experts_on_rank: int = 0) -> HostCost:
        """The host cost of one op of ``kind`` (``experts``: with ``experts_on_rank`` local experts;
        ``local_moe``: the handler's own work and the experts op it runs)."""
        if kind == "local_moe":
            ex = self.cost("experts", experts_on_rank)
            return HostCost(issue_s=self.op_s[kind] + ex.issue_s, first_s=0.0, syncs=self.syncs.get(kind, 0) + ex.syncs)
        issue = self.op_s[kind] + (self.expert_s * experts_on_rank if kind == "experts" else 0.0)
        return HostCost(issue_s=issue, first_s=0.0, syncs=self.syncs.get(kind, 0))


def launch_cost(host_op_s: float) -> HostCost:
    """The older host of a profile without a host model: ``host_op_s`` per launch, paid before the
    op starts, no syncs (the op's first kernel starts once its launch has been paid)."""
    return HostCost(issue_s=host_op_s, first_s=host_op_s, syncs=0)
