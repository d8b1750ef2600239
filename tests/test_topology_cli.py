"""`dicesim topology ...`: output carries units; user errors are one line and exit code 2."""

from __future__ import annotations

import pytest

from dicesim.cli import main
from dicesim.topology import TOPOLOGY_NAMES, get_topology


def _run(capsys, *args):
    rc = main(["topology", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_list_shows_every_preset_with_units(capsys):
    rc, out, _ = _run(capsys, "list")
    assert rc == 0
    assert all(name in out for name in TOPOLOGY_NAMES)
    assert "nvlink4 450 GB/s" in out and "ib_ndr 50 GB/s" in out


def test_show_prints_link_classes_in_gbps_and_us(capsys):
    rc, out, _ = _run(capsys, "show", "8x-rtx4090-pcie", "--sources")
    assert rc == 0
    assert "31.5 GB/s" in out and "0.6 us" in out and "20 GB/s" in out and "0.05 us" in out
    assert "staged through host memory" in out and "hardware.md" in out


def test_route_prints_hops_latency_and_bottleneck(capsys):
    rc, out, _ = _run(capsys, "route", "8x-rtx4090-pcie", "0", "4")
    assert rc == 0
    assert "n0.mem0" in out and "n0.cpu1" in out
    assert "7 hops, latency 2.65 us, bottleneck 20 GB/s" in out


def test_export_then_show_the_file(capsys, tmp_path):
    path = tmp_path / "dgx.toml"
    rc, out, _ = _run(capsys, "export", "dgx-a100", str(path))
    assert rc == 0 and "16 directed edges" in out
    rc, out, _ = _run(capsys, "show", str(path))
    assert rc == 0 and "300 GB/s" in out
    assert get_topology(str(path)).graph["gpu"] == "a100-sxm"


@pytest.mark.parametrize("args, problem", [
    (("show", "dgx-b200"), "unknown topology 'dgx-b200'"),
    (("show", "nothere.toml"), "nothere.toml: file not found"),
    (("route", "dgx-h100", "0", "8"), "dst: rank 8 out of range (allowed: 0..7)"),
    (("export", "dgx-h100", "out.csv"), "out: unknown file type '.csv'"),
])
def test_user_errors_are_one_line_exit_2(capsys, args, problem):
    rc, _, err = _run(capsys, *args)
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and problem in err
    assert "Traceback" not in err


def test_bad_file_contents_exit_2(capsys, tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[graph]\nname = 'x'\n")
    rc, _, err = _run(capsys, "show", str(path))
    assert rc == 2 and f"{path}: " in err and "graph attribute 'p2p'" in err
