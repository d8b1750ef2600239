"""Design-space sweeps: a base scenario x lists of values per axis, evaluated on Dask, resumable.

A sweep file (TOML) holds ``[sweep]`` options, optional ``[base.<section>]`` tables (same
sections as a scenario file, on top of ``sweep.base``, a scenario file) and ``[axes]``: one
list of values per axis. The cartesian product of the axes is the set of configurations.

Each configuration has a stable key (hash of the base scenario and the axis values). Results
are written in chunks, ``<out>/chunks/chunk-<hash>.parquet``, each atomically and as soon as
its chunk finishes, so an interrupted sweep resumes where it stopped: configurations whose
key is already in a chunk are not evaluated again. A configuration the model rejects (say 8
experts on 3 GPUs) is recorded as ``skipped`` with its one-line reason; an unexpected
exception is recorded as ``error`` and retried on the next run.

Execution (:mod:`dicesim.cluster`): ``workers=0`` evaluates in this process (tests,
debugging); otherwise chunks go to a ``dask.distributed`` cluster: a LocalCluster of
``workers`` processes, or the scheduler at ``scheduler`` (workers there need dicesim
installed; results come back to this process, so workers need no shared disk).
:func:`run_points` runs any explicit list of configurations the same way (``dicesim study``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dicesim.atomic import write_parquet_atomic
from dicesim.cluster import map_jobs
from dicesim.progress import NO_PROGRESS, Ticker
from dicesim.compare import METRIC_KEYS, headline_metrics, predicted_quality
from dicesim.content_key import Digests, is_file_reference, scenario_files
from dicesim.errors import ConfigError, DicesimError, config_error_from_pydantic
from dicesim.limits import MAX_SWEEP_POINTS
from dicesim.membudget import plan_workers, points_nbytes
from dicesim.results import RESULT_SCHEMA, rename_legacy_columns
from dicesim.scenario import Scenario, make_scenario, naming_file, relative_to, resolve_paths, scenario_from_dict
from dicesim.sweep_limits import check_axis_values, check_sweep_size
from dicesim.strategy import Strategy, make_strategy, parse_strategy, strategy_names
from dicesim.tomlio import read_toml

# part of every key: bump it when a result's meaning changes (2: cond_gate; 3: keys cover file contents)
SWEEP_FORMAT = "dicesim-sweep/3"
SCENARIO_AXES = ("model", "num_experts", "batch", "image_size", "steps", "cfg", "dtype", "topology",
                 "world_size", "placement", "seed", "profile")
STRATEGY_AXES = ("scheme", "sync_layers", "cond_interval", "cond_policy", "warmup_steps", "cooldown_steps",
                 "sync_every", "stale_weights", "count_comm", "async_work", "cond_scope", "slot_order", "buffer_policy",
                 "cond_gate")
ROUTING_AXES = {"routing": "kind", "zipf_alpha": "alpha", "top1_share": "top1_share"}
#: axes whose values may name files
FILE_AXES = ("topology", "profile")
AXES: tuple[str, ...] = ("strategy",) + SCENARIO_AXES + STRATEGY_AXES + tuple(ROUTING_AXES)
#: columns every sweep table has, before the metrics (descriptors of the configuration)
DESCRIPTOR_COLUMNS: tuple[str, ...] = ("strategy", "model", "topology", "world_size", "batch", "image_size",
                                       "steps", "sync_layers", "cond_interval")
_CHUNK_DIR = "chunks"


class SweepOptions(BaseModel):
    """The ``[sweep]`` table."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: str = "sweep"
    base: Optional[str] = None  # scenario TOML, relative to the sweep file
    chunk_size: int = Field(16, ge=1, le=MAX_SWEEP_POINTS)
    max_lag: Optional[float] = Field(None, ge=0)
    max_latency_ms: Optional[float] = Field(None, gt=0)


@dataclass(frozen=True, kw_only=True)
class SweepSpec:
    """A validated sweep: the base scenario, the axes in file order, and the options."""

    base: Scenario
    axes: dict[str, tuple[Any, ...]]
    options: SweepOptions

    def points(self) -> list[dict[str, Any]]:
        """Every configuration as ``{axis: value}``, in a fixed order (last axis fastest)."""
        names = list(self.axes)
        return [dict(zip(names, combo)) for combo in itertools.product(*(self.axes[n] for n in names))]


@dataclass(frozen=True, kw_only=True)
class SweepOutcome:
    """What one run of :func:`run_sweep` did, and the full result table."""

    table: pd.DataFrame
    n_total: int
    n_cached: int
    n_run: int


