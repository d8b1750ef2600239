"""`dicesim strategy show`: print what a strategy does to every layer at every step.

``--reference-flags "..."`` reads the strategy from a DICE reference command line instead of
a preset name (:mod:`dicesim.reference_flags`).
"""

from __future__ import annotations

from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from dicesim.cli import app
from dicesim.errors import ConfigError
from dicesim.limits import MAX_LAYERS, MAX_STEPS
from dicesim.plan import build_plan, lag_table
from dicesim.reference_flags import strategy_from_reference_flags
from dicesim.strategy import Strategy, make_strategy
from dicesim.strict_table import ascii_int_list

strategy_app = typer.Typer(help="Inspect strategies.", no_args_is_help=True)
app.add_typer(strategy_app, name="strategy")


@strategy_app.command("show")
def show(
    name: Optional[str] = typer.Argument(None, help="strategy preset, e.g. dice, displaced, interweaved"),
    reference_flags: Optional[str] = typer.Option(
        None, help='a DICE reference command line, e.g. "--ep --ep-async --ep-async-pipeline --ep-async-mode '
                   'shallow --ep-async-noskip-step 2 --ep-async-skip-strategy low --auto-gc"'),
    layers: int = typer.Option(28, min=1, max=MAX_LAYERS, help="number of MoE layers"),
    steps: int = typer.Option(10, min=1, max=MAX_STEPS, help="number of denoising steps"),
    sync_layers: Optional[str] = typer.Option(None, help="none|deep|shallow|alternate or comma-separated layers"),
    cond_interval: Optional[int] = typer.Option(None, help="conditional communication interval n"),
    cond_policy: Optional[str] = typer.Option(None, help="low|high|random"),
    warmup: Optional[int] = typer.Option(None, help="synchronous warm-up steps"),
    cooldown: Optional[int] = typer.Option(None, help="synchronous cool-down steps"),
    sync_every: Optional[int] = typer.Option(None, help="periodic synchronous step every S steps"),
    async_work: Optional[str] = typer.Option(None, help="every_step|consumed_only"),
    cond_scope: Optional[str] = typer.Option(None, help="all|async"),
    cond_gate: Optional[str] = typer.Option(None, help="reference|every_candidate"),
    slot_order: Optional[str] = typer.Option(None, help="combine_first|shared_first"),
    buffer_policy: Optional[str] = typer.Option(None, help="reference_gc|reference|separate"),
) -> None:
    """Lag table (steps) of each layer's expert output: `0` fresh, `k` k steps old; `a/b` = kept/dropped copy.
    Sequence-parallel strategies (sp, distrifusion, ulysses, ring, usp): the lag of the K/V of the other ranks' token slices.

    Example:

        dicesim strategy show dice --layers 28 --steps 10
    """
    parsed_layers: object = sync_layers
    if sync_layers and sync_layers.strip() not in ("none", "deep", "shallow", "alternate"):
        parsed_layers = list(ascii_int_list(sync_layers, "sync_layers", ("none", "deep", "shallow", "alternate",
                                                                        "0,1,...")))
    overrides = dict(sync_layers=parsed_layers, cond_interval=cond_interval, cond_policy=cond_policy,
                     warmup_steps=warmup, cooldown_steps=cooldown, sync_every=sync_every, async_work=async_work,
                     cond_scope=cond_scope, cond_gate=cond_gate, slot_order=slot_order, buffer_policy=buffer_policy)
    console = Console(width=max(100, 8 + 6 * steps))
    if reference_flags is not None:
        if name is not None or any(v is not None for v in overrides.values()):
            raise ConfigError("strategy show", "--reference-flags replaces the preset name and the field options",
                              "either NAME [options] or --reference-flags")
        cfg, notes = strategy_from_reference_flags(reference_flags)
        _print_fields(console, cfg, notes)
    elif name is None:
        raise ConfigError("strategy show", "needs a preset name or --reference-flags", "NAME or --reference-flags")
    else:
        cfg = make_strategy(name, **overrides)
    plan = build_plan(cfg, layers, steps)
    lags = lag_table(plan)
    table = Table(title=f"{cfg.name}: {cfg.describe()} — lag of the {cfg.lag_subject} in steps (layer x step)")
    table.add_column("layer", justify="right")
    for t in range(steps):
        table.add_column(f"t{t}", justify="right")
    for l in range(layers):
        cells = []
        for t in range(steps):
            k, d = int(lags.kept[t, l]), int(lags.dropped[t, l])
            cells.append(f"{k}/{d}" if k != d else str(k))
        mark = "S" if l not in plan.async_layers else ""
        table.add_row(f"{l}{mark}", *cells)
    console.print(table)
    console.print(f"S = layer always synchronous; lag of the {cfg.lag_subject}; unit: denoising steps")


def _print_fields(console: Console, cfg: Strategy, notes: list[str]) -> None:
    table = Table(title="StrategyConfig of the reference command line")
    table.add_column("field")
    table.add_column("value")
    for field, value in cfg.model_dump(mode="json").items():
        table.add_row(field, str(value))
    console.print(table)
    for note in notes:
        console.print(f"note: {note}")
