"""Outputs that would destroy inputs or each other, and outputs the file system refuses (issue 19,
classes 1 and 6): every command that writes is refused, with one line and exit code 2, before
anything is written, when

- its output is one of its inputs, however the path is spelled (the same name, a symbolic link,
  a hard link, ``..``), or a result directory would write over an input inside it;
- two of its outputs are one file;
- its ``--out`` lock is reached through a second name for the same directory;
- a result directory holds a directory where a result file goes (the set would be half written);
- ``--out`` is an existing file where a directory is needed, below a file, or on /proc.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from fuzz_cases import EXEC_TRACE, PUBLISHED, ROOT, TINY, run_cli, verdict

SCENARIO = ('[model]\nname = "tiny"\n[workload]\nbatch = 1\nimage_size = 32\nsteps = 2\n'
            '[topology]\nname = "tiny-ring4"\nworld_size = 4\n[profile]\nfile = "rtx4090"\n')
SWEEP = ('[sweep]\nname = "s"\n[base.model]\nname = "tiny"\n[base.workload]\nbatch = 1\nimage_size = 32\n'
         'steps = 2\n[base.topology]\nname = "tiny-ring4"\nworld_size = 4\n[base.profile]\nfile = "rtx4090"\n'
         '[axes]\nstrategy = ["sync", "dice"]\n')
STUDY = ('[study]\nname = "s"\nmodels = ["tiny"]\ntopologies = ["tiny-ring4"]\nworld_sizes = [4]\nbatches = [1]\n'
         'image_sizes = [32]\nstrategies = ["dice"]\nsteps = 2\n')


def _refused(o, needle: str = "") -> str:
    problem = verdict(o, expect_error=True)
    assert problem is None, f"{problem}: {o.err or o.crash}"
    line = o.err.strip()
    assert needle in line, line
    return line


def _snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


# --- an output that is an input, however it is named --------------------------------------
def _alias(kind: str, target: Path, d: Path) -> Path:
    """A second name for ``target`` in ``d``."""
    if kind == "same":
        return target
    if kind == "dotdot":
        (d / "sub").mkdir(exist_ok=True)
        return d / "sub" / ".." / target.name
    link = d / f"alias-{kind}{''.join(target.suffixes)}"
    (os.symlink if kind == "symlink" else os.link)(target, link)
    return link


#: every command that writes a file, with an input it reads: (name, input file, argv(input, output))
FILE_WRITERS = [
    ("results table --out", "run.trace.json", lambda i, o: ["results", "table", str(i), "--out", str(o)]),
    ("results table --report", "run.trace.json", lambda i, o: ["results", "table", str(i), "--report", str(o)]),
    ("results report", "table.csv", lambda i, o: ["results", "report", str(i), "--out", str(o)]),
    ("trace merge", "run.trace.json", lambda i, o: ["trace", "merge", str(i), str(EXEC_TRACE), "--out", str(o)]),
    ("calibrate", "run.trace.json", lambda i, o: ["calibrate", str(i), "--out", str(o)]),
    ("accuracy --published --write-model", "published.toml",
     lambda i, o: ["accuracy", "--published", str(i), "--write-model", str(o)]),
    ("accuracy --paper --out", "acceptance.toml", lambda i, o: ["accuracy", "--paper", str(i), "--out", str(o)]),
    ("topology export", "topo.toml", lambda i, o: ["topology", "export", str(i), str(o)]),
    ("topology show --html", "topo.toml", lambda i, o: ["topology", "show", str(i), "--html", str(o)]),
    ("validate quality --out", "ckpt.pt", lambda i, o: ["quality", "--model", "tiny", "--checkpoint", str(i),
                                                        "--out", str(o)]),
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Every writer's input, made once; each test copies them."""
    d = tmp_path_factory.mktemp("inputs")
    _make_inputs(d)
    return d


def _make_inputs(d: Path) -> None:
    shutil.copy(EXEC_TRACE, d / "run.trace.json")
    (d / "table.csv").write_text("source,strategy,step_latency_s\nsim,dice,0.1\n")
    shutil.copy(PUBLISHED, d / "published.toml")
    shutil.copy(ROOT / "traces" / "acceptance" / "dice-paper.toml", d / "acceptance.toml")
    assert run_cli(["topology", "export", "tiny-ring4", str(d / "topo.toml")]).code == 0
    (d / "ckpt.pt").write_bytes(b"not read: the output check comes first")


@pytest.mark.parametrize("kind", ["same", "symlink", "hardlink", "dotdot"])
@pytest.mark.parametrize("name, infile, argv", FILE_WRITERS, ids=[w[0] for w in FILE_WRITERS])
def test_an_output_that_is_an_input_is_refused(tmp_path, inputs, name, infile, argv, kind):
    shutil.copy(inputs / infile, tmp_path / infile)
    target = _alias(kind, tmp_path / infile, tmp_path)
    before = _snapshot(tmp_path)
    o = run_cli(argv(tmp_path / infile, target), executor=name.startswith("validate"))
    _refused(o, "also an input of this command")
    assert _snapshot(tmp_path) == before  # the input is intact and nothing was added


