"""The simulator, calibration, reports and CLI import and run without torch installed."""

import subprocess
import sys

SCRIPT = """
import sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
import dicesim, dicesim.sim.api, dicesim.calibrate, dicesim.compare, dicesim.sweep, dicesim.report
from dicesim.cli import main
assert main(["simulate", "--model", "G/2", "--topology", "dgx-h100", "--steps", "2", "--json"]) == 0
assert main(["strategy", "show", "dice", "--layers", "4", "--steps", "3"]) == 0
"""


def test_simulator_needs_no_torch():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
