"""What the accuracy commands measured, and the error band a prediction inherits from it.

``dicesim accuracy --published`` (collective level: published GPU collectives per hardware
family, held out from the NCCL-model fit; a step level when published whole steps are
predicted) and ``dicesim accuracy TRACES`` (CPU executor runs held out from a calibration)
write their held-out errors to one file, ``dicesim/data/accuracy.toml`` for the built-in
figures (``--write-accuracy``). Nothing here types an error figure in: a rerun of those
commands moves every band.

A prediction's :class:`ErrorBand` is built from that file (:func:`band_for`):

- when a **step level** exists for the machine's family, the step latency carries that
  family's largest held-out step error, ``step * (1 +/- max)``;
- otherwise only the **communication** is measured: a collective error ``e`` (the family's
  largest held-out error) can move the step by at most ``e`` times the communication in
  flight per step upwards, and downwards by at most that much and never below the step
  without its exposed communication. The band then says the whole-step error is unmeasured;
- a run with no collective at all (data parallelism) has nothing a collective error can move:
  its communication-only band is the point, and it says the whole-step error is unmeasured;
- without a measured family either, the band is the point itself and says so.

Bands of two strategies on one machine share their errors (the same links and the same
profile); their overlap is a conservative test of whether an order is resolved
(docs/trust.md).
"""

from __future__ import annotations

import datetime as _dt
import functools
from importlib import resources
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Optional

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dicesim.atomic import write_text_atomic
from dicesim.errors import ConfigError, config_error_from_pydantic
from dicesim.tomlio import read_toml

EVIDENCE_SCHEMA = "dicesim-accuracy/1"
#: the levels an accuracy command may write (``collective`` and ``step``: published GPU data;
#: ``cpu``: the executor's own CPU runs)
LEVELS: tuple[str, ...] = ("collective", "step", "cpu")
#: what a parameter's value rests on (the assumptions list of every prediction)
STATUSES: tuple[str, ...] = ("measured", "fitted", "cited", "assumed")
Status = Literal["measured", "fitted", "cited", "assumed"]


class ErrorStats(BaseModel):
    """Held-out absolute relative errors of one group of predictions."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    held_out: int = Field(ge=0)
    median_abs_err: float = Field(ge=0)
    max_abs_err: float = Field(ge=0)


class Level(ErrorStats):
    """One level of evidence: its overall held-out errors, per family, and the command that wrote it."""

    command: str
    date: str
    families: dict[str, ErrorStats] = Field(default_factory=dict)


class Evidence(BaseModel):
    """The accuracy file: one optional table per level."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    schema_: Literal["dicesim-accuracy/1"] = Field(EVIDENCE_SCHEMA, alias="schema")
    collective: Optional[Level] = None
    step: Optional[Level] = None
    cpu: Optional[Level] = None


class ErrorBand(BaseModel):
    """The range a predicted step latency is trusted to within, and what it rests on."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    low_s: float = Field(ge=0)
    high_s: float = Field(ge=0)
    #: what the band covers: the whole step (a measured step level), the communication only, or nothing
    covers: Literal["step", "communication", "none"]
    #: hardware family whose held-out figures the band uses (None: no measured family)
    family: Optional[str] = None
    comm_median_err: Optional[float] = None
    comm_max_err: Optional[float] = None
    step_median_err: Optional[float] = None
    step_max_err: Optional[float] = None
    #: the compute profile: fitted on measurements, or datasheet figures and stated assumptions
    compute_basis: Literal["measured", "datasheet"]
    profile: str = ""
    #: the band in one sentence, as every output prints it
    statement: str = ""

    def overlaps(self, other: "ErrorBand") -> bool:
        return self.low_s <= other.high_s and other.low_s <= self.high_s


class Assumption(BaseModel):
    """One parameter a prediction rests on, where its value comes from and how it is known."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    parameter: str
    value: str
    status: Status
    source: str
    #: it sits on the run's bottleneck (the busiest links, or the compute of a compute-bound run)
    on_bottleneck: bool = False


def _builtin_path():
    return resources.files("dicesim") / "data" / "accuracy.toml"


def evidence_from_dict(doc: dict, origin: str = "accuracy file") -> Evidence:
    try:
        return Evidence(**doc)
    except ValidationError as exc:
        raise config_error_from_pydantic(exc, origin) from None


def builtin_evidence() -> Evidence:
    """The built-in accuracy file (an absent one is no evidence)."""
    f = _builtin_path()
    if not f.is_file():
        return Evidence()
    return _evidence_from_text(f.read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=4)
def _evidence_from_text(text: str) -> Evidence:
    # keyed by the file's content (a pure function of it; Evidence is frozen): every run's trust
    # assessment reads the built-in file
    import tomllib

    return evidence_from_dict(tomllib.loads(text), "built-in accuracy.toml")


def read_evidence(path: str | Path) -> Evidence:
    """The accuracy file at ``path`` as it is (a file not there yet is no evidence)."""
    p = Path(path)
    return evidence_from_dict(read_toml(p, what="accuracy file"), p.name) if p.exists() else Evidence()


