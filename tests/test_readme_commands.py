"""The README holds exactly two set-up commands, and CI runs them as written."""

from __future__ import annotations

from pathlib import Path

from script_module import load_script

ROOT = Path(__file__).resolve().parents[1]


def _setup_commands() -> list[str]:
    return load_script(".ci/readme_commands.py").setup_commands((ROOT / "README.md").read_text(encoding="utf-8"))


def test_two_commands_main_job_then_tests():
    main, test = _setup_commands()
    assert main.startswith("python3 -m pip install -e . && dicesim ")  # a plain install, no extras
    assert test.endswith("python3 -m pytest -q") or "pytest" in test
    assert "\n" not in main and "\n" not in test


def test_ci_runs_the_test_command_verbatim_and_the_main_command_from_the_readme():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    _, test = _setup_commands()
    assert test in ci.splitlines()
    assert "readme_commands.py README.md main" in ci and "python3 -m venv" in ci


def test_the_main_command_needs_no_extra():
    """Everything the main job imports is a core dependency (the study scales out on Dask)."""
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    assert any(d.startswith("dask[distributed]") for d in deps)