def _canonical(value: Any) -> Any:
    """JSON-stable form of an axis value (lists become lists of canonical values)."""
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def config_key(base: Scenario, point: dict[str, Any], digests: Digests | None = None) -> str:
    """Stable 16-hex-digit key of one configuration (same inputs, same key, any machine).

    It covers what the result depends on (:mod:`dicesim.content_key`): the fields, the content
    of every file the configuration reads, the built-in data files and the result-schema
    versions, so a resumed sweep never reuses a result whose inputs changed under the same name.
    """
    digests = digests or Digests()
    fields = {**base.model_dump(mode="json"), **{k: v for k, v in point.items() if k in SCENARIO_AXES}}
    doc = {"format": SWEEP_FORMAT, "result_schema": RESULT_SCHEMA, "base": base.model_dump(mode="json"),
           "point": {k: _canonical(v) for k, v in sorted(point.items())},
           "files": digests.of(scenario_files(fields)), "data": digests.builtin_data()}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def sweep_from_dict(doc: dict, path: Path = Path("<sweep>")) -> SweepSpec:
    """Validate a parsed sweep document; ConfigError names the first bad field."""
    unknown = sorted(set(doc) - {"sweep", "base", "axes"})
    if unknown:
        raise ConfigError(f"{path.name}: [{unknown[0]}]", "unknown section", ("sweep", "base", "axes"))
    if not isinstance(doc.get("sweep", {}), dict):
        raise ConfigError(f"{path.name}: [sweep]", "must be a table of options")
    try:
        options = SweepOptions(**doc.get("sweep", {}))
    except ValidationError as exc:
        raise config_error_from_pydantic(exc, "sweep", model=SweepOptions) from None
    base_doc: dict = {}
    base_path = path
    if options.base:
        base_path = (path.parent / options.base) if path.exists() else Path(options.base)
        # files named in the base scenario are relative to it, those in [base] to the sweep file
        base_doc = resolve_paths(read_toml(base_path, what="sweep.base scenario"), base_path)
    inline = doc.get("base", {})
    if not isinstance(inline, dict):
        raise ConfigError("base", "must be a table of scenario sections")
    base = scenario_from_dict(_merge(base_doc, resolve_paths(inline, path)), base_path)
    raw_axes = doc.get("axes", {})
    if not isinstance(raw_axes, dict) or not raw_axes:
        raise ConfigError("axes", "needs at least one axis with a list of values", AXES)
    axes: dict[str, tuple[Any, ...]] = {}
    for name, values in raw_axes.items():
        if name not in AXES:
            raise ConfigError(f"axes.{name}", "unknown axis", AXES)
        if not isinstance(values, list) or not values:
            raise ConfigError(f"axes.{name}", "must be a non-empty list of values")
        check_axis_values(name, values)
        if name in FILE_AXES:  # files named in the sweep file are relative to it, as in a scenario
            values = [relative_to(path, v) if is_file_reference(v) else v for v in values]
        axes[name] = tuple(tuple(v) if isinstance(v, list) else v for v in values)
    check_sweep_size(axes)
    for preset in axes.get("strategy", ()):
        make_strategy(str(preset))  # unknown preset names fail here, before any work
    return SweepSpec(base=base, axes=axes, options=options)


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate a sweep TOML file."""
    p = Path(path)
    with naming_file(p):
        return sweep_from_dict(read_toml(p, what="sweep"), p)


def _strategy_label(preset: str, overrides: dict[str, Any]) -> str:
    if not overrides:
        return preset
    parts = ",".join(f"{k}={_show(v)}" for k, v in overrides.items())
    return f"{preset}[{parts}]"


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "-".join(str(v) for v in value) or "()"
    return str(value)


def point_scenario(base: Scenario, point: dict[str, Any]) -> tuple[Scenario, str]:
    """The scenario of one configuration and its strategy label; DicesimError if invalid.

    The label is the preset name, with the axis overrides in brackets
    (``displaced[cond_interval=2]``), or the name of the preset the result equals
    (interweaved + deep + cond_interval 2 is ``dice``).

    Strategy-modifier axes on a scheme they cannot change (``sync`` with ``sync_layers``)
    are rejected as redundant so the sweep holds no duplicate configurations.
    """
    fields = base.model_dump()
    preset = point.get("strategy")
    strat_fields = make_strategy(preset).model_dump() if preset else dict(fields["strategy"])
    overrides: dict[str, Any] = {}
    for name, value in point.items():
        if name in SCENARIO_AXES:
            fields[name] = value
        elif name in STRATEGY_AXES:
            default = strat_fields.get(name)
            if _canonical(value) != _canonical(default):
                overrides[name] = value
        elif name in ROUTING_AXES:
            fields["routing"] = {**fields["routing"], ROUTING_AXES[name]: value}
    preset_name = str(preset or strat_fields["name"])
    label = _strategy_label(preset_name, overrides)
    strategy = parse_strategy({**strat_fields, **overrides, "name": label})
    # (a family without schemes has no moot modifier axes: its fields are its own)
    if not strategy.is_async and "scheme" in strat_fields and strategy.scheme == strat_fields["scheme"]:
        moot = [k for k in overrides if k not in ("scheme", "count_comm")]
        if moot:
            raise ConfigError(f"axes.{moot[0]}", f"redundant: has no effect on scheme {strategy.scheme!r}")
    preset_match = matching_preset(strategy)
    if preset_match:
        label = preset_match
        strategy = strategy.model_copy(update={"name": label})
    fields["strategy"] = strategy
    return make_scenario(**fields), label


def matching_preset(strategy: Strategy) -> str | None:
    """Name of the preset this strategy equals in everything but its name, if any."""
    mine = strategy.model_dump(exclude={"name"})
    for name in strategy_names():
        if make_strategy(name).model_dump(exclude={"name"}) == mine:
            return name
    return None


def simulate_metrics(scenario: Scenario) -> dict[str, float]:
    """Default evaluator: the simulator's summary without recording events."""
    from dicesim.sim.api import simulate

    result = simulate(scenario, record=False)
    return headline_metrics({**result.summary(), **predicted_quality(scenario, result.lag_table)}, result.per_step)


