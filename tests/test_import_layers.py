"""The house's layers are a contract (.importlinter): no import runs back up, and none loops.

``lint-imports`` reads every module of dicesim and validate and checks each contract: the
top-level layers, the simulator's and the executor's internal layers, the plan's shared
vocabulary under its families, and the simulator without torch. A new module that imports
upward fails here, with the offending line.
"""

from __future__ import annotations

from pathlib import Path

import importlinter.cli as importlinter_cli  # in the test extra: without it the suite fails here

ROOT = Path(__file__).resolve().parents[1]


def test_every_layer_contract_is_kept(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # the contracts and the root packages are found from the repository root
    code = importlinter_cli.lint_imports(config_filename=str(ROOT / ".importlinter"), no_cache=True)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "0 broken" in out
