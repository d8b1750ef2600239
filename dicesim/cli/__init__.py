"""Command line entry point. Each command group lives in its own module and registers here."""

from __future__ import annotations

import sys

import typer

from dicesim.errors import DicesimError

app = typer.Typer(
    name="dicesim",
    help="Simulate expert-parallel DiT-MoE inference strategies (sync, displaced, DICE) on real interconnects.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    # Imported for their side effect of adding commands to `app`; kept in one place so the
    # command list reads top to bottom.
    from dicesim.cli import check_cmd, presets_cmd, strategy_cmd  # noqa: F401

    for optional in ("topology_cmd", "simulate_cmd", "calibrate_cmd", "sweep_cmd", "trace_cmd"):
        try:
            __import__(f"dicesim.cli.{optional}")
        except ModuleNotFoundError as exc:  # command module not written yet
            if exc.name != f"dicesim.cli.{optional}":
                raise


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors print one line to stderr and exit with code 2."""
    _register()
    try:
        app(args=argv, standalone_mode=False)
    except DicesimError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
