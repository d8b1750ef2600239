"""Load a repository script that is not a package module (benchmarks/, .ci/) by its path, for its tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_script(rel_path: str, *, register: bool = False) -> ModuleType:
    """The script at ``ROOT / rel_path`` as a fresh module named after its file. ``register``: put it in
    ``sys.modules`` first (dataclasses defined in it look their module up by name)."""
    path = ROOT / rel_path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    if register:
        sys.modules.setdefault(path.stem, mod)
    spec.loader.exec_module(mod)
    return mod
