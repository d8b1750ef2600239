"""Command line entry point. Each command group lives in its own module and registers here."""

from __future__ import annotations

import gc
import sys

import typer

from dicesim.cli.entry import run_app
from dicesim.collector import started

app = typer.Typer(
    name="dicesim",
    help="Simulate expert-parallel DiT-MoE inference strategies (sync, displaced, DICE) on real interconnects. "
         "Every prediction comes with its error band, the assumptions it rests on and, with --sensitivity, whether "
         "it survives them (docs/trust.md).\n\n"
         "Example (XL/2 with DICE on 8x RTX 4090 over PCIe; `dicesim COMMAND --help` shows one per "
         "command):\n\n"
         "    dicesim simulate --model XL/2 --topology 8x-rtx4090-pcie --strategy dice",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    # Imported for their side effect of adding commands to `app`; kept in one place so the
    # command list reads top to bottom.
    from dicesim.cli import (  # noqa: F401
        calibrate_cmd,
        check_cmd,
        presets_cmd,
        recommend_cmd,
        results_cmd,
        simulate_cmd,
        strategy_cmd,
        study_cmd,
        sweep_cmd,
        topology_cmd,
        trace_cmd,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors print one line to stderr and exit with code 2. ``argv`` None: run
    as the program (its arguments from ``sys.argv``), whose start-up is paid once
    (:func:`dicesim.collector.started`)."""
    if argv is None:
        with started():
            _register()
        code = run_app(app, argv)
        gc.disable()  # the program ends: its closing full collection would rescan all it made, for nothing
        return code
    _register()
    return run_app(app, argv)


if __name__ == "__main__":
    sys.exit(main())
