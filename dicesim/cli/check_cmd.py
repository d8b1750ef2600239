"""`dicesim check FILE...`: validate any input file the project reads without running anything."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from dicesim.cli import app
from dicesim.errors import ConfigError
from dicesim.inputs import check_regular_file
from dicesim.limits import MAX_TEXT_FILE_BYTES
from dicesim.terminal import printable

#: what `check` recognises, for the "unrecognised file type" message
SUFFIXES = (".toml", ".graphml", ".json", ".json.gz", ".parquet", ".csv", "directory")


def _head(path: Path) -> str:
    """The file's text for sniffing its kind; an oversized file is refused by its reader later."""
    check_regular_file(path, lambda problem: ConfigError(str(path), problem))  # never open a FIFO
    try:
        with open(path, "rb") as fh:
            return fh.read(MAX_TEXT_FILE_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return ""


def _toml_kind(head: str) -> str:
    if "dicesim-published-steps/" in head:
        return "steps"
    if "dicesim-published/" in head:
        return "published"
    if "dicesim-acceptance/" in head:
        return "acceptance"
    if "dicesim-host-costs/" in head:
        return "host_costs"
    if "dicesim-host-blocks/" in head:
        return "host_blocks"
    if "[[links]]" in head or "[[nodes]]" in head:
        return "topology"
    if "[axes]" in head or "[sweep]" in head:
        return "sweep"
    if "[study]" in head:
        return "study"
    if ("[profile]" in head or re.search(r"^\s*peak_tflops\s*=", head, re.M)) and "[model]" not in head:
        return "profile"  # a profile file is flat (peak_tflops, [ops.*]); a scenario may name one in [profile]
    return "scenario"


def _json_kind(head: str) -> str:
    """A result record or executor summary, unless it is a Chrome trace (whose metadata may hold one)."""
    if '"traceEvents"' not in head and ('"dicesim-result/' in head or '"step_latency_s"' in head):
        return "result"
    return "trace"


def _kind(path: Path) -> str:
    name = path.name
    if path.is_dir() or name.endswith(".json.gz"):
        return "trace"
    if name.endswith(".json"):
        return _json_kind(_head(path))
    if name.endswith(".parquet"):
        from dicesim.trace.parquet import is_trace_parquet

        return "trace" if name.endswith(".events.parquet") or is_trace_parquet(path) else "table"
    if name.endswith(".graphml"):
        return "topology"
    if name.endswith(".csv"):  # a result table (docs/limits.md: `check` reads Parquet and CSV tables)
        return "table"
    if name.endswith(".toml"):
        return _toml_kind(_head(path))
    raise ConfigError(str(path), "unrecognised file type", SUFFIXES)


def _check_run_input(kind: str, path: Path) -> str:
    """Scenario, topology, sweep, profile and trace files."""
    if kind == "scenario":
        from dicesim.scenario import load_scenario

        return f"scenario: {load_scenario(path).label()}"
    if kind == "topology":
        from dicesim.topology import get_topology, validate_topology, world_size

        G = get_topology(str(path))
        validate_topology(G)
        return f"topology: {G.graph.get('name', path.stem)} with {world_size(G)} GPUs"
    if kind == "sweep":
        from dicesim.sweep import load_sweep

        spec = load_sweep(path)
        return f"sweep: {spec.options.name!r}, {len(spec.points())} configurations over {', '.join(spec.axes)}"
    if kind == "profile":
        from dicesim.sim.costs.profile import load_profile

        return f"profile: {load_profile(path).name}"
    if kind == "host_costs":
        from dicesim.calibrate.fit_host import load_host_costs

        costs = load_host_costs(path)
        cpu = costs.meta.get("cpu", "?")
        return f"host costs: {len(costs.bench)} timed ops, {len(costs.executor)} executor ops ({cpu})"
    if kind == "host_blocks":
        from dicesim.calibrate.host_blocks import load_host_blocks

        blocks = load_host_blocks(path)
        return f"host blocks: {len(blocks.block)} diffusers blocks ({', '.join(blocks.block)})"
    from dicesim.trace import read_trace

    df, meta = read_trace(path)
    if meta.scenario:  # the run spec and strategy as calibration reads them: an unknown key is refused here too
        from dicesim.calibrate.runs import trace_strategy
        from dicesim.trace.runmeta import scenario_meta

        trace_strategy(scenario_meta(meta, path), meta, path)
    return f"trace: {len(df)} events, {df['rank'].nunique()} ranks"


def _check_evaluation_input(kind: str, path: Path) -> str:
    """Published and acceptance sets, study files, result files and result tables."""
    if kind == "published":
        from dicesim.calibrate.published.set import parse_file

        figs = parse_file(path)
        return f"published set: {len(figs)} figures ({sum(f.role == 'fit' for f in figs)} to fit on)"
    if kind == "steps":
        from dicesim.calibrate.published.step_level import load_step_figures

        figs, _ = load_step_figures([path])
        return f"published step-level set: {len(figs)} figures ({sum(f.get('kind') == 'latency' for f in figs)} latencies)"
    if kind == "acceptance":
        from dicesim.calibrate.published.paper import load_paper_set

        ps = load_paper_set(path)
        return f"acceptance set: {len(ps.figure)} figures on {ps.setting.topology}, {ps.setting.world_size} GPUs"
    if kind == "study":
        from dicesim.study import load_study, study_size

        spec = load_study(path)
        return f"study: {spec.name!r}, {study_size(spec)} configurations over {', '.join(spec.axes()) or 'one setting'}"
    if kind == "result":
        from dicesim.result_files import load_results

        runs = load_results(path)
        return f"result: {len(runs)} run(s), " + "; ".join(r.label for r in runs)
    from dicesim.result_files import load_result_table

    df = load_result_table(path)
    return f"result table: {len(df)} rows, {len(df.columns)} columns"


def check_file(path: Path) -> str:
    """Validate one file; returns a one-line description, raises a DicesimError otherwise."""
    kind = _kind(path)
    if kind in ("published", "steps", "acceptance", "study", "result", "table"):
        return _check_evaluation_input(kind, path)
    return _check_run_input(kind, path)


@app.command()
def check(paths: list[Path] = typer.Argument(..., help="scenario, sweep, study, topology, profile, host-cost, "
                                                        "published-set or acceptance TOML; GraphML; trace or result JSON; trace or "
                                                        "result-table Parquet; trace directory")) -> None:
    """Validate files; the first problem is reported as one line with exit code 2.

    Example:

        dicesim check examples/default.toml examples/sweep-xl2.toml
    """
    for p in paths:
        if not p.exists():
            raise ConfigError(str(p), "file not found")
        typer.echo(printable(f"ok  {p}: {check_file(p)}", markup=False))  # names in files are untrusted text
