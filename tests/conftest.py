"""Test-suite settings shared by every test module."""

import os

import pytest
from hypothesis import HealthCheck, settings

# Machines here have 2 cores shared by multi-process gloo tests: wall-clock deadlines would
# only measure the neighbours. CI runs derandomized so a red run is reproducible.
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(autouse=True)
def _no_inherited_terminal_width(monkeypatch):
    """Tables follow ``COLUMNS`` (dicesim.cli.tables.console); pytest-xdist workers inherit
    COLUMNS=80 from execnet, so every test starts without it, as a serial run does, and a test
    that wants a width sets it."""
    monkeypatch.delenv("COLUMNS", raising=False)
