"""`dicesim check FILE...`: validate scenario, sweep, topology, profile and trace files without running anything."""

from __future__ import annotations

from pathlib import Path

import typer

from dicesim.cli import app
from dicesim.errors import ConfigError
from dicesim.limits import MAX_TEXT_FILE_BYTES


def _head(path: Path) -> str:
    """The file's text for sniffing its kind; an oversized file is refused by its reader later."""
    try:
        with open(path, "rb") as fh:
            return fh.read(MAX_TEXT_FILE_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return ""


def _kind(path: Path) -> str:
    name = path.name
    if name.endswith((".json", ".json.gz", ".parquet")) or path.is_dir():
        return "trace"
    if name.endswith(".graphml"):
        return "topology"
    if name.endswith(".toml"):
        head = _head(path)
        if "[[links]]" in head or "[[nodes]]" in head:
            return "topology"
        if "[axes]" in head or "[sweep]" in head:
            return "sweep"
        if "[profile]" in head and "[model]" not in head:
            return "profile"
        return "scenario"
    raise ConfigError(str(path), "unrecognised file type", (".toml", ".graphml", ".json", ".parquet", "directory"))


def check_file(path: Path) -> str:
    """Validate one file; returns a one-line description, raises a DicesimError otherwise."""
    kind = _kind(path)
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
        from dicesim.sim.profile import load_profile

        return f"profile: {load_profile(path).name}"
    from dicesim.trace import read_trace

    df, _meta = read_trace(path)
    return f"trace: {len(df)} events, {df['rank'].nunique()} ranks"


@app.command()
def check(paths: list[Path] = typer.Argument(..., help="scenario/sweep/topology/profile TOML, GraphML, trace JSON/parquet")) -> None:
    """Validate files; the first problem is reported as one line with exit code 2."""
    for p in paths:
        if not p.exists():
            raise ConfigError(str(p), "file not found")
        typer.echo(f"ok  {p}: {check_file(p)}")
