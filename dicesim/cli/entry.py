"""Running a typer app so that user errors never show a traceback (shared by both CLIs)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import typer

from dicesim.errors import DicesimError
from dicesim.terminal import prepare_terminal, printable


def run_app(app: typer.Typer, argv: list[str] | None = None, *,
            failures: Sequence[tuple[type[BaseException], int]] = ()) -> int:
    """Run ``app``; bad input prints ``error: <one line>`` on stderr and returns 2.

    ``failures`` maps further exception types (e.g. a failed rank) to their exit codes. Error
    lines quote what files hold, so they are printed escaped (:func:`dicesim.terminal.printable`).
    """
    prepare_terminal()
    try:
        # typer turns Ctrl-C into Exit(130) and, outside standalone mode, returns that code
        code = app(args=argv, standalone_mode=False)
        if code == 130:
            print("error: interrupted", file=sys.stderr)
        if isinstance(code, int) and not isinstance(code, bool):
            return code
    except DicesimError as exc:
        print(f"error: {printable(exc.one_line(), markup=False)}", file=sys.stderr)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        for kind, code in failures:
            if isinstance(exc, kind):
                print(f"error: {printable(' '.join(str(exc).split()), markup=False)}", file=sys.stderr)
                return code
        # usage errors: typer vendors its own click, so match the interface, not the class
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
            message = printable(" ".join(exc.format_message().split()), markup=False)
            if message:  # empty when help was shown for a bare group
                print(f"error: {message}", file=sys.stderr)
            return 2
        raise
    return 0