Evaluator = Callable[[Scenario], dict]


def _descriptor(base: Scenario, point: dict[str, Any], label: str) -> dict[str, Any]:
    """Columns that say which configuration a row is, also for rows that could not be built."""
    preset = point.get("strategy")
    strat = make_strategy(preset) if preset else base.strategy
    row: dict[str, Any] = {
        "strategy": label, "model": base.model, "topology": base.topology, "world_size": base.world_size,
        "batch": base.batch, "image_size": base.image_size, "steps": base.steps,
        # expert-parallel modifiers; empty for a family that has none (sequence parallelism)
        "sync_layers": getattr(strat, "sync_layers", ""), "cond_interval": getattr(strat, "cond_interval", 1),
    }
    row.update({k: v for k, v in point.items() if k != "strategy"})
    return {k: _show(v) if isinstance(v, (list, tuple)) or k == "sync_layers" else v for k, v in row.items()}


def evaluate_chunk(base: Scenario, items: Sequence[tuple[int, str, dict]], evaluate: Evaluator | None = None
                   ) -> list[dict]:
    """Result rows of ``items`` (index, key, point); never raises for one bad configuration."""
    evaluate = evaluate or simulate_metrics
    rows = []
    for index, key, point in items:
        label = str(point.get("strategy", base.strategy.name))
        status, reason, metrics = "ok", "", {}
        try:
            scenario, label = point_scenario(base, point)
            metrics = _scalars(evaluate(scenario))
        except DicesimError as exc:
            status, reason = "skipped", exc.one_line()
        except Exception as exc:  # noqa: BLE001 -- recorded, retried on the next run
            status, reason = "error", (f"{type(exc).__name__}: {exc}".splitlines() or [""])[0]
        row = {"index": index, "key": key, "status": status, "reason": reason, **_descriptor(base, point, label)}
        row.update({k: metrics.pop(k, float("nan")) for k in METRIC_KEYS})
        row.update(metrics)  # further columns an evaluator adds (a study's busiest link, ...)
        rows.append(row)
    return rows


def _scalars(summary: dict) -> dict[str, Any]:
    """Numbers as floats and text as text; lists and tables stay out of a result row."""
    out: dict[str, Any] = {}
    for k, v in summary.items():
        if isinstance(v, str) or (k == "fits" and (v is None or isinstance(v, bool))):  # fits: True/False/None
            out[k] = v
        elif isinstance(v, (int, float)) or hasattr(v, "dtype"):
            out[k] = float(v)
    return out


#: what a sweep (and a study) writes into its result directory, for the output check
RESULT_DIR_FILES = (f"{_CHUNK_DIR}/", f"{_CHUNK_DIR}/chunk-*.parquet", "report.html")


def read_chunks(out_dir: str | Path) -> pd.DataFrame:
    """Every readable result chunk under ``out_dir``, one row per key (ok/skipped beat error)."""
    chunk_dir = Path(out_dir) / _CHUNK_DIR
    frames = []
    for path in sorted(chunk_dir.glob("chunk-*.parquet")) if chunk_dir.is_dir() else []:
        try:
            frames.append(pd.read_parquet(path))
        except Exception:  # noqa: BLE001 -- a damaged chunk is simply evaluated again
            continue
    if not frames:
        return pd.DataFrame(columns=["index", "key", "status"])
    df = rename_legacy_columns(pd.concat(frames, ignore_index=True))
    df = df.assign(_rank=(df["status"] == "error").astype(int)).sort_values(["key", "_rank"], kind="stable")
    return df.drop_duplicates("key").drop(columns="_rank")


