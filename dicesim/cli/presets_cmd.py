"""`dicesim presets`: the models, strategies and topologies the tool knows by name."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from dicesim.cli import app
from dicesim.models import MODEL_NAMES, get_model
from dicesim.strategy import STRATEGY_NAMES, make_strategy
from dicesim.topology import TOPOLOGY_NAMES, get_topology, world_size


@app.command()
def presets() -> None:
    """List model, strategy and topology presets.

    Example:

        dicesim presets
    """
    console = Console()
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
