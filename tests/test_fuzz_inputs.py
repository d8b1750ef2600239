"""Every reader ends cleanly on hostile input: exit 0 or 2, at most 3 lines, no traceback, no
output left behind (hypothesis mutations of valid files; see tests/fuzz_cases.py).

The longer run with subprocesses and many more examples is benchmarks/fuzz_inputs.py; what it
found is in docs/fuzzing.md.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz_cases import READERS, hostile_file, make_seeds, run_cli, try_input, verdict

#: examples per reader in CI: cheap readers more, readers that simulate or sample fewer
EXAMPLES = {"sweep": 10, "sweep-sp": 8, "scenario-sp": 10, "profile": 10, "checkpoint": 8, "histogram-npy": 12, "histogram-csv": 12, "kineto": 8,
            "calibrate-meta": 15, "trace-json": 20, "study": 10, "digits-checkpoint": 8, "table-parquet": 12,
            "table-csv": 12, "published": 15, "acceptance": 15, "result-json": 15, "result-trace": 12,
            "result-summary": 12, "result-parquet": 12, "check-published": 12, "check-acceptance": 12,
            "check-study": 12, "check-result": 12, "check-table": 12, "accuracy-page": 12}
_BY_NAME = {r.name: r for r in READERS}


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return make_seeds(tmp_path_factory.mktemp("seeds"))


@pytest.mark.parametrize("name", sorted(_BY_NAME))
def test_seed_file_is_accepted(seeds, tmp_path, name):
    """The unmutated seed passes, so a mutation that fails is the mutation's doing."""
    reader = _BY_NAME[name]
    outcome, problem = try_input(reader, (seeds / reader.seed).read_bytes(), tmp_path / "work")
    assert problem is None, problem
    assert outcome.code in ((2,) if reader.expect_error else (0, 1) if reader.gate else (0,)), outcome.err


@pytest.mark.parametrize("name", sorted(_BY_NAME))
def test_hostile_input_ends_cleanly(seeds, tmp_path_factory, name):
    reader = _BY_NAME[name]
    work = tmp_path_factory.mktemp(name.replace("-", "_")) / "work"

    @settings(max_examples=EXAMPLES.get(name, 25), suppress_health_check=list(HealthCheck), database=None)
    @given(case=hostile_file(reader, seeds))
    def check(case):
        how, data = case
        outcome, problem = try_input(reader, data, work)
        assert problem is None, f"{reader.name} ({how} mutation): {problem}\n{outcome.crash or outcome.err}"

    check()


@pytest.mark.parametrize("argv, needle", [
    (["check", "{dir}/a.toml"], "not found"),
    (["calibrate", "{exec}", "--out", "{dir}/p.toml", "--where", "(" * 300 + "batch" + ")" * 300 + " == 1"],
     "nested"),
    (["calibrate", "{exec}", "--out", "{dir}/p.toml", "--where", "batch == " + "9" * 2000], "longer than"),
])
def test_named_hostile_arguments(seeds, tmp_path, argv, needle):
    from fuzz_cases import EXEC_TRACE

    args = [a.format(dir=tmp_path, exec=EXEC_TRACE) for a in argv]
    outcome = run_cli(args)
    assert verdict(outcome, tmp_path / "p.toml", expect_error=True) is None, outcome.err
    assert needle in outcome.err


@given(expr=st.text(max_size=60))
@settings(max_examples=25, database=None)
def test_where_expressions_never_escape(expr):
    from dicesim.calibrate.select import compile_selector
    from dicesim.errors import ConfigError

    try:
        compile_selector(expr)({"batch": 1, "model": "tiny", "world_size": 2, "strategy": "dice", "steps": 2,
                                "image_size": 32, "backend": "gloo", "device": "cpu", "stem": "s"})
    except ConfigError as exc:
        assert "\n" not in exc.one_line()
