"""diffusers' blocks' host cost (benchmarks/host_diffusers_blocks.py) mapped onto the GPU machines' hosts:
the mapping in closed form, the file's errors, and the check it exists for (the step model's 17.2 us)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from dicesim.calibrate.host_blocks import HostBlocks, gpu_block_host, load_host_blocks
from dicesim.calibrate.published.step_level import EAGER_HOST_PER_KERNEL_S
from dicesim.errors import ConfigError
from script_module import ROOT


def _blocks(**rows: tuple[float, int]) -> HostBlocks:
    return HostBlocks(schema="dicesim-host-blocks/1", meta={}, block={
        name: {"diffusers_class": name, "host_s": h, "raw_host_s": h, "launches": n, "syncs": 0}
        for name, (h, n) in rows.items()})


def test_mapping_is_rho_times_cpu_plus_tau_per_launch():
    got = gpu_block_host(_blocks(a=(100e-6, 10), b=(50e-6, 40)), rho=2.0, tau_s=5e-6)
    assert got["a"].host_s == pytest.approx(2.0 * 100e-6 + 10 * 5e-6)
    assert got["b"].per_launch_s == pytest.approx((2.0 * 50e-6 + 40 * 5e-6) / 40)
    with pytest.raises(ConfigError, match="rho and tau"):
        gpu_block_host(_blocks(a=(1e-4, 1)), rho=-1.0, tau_s=0.0)


def test_malformed_file_is_one_line_naming_it(tmp_path):
    bad = tmp_path / "blocks.toml"
    bad.write_text('schema = "dicesim-host-blocks/1"\nmeta = {}\n[block.x]\ndiffusers_class = "X"\nhost_s = -1.0\n'
                   'raw_host_s = 1e-4\nlaunches = 3\nsyncs = 0\n')
    with pytest.raises(ConfigError) as err:
        load_host_blocks(bad)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)
    bad.write_text("schema = [")
    with pytest.raises(ConfigError, match="host_blocks"):
        load_host_blocks(bad)


def test_diffusers_flux_blocks_cost_the_host_per_kernel_the_step_model_charges():
    # the check: 17.2 us per kernel (the executor's ops on the H100 machine) against diffusers' own Flux
    # blocks, measured on CPU and mapped through the same machine's host fit
    from dicesim.calibrate.api import calibrate_runs
    from dicesim.calibrate.runs import load_runs

    cal = calibrate_runs(load_runs([ROOT / "traces/gpu/h100"]), base="h100-sxm",
                         host_costs=str(ROOT / "traces/host/cpu-executor.toml"))
    got = gpu_block_host(load_host_blocks(ROOT / "traces/host/cpu-diffusers-blocks.toml"), cal.host.rho,
                         cal.host.tau_s)
    for name in ("flux_double", "flux_single"):
        assert got[name].per_launch_s == pytest.approx(EAGER_HOST_PER_KERNEL_S, rel=0.10), name
    # the other measured blocks are heavier per kernel, never lighter than a bare launch
    assert all(b.per_launch_s > cal.host.tau_s for b in got.values())


@pytest.mark.skipif(importlib.util.find_spec("diffusers") is not None, reason="diffusers installed: would measure")
def test_benchmark_without_diffusers_is_one_line_exit_2():
    run = subprocess.run([sys.executable, "benchmarks/host_diffusers_blocks.py", "/dev/null"], cwd=ROOT,
                         capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "pip install diffusers==" in run.stderr


def test_dicesim_check_reads_both_host_files_and_refuses_a_broken_one(tmp_path):
    from dicesim.cli.check_cmd import check_file

    assert check_file(ROOT / "traces/host/cpu-diffusers-blocks.toml").startswith("host blocks: 4 diffusers blocks")
    assert check_file(ROOT / "traces/host/cpu-executor.toml").startswith("host costs: 6 timed ops")
    bad = tmp_path / "blocks.toml"
    bad.write_text('schema = "dicesim-host-blocks/1"\nmeta = {}\n[block.x]\ndiffusers_class = "X"\nhost_s = 1e-4\n'
                   'raw_host_s = 1e-4\nlaunches = 0\nsyncs = 0\n')
    run = subprocess.run([sys.executable, "-m", "dicesim", "check", str(bad)], cwd=ROOT, capture_output=True,
                         text=True)
    assert run.returncode == 2 and "launches" in run.stderr and run.stderr.strip().count("\n") == 0
