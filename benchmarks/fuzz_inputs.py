"""Long hostile-input fuzzing of every reader: many more examples than CI, plus real subprocesses.

Uses the readers of tests/fuzz_cases.py (mutations: tests/fuzz_mutate.py). In-process mode drives the CLI entry
function; subprocess mode runs ``python -m dicesim`` / ``python -m validate`` per input and
checks the real exit code and stderr. Prints a Markdown summary (inputs tried, exit codes,
findings per reader) and, with ``--write docs/fuzzing.md``, replaces the results section of
that page. Failing inputs are kept under ``--keep`` for replay.

``--scale N`` also runs the hostile-input tests of issue 19 (tests/test_hostile_*.py: the
finite-results properties, the sweep-and-resume state machine, path aliasing for every writer,
...) with N times their CI examples (``DICESIM_FUZZ_SCALE``) and reports their examples and
outcome in the same section.

    python benchmarks/fuzz_inputs.py --examples 300 --subprocess 5 --scale 20 --write docs/fuzzing.md
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from hypothesis import HealthCheck, given, settings  # noqa: E402

from fuzz_cases import (  # noqa: E402
    READERS, Outcome, Reader, command_line, hostile_file, make_seeds, out_path, try_input, verdict,
)

BEGIN, END = "<!-- fuzz-results:begin -->", "<!-- fuzz-results:end -->"


def fuzz_in_process(reader: Reader, seeds: Path, examples: int, work: Path, keep: Path) -> dict:
    seen: set[str] = set()
    codes: Counter = Counter()
    findings: Counter = Counter()

    @settings(max_examples=examples, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=hostile_file(reader, seeds))
    def one(case):
        how, data = case
        digest = hashlib.sha256(data).hexdigest()[:16]
        if digest in seen:
            return
        seen.add(digest)
        outcome, problem = try_input(reader, data, work)
        codes["exception" if outcome.code is None else outcome.code] += 1
        if problem is not None:
            findings[f"{how}: {problem[:160]}"] += 1
            keep.mkdir(parents=True, exist_ok=True)
            (keep / f"{reader.name}-{digest}-{Path(reader.seed).name}").write_bytes(data)

    one()
    return {"tried": len(seen), "codes": codes, "findings": findings}


def fuzz_subprocess(reader: Reader, seeds: Path, examples: int, work: Path) -> dict:
    """The same inputs through a real process: exit code, stderr lines, no traceback."""
    codes: Counter = Counter()
    findings: Counter = Counter()
    cases: list[bytes] = []

    @settings(max_examples=examples, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=hostile_file(reader, seeds))
    def collect(case):
        cases.append(case[1])

    collect()
    module = "validate" if reader.executor else "dicesim"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    for data in cases:
        work.mkdir(parents=True, exist_ok=True)
        for p in work.iterdir():
            if p.is_file():
                p.unlink()
        f = work / reader.seed
        f.write_bytes(data)
        out = out_path(reader, work)
        proc = subprocess.run([sys.executable, "-m", module, *reader.argv(f, out)], capture_output=True, text=True,
                              env=env, timeout=600)
        codes[proc.returncode] += 1
        o = Outcome(proc.returncode, proc.stdout, proc.stderr)
        problem = verdict(o, out if reader.writes else None, expect_error=reader.expect_error, gate=reader.gate)
        if problem:
            findings[problem[:160]] += 1
    return {"tried": len(cases), "codes": codes, "findings": findings}


HOSTILE_TESTS = ("test_hostile_physical.py", "test_hostile_resume.py", "test_hostile_outputs.py",
                  "test_hostile_misread.py", "test_hostile_hangs.py", "test_hostile_resources.py",
                  "test_hostile_sequence.py")


def run_hostile_tests(scale: int) -> dict:
    """The issue-19 tests at ``scale`` x their CI examples, in a subprocess: outcome and the
    examples hypothesis ran per property or state machine."""
    env = {**os.environ, "DICESIM_FUZZ_SCALE": str(scale)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--hypothesis-show-statistics", *(str(ROOT / "tests" / t) for t in HOSTILE_TESTS)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=6 * 3600)
    wall_s = time.perf_counter() - t0
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-300:]
    examples: dict[str, int] = {}
    name = ""
    for line in proc.stdout.splitlines():
        m = re.match(r"^(tests/\S+::\S+):", line.strip())
        if m:
            name = m.group(1).split("::", 1)[1]
        m = re.search(r"(\d+) passing, (\d+) failing", line)
        if m and name:
            examples[name] = examples.get(name, 0) + int(m.group(1)) + int(m.group(2))
    failed = re.search(r"(\d+) failed", summary)
    return {"summary": summary, "examples": examples, "wall_s": wall_s, "failed": int(failed.group(1)) if failed else 0,
            "ok": proc.returncode == 0}


def markdown(results: dict, args: argparse.Namespace, wall_s: float, hostile: dict | None = None) -> str:
    total = sum(r["tried"] for r in results.values())
    sub_total = sum(r.get("sub", {}).get("tried", 0) for r in results.values())
    scale = f" --scale {args.scale}" if args.scale else ""
    lines = [
        f"Last run: `python benchmarks/fuzz_inputs.py --examples {args.examples} --subprocess {args.subprocess}{scale}` "
        f"({platform.python_version()}, {os.cpu_count()} CPUs, {wall_s:.0f} s wall, machine shared with other "
        "jobs): "
        f"**{total} distinct inputs in process, {sub_total} in subprocesses**.",
        "",
        "| reader | command | inputs (in process) | exit 0 / 2 / other | subprocess inputs | exit 0 / 2 / other | "
        "findings |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        reader = next(x for x in READERS if x.name == name)
        cmd = command_line(reader)
        c, s = r["codes"], r.get("sub", {"tried": 0, "codes": Counter(), "findings": Counter()})
        other = sum(v for k, v in c.items() if k not in (0, 2))
        s_other = sum(v for k, v in s["codes"].items() if k not in (0, 2))
        found = sum(r["findings"].values()) + sum(s["findings"].values())
        lines.append(f"| {name} | `{cmd}` | {r['tried']} | {c[0]} / {c[2]} / {other} | {s['tried']} | "
                     f"{s['codes'][0]} / {s['codes'][2]} / {s_other} | {found or 'none'} |")
    details = [f"- {name}: {k} (x{v})" for name, r in results.items()
               for k, v in list(r["findings"].items()) + list(r.get("sub", {}).get("findings", {}).items())]
    if details:
        lines += ["", "Open findings:", *details]
    if hostile:
        lines += ["", f"Hostile-input tests of issue 19 at {args.scale} x their CI examples "
                      f"(`DICESIM_FUZZ_SCALE={args.scale} pytest tests/test_hostile_*.py`, {hostile['wall_s']:.0f} s): "
                      f"{hostile['summary']}.", "", "| property or state machine | examples |", "|---|---|"]
        lines += [f"| `{k}` | {v} |" for k, v in sorted(hostile["examples"].items())]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=300, help="hypothesis examples per reader, in process")
    ap.add_argument("--subprocess", type=int, default=5, help="examples per reader run as a real process")
    ap.add_argument("--readers", default="", help="comma-separated reader names (default: all)")
    ap.add_argument("--keep", type=Path, default=Path(tempfile.gettempdir()) / "dicesim-fuzz-findings")
    ap.add_argument("--write", type=Path, help="replace the results section of this Markdown page")
    ap.add_argument("--scale", type=int, default=0, help="also run tests/test_hostile_*.py at N x their examples")
    args = ap.parse_args()
    chosen = [r for r in READERS if not args.readers or r.name in args.readers.split(",")]
    work_root = Path(tempfile.mkdtemp(prefix="dicesim-fuzz-"))
    results = {}
    t0 = time.perf_counter()
    try:
        seeds = make_seeds(work_root / "seeds")
        for reader in chosen:
            t = time.perf_counter()
            results[reader.name] = fuzz_in_process(reader, seeds, args.examples, work_root / reader.name, args.keep)
            if args.subprocess:
                results[reader.name]["sub"] = fuzz_subprocess(reader, seeds, args.subprocess,
                                                              work_root / f"{reader.name}-sub")
            r = results[reader.name]
            print(f"{reader.name}: {r['tried']} inputs, exit codes {dict(r['codes'])}, "
                  f"{sum(r['findings'].values())} findings ({time.perf_counter() - t:.0f} s)", file=sys.stderr)
    finally:
        shutil.rmtree(work_root, ignore_errors=True)
    hostile = run_hostile_tests(args.scale) if args.scale else None
    if hostile:
        print(f"hostile tests x{args.scale}: {hostile['summary']} ({hostile['wall_s']:.0f} s)", file=sys.stderr)
    text = markdown(results, args, time.perf_counter() - t0, hostile)
    print(text)
    if args.write:
        page = args.write.read_text()
        head, rest = page.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        args.write.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")
    found = any(r["findings"] or r.get("sub", {}).get("findings") for r in results.values())
    return 1 if found or (hostile is not None and not hostile["ok"]) else 0


if __name__ == "__main__":
    sys.exit(main())
