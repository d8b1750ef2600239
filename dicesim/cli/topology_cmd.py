"""`dicesim topology ...`: list presets, show a topology's link classes, trace a route, export a file."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from dicesim.cli import app
from dicesim.errors import ConfigError, TopologyError
from dicesim.outguard import Output, check_outputs
from dicesim.terminal import SafeConsole, printable
from dicesim.topology import (
    GPU_KEYS,
    SCALED,
    SCALED_NAMES,
    TOPOLOGY_NAMES,
    all_pairs_routes,
    derive_topology,
    describe,
    get_topology,
    parse_bandwidths,
    save_graphml,
    save_toml,
    world_size,
)
from dicesim.topology.hardware import source_status

topology_app = typer.Typer(
    name="topology",
    help="Interconnect topologies: list presets, show one, trace a route, export to TOML/GraphML, derive a machine "
         "from a preset (another GPU, peer-to-peer, a link's bandwidth).",
    no_args_is_help=True,
)
app.add_typer(topology_app, name="topology")

_NAME_HELP = "Preset name (see `dicesim topology list`) or a .toml/.graphml file."


def _gbps(bw_Bps: float) -> str:
    return f"{bw_Bps / 1e9:g} GB/s"


def _us(t_s: float) -> str:
    return f"{t_s * 1e6:.3g} us"


@topology_app.command("list")
def list_cmd() -> None:
    """List the preset topologies with their size and fastest / slowest links (cluster presets take
    a server count: ``128x-dgx-h100-rail``).

    Example:

        dicesim topology list
    """
    table = Table(title="Topology presets (bandwidth per direction)", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("name", no_wrap=True, min_width=max(map(len, TOPOLOGY_NAMES)))
    table.add_column("servers x GPUs", no_wrap=True)
    for col in ("p2p", "GPU link", "slowest link"):
        table.add_column(col, no_wrap=True)
    for name in TOPOLOGY_NAMES:
        info = describe(get_topology(name))
        # GPU-attached links first: host-memory links are fast but not what a reader compares.
        gpu_links = [r for r in info["links"] if "gpu" in r["between"].split("<->")] or info["links"]
        fast, slow = gpu_links[0], info["links"][-1]
        table.add_row(
            name, f"{info['servers']} x {info['gpus_per_node']} {info['gpu']}", "yes" if info["p2p"] else "no",
            f"{fast['link']} {_gbps(fast['bw_Bps'])}", f"{slow['link']} {_gbps(slow['bw_Bps'])}",
        )
    Console().print(table)
    Console().print("Cluster presets by server count: " + ", ".join(
        f"{name} (N = {low}..{high})" for name, (_, low, high) in zip(SCALED_NAMES, SCALED.values()))
        + ", e.g. 128x-dgx-h100-rail; `dicesim topology show NAME` for their links.")


@topology_app.command("show")
def show_cmd(
    name: str = typer.Argument(..., help=_NAME_HELP),
    sources: bool = typer.Option(False, "--sources", help="Print the citation text of every source."),
    html: Optional[Path] = typer.Option(None, "--html", help="Also draw the graph into this HTML file."),
) -> None:
    """Show a topology: GPUs, servers, node counts and each link class with bandwidth and latency.

    Example:

        dicesim topology show 8x-rtx4090-pcie
    """
    if html is not None:
        check_outputs([Output("--html", html)], [name])
    G = get_topology(name)
    if html is not None:
        from dicesim.report.html import Section, write_report
        from dicesim.report.topology_fig import fig_topology
        from dicesim.topology import links_table

        write_report([Section(title=G.graph.get("name", name), items=[fig_topology(G), links_table(G)])], html,
                     title=f"topology {G.graph.get('name', name)}")
    info = describe(G)
    console = SafeConsole()
    p2p = "yes" if info["p2p"] else "no (GPU-to-GPU traffic staged through host memory)"
    # names come from the file: printed escaped (no control sequences, no rich markup)
    console.print(f"[bold]{printable(info['name'])}[/bold]: {info['world_size']} x {printable(info['gpu'])} GPUs, "
                  f"{info['servers']} server(s), {info['gpus_per_node']} GPUs per server, peer-to-peer: {p2p}")
    console.print("nodes: " + ", ".join(f"{printable(k)} {v}" for k, v in info["nodes"].items()))
    table = Table(title="Link classes (edges are directed; bandwidth per direction)", box=box.SIMPLE_HEAD)
    for col in ("link", "between", "edges", "bandwidth", "latency", "status", "source"):
        right = col in ("edges", "bandwidth", "latency")
        table.add_column(col, justify="right" if right else "left", no_wrap=col != "source")
    for r in info["links"]:
        status = source_status(r["source"], G.graph["sources"].get(r["source"], ""))
        table.add_row(printable(r["link"]), printable(r["between"]), str(r["directed_edges"]), _gbps(r["bw_Bps"]),
                      _us(r["latency_s"]), printable(status), printable(r["source"]))
    console.print(table)
    console.print("status: cited (datasheet, standard or reference design), measured (a published measurement), "
                  "assumed (a stated assumption to calibrate); docs/trust.md")
    if sources:
        for key, text in sorted(G.graph["sources"].items()):
            console.print(f"[bold]{printable(key)}[/bold]: {printable(text)}")


@topology_app.command("route")
def route_cmd(
    name: str = typer.Argument(..., help=_NAME_HELP),
    src: int = typer.Argument(..., help="Source rank."),
    dst: int = typer.Argument(..., help="Destination rank."),
) -> None:
    """Print the hops of the route from rank SRC to rank DST, with its latency and bottleneck.

    Example (GPU 0 to GPU 7 across the two PCIe switches and sockets):

        dicesim topology route 8x-rtx4090-pcie 0 7
    """
    G = get_topology(name)
    W = world_size(G)
    for field, rank in (("src", src), ("dst", dst)):
        if not 0 <= rank < W:
            raise ConfigError(field, f"rank {rank} out of range", f"0..{W - 1}")
    table_ = all_pairs_routes(G, sorted({src, dst}))
    path = table_.route(src, dst)
    table = Table(title=f"{printable(G.graph['name'])}: rank {src} -> rank {dst}", box=box.SIMPLE_HEAD)
    for col in ("from", "to", "link", "bandwidth", "latency"):
        table.add_column(col, justify="right" if col in ("bandwidth", "latency") else "left")
    for u, v in path:
        d = G.edges[u, v]
        table.add_row(printable(u), printable(v), printable(d["link"]), _gbps(d["bw_Bps"]), _us(d["latency_s"]))
    console = SafeConsole()
    console.print(table)
    bottleneck = table_.bottleneck_Bps[(src, dst)]
    console.print(f"{len(path)} hops, latency {_us(table_.latency_s[(src, dst)])}, bottleneck "
                  + (_gbps(bottleneck) if path else "none (same rank)"))


@topology_app.command("export")
def export_cmd(
    name: str = typer.Argument(..., help=_NAME_HELP),
    out: Path = typer.Argument(..., help="Output file, .toml or .graphml (written atomically)."),
) -> None:
    """Write a topology to a TOML or GraphML file, e.g. as a starting point for a custom machine.

    Example:

        dicesim topology export dgx-h100 my-machine.toml
    """
    suffix = out.suffix.lower()
    if suffix not in (".toml", ".graphml"):
        raise ConfigError("out", f"unknown file type {suffix or '(none)'!r}", [".toml", ".graphml"])
    if not out.parent.exists():
        raise TopologyError(f"{out}: directory {out.parent} does not exist")
    check_outputs([Output("OUT", out)], [name])
    G = get_topology(name)
    (save_toml if suffix == ".toml" else save_graphml)(G, out)
    Console().print(f"wrote {out} ({world_size(G)} GPUs, {G.number_of_edges()} directed edges)")


@topology_app.command("derive")
def derive_cmd(
    name: str = typer.Argument(..., help=_NAME_HELP + " The machine to start from."),
    new_name: str = typer.Option(..., "--name", help="name of the new machine (also the default file name)"),
    gpu: Optional[str] = typer.Option(None, "--gpu", help=f"GPU model: {', '.join(GPU_KEYS)} (picks the built-in "
                                                          "compute profile)"),
    p2p: Optional[bool] = typer.Option(None, "--p2p/--no-p2p", help="GPUs talk peer-to-peer (routes through the "
                                                                     "switches) or stage through host memory"),
    bw: Optional[list[str]] = typer.Option(None, "--bw", help="CLASS=GB/s: bandwidth per direction of every link "
                                                              "of one class, e.g. --bw upi=40 (repeatable; see "
                                                              "`dicesim topology show` for the classes)"),
    out: Optional[Path] = typer.Option(None, "--out", help="file to write, .toml or .graphml (default NAME.toml)"),
) -> None:
    """Make a machine from a preset by changing its GPU, peer-to-peer or a link class, and write it.

    Example (8 L40S in the layout of 8x-rtx4090-pcie, two sockets, P2P on):

        dicesim topology derive 8x-rtx4090-pcie --gpu l40s --p2p --name my-box
        dicesim compare --topology my-box.toml --image-size 512 --batch 16
    """
    path = out or Path(f"{new_name}.toml")
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".graphml"):
        raise ConfigError("out", f"unknown file type {suffix or '(none)'!r}", [".toml", ".graphml"])
    if path.parent != Path("") and not path.parent.exists():
        raise TopologyError(f"{path}: directory {path.parent} does not exist")
    command = " ".join(["dicesim topology derive", name, "--name", new_name]
                       + ([f"--gpu {gpu}"] if gpu else []) + ([] if p2p is None else ["--p2p" if p2p else "--no-p2p"])
                       + [f"--bw {b}" for b in bw or []])
    G = derive_topology(get_topology(name), name=new_name, gpu=gpu, p2p=p2p, bandwidths_GBps=parse_bandwidths(bw),
                        command=command)
    (save_toml if suffix == ".toml" else save_graphml)(G, path)
    Console().print(f"wrote {path}: {G.graph['name']}, {world_size(G)} x {G.graph['gpu']} GPUs, peer-to-peer "
                    f"{'on' if G.graph.get('p2p') else 'off'}; use it with --topology {path}")
