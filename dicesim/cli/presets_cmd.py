"""`dicesim presets`: the models, strategies and topologies the tool knows by name."""

from __future__ import annotations

from rich.table import Table

from dicesim.cli import app
from dicesim.cli.tables import console as make_console
from dicesim.models import MODEL_NAMES, get_model
from dicesim.strategy import STRATEGY_NAMES, make_strategy
from dicesim.topology import SCALED_NAMES, TOPOLOGY_NAMES, get_topology, world_size


@app.command()
def presets() -> None:
    """List model, strategy and topology presets.

    Example:

        dicesim presets
    """
    console = make_console()
    models = Table(title="Model presets (DiT-MoE)")
    for col in ("name", "depth", "hidden", "heads", "experts", "top-k", "expert hidden", "shared hidden",
                "params (M)"):
        models.add_column(col, justify="right" if col != "name" else "left")
    for name in MODEL_NAMES:
        m = get_model(name)
        D = m.hidden
        per_block = 10 * D * D + m.num_experts * 3 * D * m.expert_hidden + 3 * D * m.shared_hidden + D * m.num_experts
        models.add_row(name, str(m.depth), str(D), str(m.heads), str(m.num_experts), str(m.top_k),
                       f"{m.expert_hidden}", f"{m.shared_hidden}", f"{m.depth * per_block / 1e6:,.0f}")
    console.print(models)
    strategies = Table(title="Strategy presets")
    strategies.add_column("name")
    strategies.add_column("definition")
    for name in STRATEGY_NAMES:
        strategies.add_row(name, make_strategy(name).describe())
    console.print(strategies)
    topologies = Table(title="Topology presets")
    for col in ("name", "GPUs", "GPU", "peer-to-peer"):
        topologies.add_column(col)
    for name in TOPOLOGY_NAMES:
        G = get_topology(name)
        topologies.add_row(name, str(world_size(G)), str(G.graph.get("gpu", "?")), "yes" if G.graph.get("p2p") else "no")
    console.print(topologies)
    console.print("Cluster families by server count: " + ", ".join(SCALED_NAMES) + " (N = 1 is one server with its "
                  "NICs); `dicesim topology derive` makes a machine from any of them.")
    console.print(profiles_table())


def profiles_table() -> Table:
    """The built-in hardware profiles: measured (fitted on traces) or datasheet, and what each rests on."""
    from dicesim.sim.costs.profile import builtin_profile_names, get_profile
    from dicesim.trust import profile_basis

    table = Table(title="Hardware profiles (--profile NAME; default: the datasheet profile of the machine's GPU)")
    for col in ("name", "GPU", "basis", "fitted on / source"):
        table.add_column(col, overflow="fold")
    for name in builtin_profile_names():
        p = get_profile(name)
        basis = profile_basis(p)
        table.add_row(name, p.gpu, basis, p.source.split(";")[0])
    return table