def _chunks(items: list[tuple[int, str, dict]], size: int) -> list[list[tuple[int, str, dict]]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _write_chunk(out_dir: Path, rows: list[dict]) -> Path:
    keys = sorted(r["key"] for r in rows)
    name = "chunk-" + hashlib.sha256(",".join(keys).encode()).hexdigest()[:16] + ".parquet"
    path = out_dir / _CHUNK_DIR / name
    write_parquet_atomic(pd.DataFrame(rows), path)
    return path


def run_sweep(spec: SweepSpec, out_dir: str | Path, *, workers: int | None = 0, scheduler: str | None = None,
              processes: bool = True, chunk_size: int | None = None, evaluate: Evaluator | None = None,
              on_chunk: Callable[[Path, list[dict]], None] | None = None,
              ticker: Ticker = NO_PROGRESS) -> SweepOutcome:
    """Evaluate every configuration of ``spec`` not already in ``out_dir``'s chunks.

    ``evaluate(scenario) -> summary dict`` defaults to the simulator (must be picklable for
    Dask processes). ``on_chunk(path, rows)`` is called after each chunk is on disk; ``ticker``
    hears how many configurations are to run and each chunk that finished. Returns the
    complete, deterministic result table (rows in configuration order) and counts.
    """
    return run_points(spec.base, spec.points(), out_dir, workers=workers, scheduler=scheduler,
                      processes=processes, chunk_size=chunk_size or spec.options.chunk_size, evaluate=evaluate,
                      on_chunk=on_chunk, ticker=ticker)


def run_points(base: Scenario, points: Sequence[dict[str, Any]], out_dir: str | Path, *, workers: int | None = 0,
               scheduler: str | None = None, processes: bool = True, chunk_size: int = 16,
               evaluate: Evaluator | None = None,
               on_chunk: Callable[[Path, list[dict]], None] | None = None,
               ticker: Ticker = NO_PROGRESS) -> SweepOutcome:
    """:func:`run_sweep` for an explicit list of configurations (``{axis: value}`` on ``base``).

    ``workers=None`` starts as many local workers as the CPUs and the memory allow
    (:func:`dicesim.membudget.plan_workers`); an explicit number past them is refused."""
    out = Path(out_dir)
    digests = Digests()
    items = [(i, config_key(base, p, digests), p) for i, p in enumerate(points)]
    done = read_chunks(out)
    done_keys = set(done.loc[done["status"] != "error", "key"])
    pending = [it for it in items if it[1] not in done_keys]
    if not scheduler:  # local workers: bounded by the CPUs and the memory their runs need
        workers = plan_workers(workers, [points_nbytes(base, [p for _, _, p in pending])], jobs=len(pending))
    ticker.expect(len(pending))
    for _, rows in map_jobs(evaluate_chunk, [(chunk, evaluate) for chunk in _chunks(pending, chunk_size)],
                            workers=workers, scheduler=scheduler, processes=processes, shared=(base,)):
        path = _write_chunk(out, rows)
        ticker.advance(len(rows))
        if on_chunk is not None:
            on_chunk(path, rows)
    table = collect_table(out, [it[1] for it in items])
    return SweepOutcome(table=table, n_total=len(items), n_cached=len(items) - len(pending), n_run=len(pending))


def collect_table(out_dir: str | Path, keys: Iterable[str]) -> pd.DataFrame:
    """The result rows of ``keys`` (in that order) from the chunks, with normalised dtypes."""
    keys = list(keys)
    df = read_chunks(out_dir)
    df = df[df["key"].isin(keys)].copy()
    order = {k: i for i, k in enumerate(keys)}
    df["index"] = df["key"].map(order).astype("int64")
    df = df.sort_values("index", kind="stable").reset_index(drop=True)
    for col in METRIC_KEYS:
        if col in df.columns:
            df[col] = df[col].astype("float64")
    for col in ("status", "reason", "key", "strategy", "sync_layers"):
        if col in df.columns:
            df[col] = df[col].astype("str")
    front = ["index", "key", "status", "reason"]
    rest = [c for c in df.columns if c not in front and c not in METRIC_KEYS]
    return df[front + rest + [c for c in METRIC_KEYS if c in df.columns]]


def write_sweep_table(table: pd.DataFrame, out_dir: str | Path) -> Path:
    """``<out_dir>/sweep.parquet``, written atomically."""
    path = Path(out_dir) / "sweep.parquet"
    write_parquet_atomic(table, path)
    return path