@pytest.mark.parametrize("argv, needle", [
    (lambda d: ["results", "table", str(EXEC_TRACE), "--out", f"{d}/x.csv", "--report", f"{d}/x.csv"], "same file"),
    (lambda d: ["results", "table", str(EXEC_TRACE), "--out", f"{d}/x.csv", "--report", f"{d}/l.csv"], "same file"),
    (lambda d: ["results", "table", str(EXEC_TRACE), "--out", f"{d}/x.csv", "--report", f"{d}/sub/../x.csv"],
     "same file"),
    (lambda d: ["accuracy", "--published", str(PUBLISHED), "--out", f"{d}/p.md", "--write-model", f"{d}/p.md"],
     "same file"),
    # accuracy --out PAGE also writes PAGE's .html figure: a page named .html is both
    (lambda d: ["accuracy", str(EXEC_TRACE), "--out", f"{d}/page.html"], "same file"),
])
def test_two_outputs_that_are_one_file_are_refused(tmp_path, argv, needle):
    (tmp_path / "sub").mkdir()
    (tmp_path / "x.csv").write_text("old\n")
    os.symlink(tmp_path / "x.csv", tmp_path / "l.csv")
    _refused(run_cli(argv(tmp_path)), needle)
    assert (tmp_path / "x.csv").read_text() == "old\n"
    assert not (tmp_path / "page.html").exists() and not (tmp_path / "p.md").exists()


#: every command that writes a result directory, with an input named like one of its result files
DIR_WRITERS = [
    ("simulate", "summary.json", SCENARIO, lambda i, o: ["simulate", str(i), "--out", str(o)]),
    ("compare", "summary.csv", "1,2,3,4\n", lambda i, o: ["compare", *TINY, "--profile", "rtx4090", "--histogram",
                                                         str(i), "--out", str(o)]),
    ("sweep", "report.html", SWEEP, lambda i, o: ["sweep", str(i), "--out", str(o), "--workers", "0"]),
    ("study", "summary.txt", STUDY, lambda i, o: ["study", str(i), "--out", str(o), "--workers", "0"]),
    ("recommend", "candidates.csv", SCENARIO.replace("steps = 2", "steps = 4"),  # 1-2 steps hung before issue 19
     lambda i, o: ["recommend", str(i), "--out", str(o), "--workers", "0", "--schemes", "displaced"]),
    # a valid checkpoint that happens to carry the name of the trace the run writes
    ("validate run --trace-out", "validate-tiny-dice-w2-gloo.trace.json", None,
     lambda i, o: ["run", "--steps", "2", "--checkpoint", str(i), "--trace-out", str(o)]),
]


@pytest.mark.parametrize("name, infile, text, argv", DIR_WRITERS, ids=[w[0] for w in DIR_WRITERS])
def test_a_result_set_over_its_own_input_is_refused(tmp_path, name, infile, text, argv):
    d = tmp_path / "out"
    d.mkdir()
    if text is None:
        from fuzz_cases import make_checkpoint

        make_checkpoint(d / infile)
    else:
        (d / infile).write_text(text)
    before = _snapshot(tmp_path)
    _refused(run_cli(argv(d / infile, d), executor=name.startswith("validate")))
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("name, infile, text, argv", DIR_WRITERS[:5], ids=[w[0] for w in DIR_WRITERS[:5]])
def test_a_directory_where_a_result_file_goes_writes_nothing(tmp_path, name, infile, text, argv):
    """A result set is written completely or not at all: the obstacle is found before any file."""
    src = tmp_path / "in.toml"
    src.write_text(text if text and text.startswith("[") else SCENARIO)
    d = tmp_path / "out"
    (d / infile).mkdir(parents=True)  # a directory where this command writes one of its files
    (d / infile / "keep").write_text("x")
    args = argv(src, d) if name != "compare" else ["compare", *TINY, "--out", str(d)]
    line = _refused(run_cli(args), "is a directory where a result file goes")
    assert "nothing was written" in line
    assert sorted(p.name for p in d.iterdir()) == [infile]


def test_the_out_lock_is_found_through_a_symbolic_link(tmp_path):
    from dicesim.outlock import output_lock

    real = tmp_path / "results"
    real.mkdir()
    link = tmp_path / "also-results"
    os.symlink(real, link)
    (tmp_path / "s.toml").write_text(SWEEP)
    with output_lock(real):  # another run writes into `results`
        o = run_cli(["sweep", str(tmp_path / "s.toml"), "--out", str(link), "--workers", "0"])
    _refused(o, "is in use by pid")
    assert list(real.iterdir()) == []


# --- places the file system refuses -------------------------------------------------------
@pytest.mark.parametrize("make, needle", [
    (lambda d: ["simulate", *TINY, "--out", str(d / "file.txt")], "is a file; --out needs a directory"),
    (lambda d: ["simulate", *TINY, "--out", str(d / "file.txt" / "sub")], "is a file, so nothing can be written"),
    (lambda d: ["results", "table", str(EXEC_TRACE), "--out", str(d / "file.txt" / "t.csv")],
     "is a file, so nothing can be written"),
    (lambda d: ["results", "table", str(EXEC_TRACE), "--out", str(d)], "is a directory; --out needs a file"),
    (lambda d: ["sweep", str(d / "s.toml"), "--out", "/proc/dicesim-test", "--workers", "0"], "cannot write in /proc"),
    (lambda d: ["results", "table", str(EXEC_TRACE), "--out", "/proc/self/t.csv"], "cannot write in /proc"),
    (lambda d: ["topology", "export", "tiny-ring4", "/proc/t.toml"], "cannot write in /proc"),
    (lambda d: ["simulate", *TINY, "--out", "/dev/null"], "is a device or special file"),
])
def test_unwritable_places_are_one_line(tmp_path, make, needle):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "s.toml").write_text(SWEEP)
    _refused(run_cli(make(tmp_path)), needle)


def test_train_small_refuses_an_out_dir_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    _refused(run_cli(["train-small", "--steps", "2", "--out-dir", str(tmp_path / "f")], executor=True),
             "--out-dir")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_directory_is_one_line(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        _refused(run_cli(["results", "table", str(EXEC_TRACE), "--out", str(ro / "t.csv")]), "not writable")
    finally:
        ro.chmod(0o755)