def load_evidence(path: str | Path | None = None) -> Evidence:
    """What error bands read: the built-in file, with each level that the file at ``path`` holds in place
    of the built-in one (your own measurements replace the built-in ones, level by level)."""
    base = builtin_evidence()
    if path is None:
        return base
    if not Path(path).is_file():
        raise ConfigError("--accuracy", f"{path}: file not found",
                          "a file written by `dicesim accuracy ... --write-accuracy FILE`")
    mine = read_evidence(path)
    return base.model_copy(update={k: getattr(mine, k) for k in LEVELS if getattr(mine, k) is not None})


def record_level(path: str | Path, name: str, level: Level) -> Path:
    """Replace level ``name`` of the accuracy file at ``path`` (the others are kept), atomically."""
    if name not in LEVELS:
        raise ConfigError("level", f"unknown level {name!r}", LEVELS)
    old = read_evidence(path)
    new = old.model_copy(update={name: level})
    doc = new.model_dump(mode="json", by_alias=True, exclude_none=True)
    head = ("# Held-out prediction errors written by `dicesim accuracy ... --write-accuracy`; error bands read them\n"
            "# (dicesim/evidence.py, docs/trust.md). Rerun the commands named in each table to update.\n")
    return write_text_atomic(head + tomli_w.dumps(doc), Path(path))


def make_level(stats: dict, families: dict[str, dict], *, command: str) -> Level:
    """A :class:`Level` from summary numbers (``held_out``, ``median_abs_err``, ``max_abs_err``) and
    per-family ones, dated today."""
    keep = ("held_out", "median_abs_err", "max_abs_err")
    return Level(**{k: stats[k] for k in keep}, command=command, date=_dt.date.today().isoformat(),
                 families={f: ErrorStats(**{k: v[k] for k in keep}) for f, v in families.items()})


def band_for(*, step_s: float, comm_busy_step_s: float, exposed_step_s: float, families: tuple[str, ...],
             evidence: Evidence, compute_basis: Literal["measured", "datasheet"], profile: str = "",
             cpu: bool = False, stand_in: Mapping[str, str] | None = None) -> ErrorBand:
    """The error band of one predicted step (see the module docstring). ``families``: the hardware
    families the run's collectives cross (the largest error of those measured counts); ``stand_in``: a
    measured family whose errors are used for one the evidence lacks (named in the statement); ``cpu``:
    the run is a CPU executor configuration, whose whole-step errors the ``cpu`` level measured."""
    step_level = evidence.cpu if cpu else evidence.step
    step_fams = _measured(step_level, families, whole=cpu, stand_in=stand_in)
    comm_fams = _measured(evidence.collective, families, stand_in=stand_in)
    comm = max(comm_fams, key=lambda f: f[1].max_abs_err) if comm_fams else None
    common = dict(compute_basis=compute_basis, profile=profile,
                  comm_median_err=comm[1].median_abs_err if comm else None,
                  comm_max_err=comm[1].max_abs_err if comm else None)
    if step_fams:
        fam, st = max(step_fams, key=lambda f: f[1].max_abs_err)
        e = st.max_abs_err
        what = "CPU executor runs" if cpu else f"published {fam} whole steps (dense DiT inference)"
        return ErrorBand(low_s=max(step_s * (1 - e), 0.0), high_s=step_s * (1 + e), covers="step", family=fam,
                         step_median_err=st.median_abs_err, step_max_err=e, **common,
                         statement=f"+/-{e:.0%} on the whole step (held-out {what}: median {st.median_abs_err:.1%}, "
                                   f"max {e:.1%}, {st.held_out} checks)")
    basis = f"compute profile {profile or '?'}: {compute_basis}"
    if comm_busy_step_s <= 0:  # nothing crosses a link: no collective error can move it
        return ErrorBand(low_s=step_s, high_s=step_s, covers="communication", **common,
                         statement=f"communication only: none to be wrong about (no collective in the run); the "
                                   f"whole-step error is unmeasured ({basis})")
    if comm is None:
        return ErrorBand(low_s=step_s, high_s=step_s, covers="none", **common,
                         statement=f"no band: no held-out measurement of this machine's collectives or whole steps "
                                   f"({', '.join(families) or 'no measured transport'}); {basis}")
    fam, st = comm
    e = st.max_abs_err
    up = e * comm_busy_step_s
    down = min(up, exposed_step_s)
    return ErrorBand(low_s=max(step_s - down, 0.0), high_s=step_s + up, covers="communication", family=fam, **common,
                     statement=f"communication only: +/-{e:.0%} on the collectives (held-out published {fam} "
                               f"collectives: median {st.median_abs_err:.1%}, max {e:.1%}, {st.held_out} figures); "
                               f"the whole-step error is unmeasured for {fam} machines ({basis})")


def _measured(level: Level | None, families: tuple[str, ...], *, whole: bool = False,
              stand_in: Mapping[str, str] | None = None) -> list[tuple[str, ErrorStats]]:
    """The families of ``families`` that ``level`` measured, with their errors (``whole``: the level's
    overall figures stand for every family, as for the CPU runs; ``stand_in``: a measured family used,
    and named, for one the level lacks)."""
    if level is None:
        return []
    if whole:
        return [("cpu", level)] if level.held_out else []
    out = []
    for f in families:
        sub = (stand_in or {}).get(f, "")
        if f in level.families and level.families[f].held_out:
            out.append((f, level.families[f]))
        elif sub in level.families and level.families[sub].held_out:
            out.append((f"{f} (unmeasured; {sub} figures stand in)", level.families[sub]))
    return out
