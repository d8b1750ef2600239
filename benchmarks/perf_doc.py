"""docs/performance.md and its scaling plot, written from one run of ``benchmarks/bench_sim.py``.

The prose lives here so the page is regenerated, never edited: change this template, rerun
``python benchmarks/bench_sim.py --write``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import plotly.graph_objects as go

from dicesim.atomic import write_text_atomic
from dicesim.report.html import Section, render_report


@dataclass(frozen=True)
class Row:
    """One target: the case, the target, the measured figure, whether it is met, simpy events, x floor."""

    case: str
    target: str
    measured: str
    met: bool | None  # None: shown for comparison, no target
    events: int
    floor: float


def _num(x: float, fmt: str) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def fig_scaling(scaling: list) -> go.Figure:
    """CPU seconds per ``simulate`` call against GPUs, both routing modes, with and without the shortcuts."""
    fig = go.Figure()
    for mode in ("expected", "multinomial"):
        rows = [r for r in scaling if r[0].endswith(mode) and r[2] is not None]
        fig.add_scatter(x=[w for _, w, _, _, _ in rows], y=[f.cpu_s for _, _, f, _, _ in rows], mode="lines+markers",
                        name=f"{mode} routing (default shortcuts)")
        full = [(w, m.cpu_s) for _, w, _, m, _ in rows if m is not None]
        fig.add_scatter(x=[w for w, _ in full], y=[c for _, c in full], mode="lines+markers",
                        name=f"{mode} routing, full simulation", line={"dash": "dot"})
    fig.update_layout(title="XL/2, dice, 50 steps, batch 8: CPU time per simulate() call",
                      xaxis_title="GPUs", yaxis_title="CPU time (s)", xaxis_type="log", yaxis_type="log",
                      height=420, width=760)
    return fig


def write_docs(docs: Path, *, machine: str, per_event_s: float, targets: list[Row], scaling: list, others: list,
               command: str) -> list[Path]:
    """Write docs/performance.md and docs/performance.html; return both paths."""
    html = render_report([Section(title="Scaling", items=[fig_scaling(scaling)])],
                         title="dicesim simulator: CPU time against GPUs", plotlyjs="cdn")
    page = _page(machine=machine, per_event_s=per_event_s, targets=targets, scaling=scaling, others=others,
                 command=command)
    return [write_text_atomic(page, docs / "performance.md"), write_text_atomic(html, docs / "performance.html")]


def _page(*, machine: str, per_event_s: float, targets: list[Row], scaling: list, others: list, command: str) -> str:
    t_rows = "\n".join(f"| {r.case} | {r.target} | {r.measured} | {'-' if r.met is None else 'yes' if r.met else '**no**'} | "
                       f"{r.events or '–'} | {_num(r.floor, '.0f')} |" for r in targets)
    s_rows = "\n".join(
        f"| {name} | {w} | {f.cpu_s:.3f} | {_num(m.cpu_s if m else float('nan'), '.2f')} | {f.events} | "
        f"{m.events if m else '–'} | {f.step_latency_s * 1e3:.3f} | {note or '–'} |" if f is not None
        else f"| {name} | {w} | – | – | – | – | – | {note} |" for name, w, f, m, note in scaling)
    o_rows = "\n".join(
        f"| {name} | {f.cpu_s:.3f} | {m.cpu_s:.2f} | {'yes' if f.meta['fold']['applied'] else 'no'} | "
        f"{f.meta['reuse']['reused_windows']} of {f.meta['reuse']['windows']} | {f.step_latency_s * 1e3:.3f} |"
        for name, f, m in others)
    return f"""# Simulator performance

How fast one `simulate()` call is: plan, routing, engine run and every metric, without event
recording. This page is written by `{command}`; the text is the template in
`benchmarks/perf_doc.py` (rerun the command, do not edit the page).

Measured on: {machine}. The load average says how busy the machine was; process CPU time is
far steadier than wall time under load, which is why the CPU-second targets use it.

## Targets (issues 11 and 17)

The floor is simpy's own cost per event on the same machine in the same run
({per_event_s * 1e6:.2f} us CPU per scheduled event, a bare loop of timeouts): `x floor` is the
measured CPU time divided by (events the engine scheduled x that cost). The shortcuts below
cut the events, so the ratio then mostly measures the fixed cost of building the inputs and
the metrics. The interactive commands are timed whole (`dicesim study`, `dicesim recommend`
with no arguments, start-up and report included, median of the runs, from another process);
their CPU figure adds the processes they waited for. A wall-time target is only meaningful on
an idle machine: the load average beside each figure says how far from one this run was (the
machine has 2 CPUs shared by several engineers).

| case | target | measured | met | simpy events | x floor |
|---|---|---|---|---|---|
{t_rows}

Strategy `dice`, batch 8 per GPU, 256 px, uniform expert load with expected counts unless
said otherwise. The sweep runs 5 strategies x 4 eight-GPU topologies x 5 batch sizes x 2 image
sizes x 5 step counts of XL/2 through `dicesim.sweep.run_sweep` on a 2-process Dask
LocalCluster (chunks of 25), wall time including the cluster's start.

## Scaling

CPU seconds per call against the number of GPUs, for expected and for sampled
(`sampling="multinomial"`) routing (plot: [performance.html](performance.html)). "full" is the
same call with `fold=False, reuse=False, sample_groups=0, sample_steps=0`: every rank, every step
simulated; both give the same step latency (the script checks it to 1e-9), or for a sampled run
the full one lies inside its interval. Above 16 alike groups a multinomial run simulates 3 of
them and predicts the slowest group with a 95% interval (last column; `dicesim.sim.sample`); with
fewer groups it simulates a sample of the steps (`dicesim.sim.stepsample`, same column).
The drawn tables of 16,384 GPUs x 50 steps take 3.08 GiB, inside the
4 GiB limit on routing tables (docs/limits.md); every rank's routing is still drawn, so that
point's CPU time is mostly drawing.

| case | GPUs | CPU s | CPU s, full | simpy events | events, full | step latency (ms) | sampled groups: predicted step latency, 95% interval (ms); or why not run |
|---|---|---|---|---|---|---|---|
{s_rows}

| other case | CPU s | CPU s, full | folded | windows reused | step latency (ms) |
|---|---|---|---|---|---|
{o_rows}

The strided rail cases: inside one 32-server unit the groups of a rail meet only at their leaf
switch, which is non-blocking, so they fold as isolated groups. Across units they share their
leaves' uplinks to the spine; alike groups that share links in the same roles still fold
(issue 17: simulated once, their flows loading each shared link once per group), and the
1,024-GPU strided target above is such a run.

## What makes it fast

- **Folding** (`dicesim/sim/fold.py`). Expert-parallel groups that share no link with any other
  group, and that map onto each other link by link (same bandwidths, latencies, link classes
  and endpoint links) while carrying the same routed rows, evolve identically. The engine runs
  one per class; the others copy its step ends, counters, link totals and (when recording)
  events. Contiguous groups inside a server always fold; groups that share a NIC, a leaf uplink
  or any link never do. `meta["fold"]` says what happened.
- **Window reuse** (`dicesim/sim/engine/reuse.py`). With counts on the all-to-all communicator, every
  communicating layer starts with a blocking count exchange that queues behind all earlier
  collectives: when it completes the group is idle and its state is fixed by its place in the
  plan (a *cut*). Between two cuts (a window) the evolution depends only on the window's
  instructions and the row matrices they move, so a window equal to an earlier one is taken
  from the record: clocks advance by the recorded duration, counters, link totals and
  collective counts by the recorded amounts. This is steady-state detection at layer
  granularity (repeats inside a step count too). `meta["reuse"]` gives windows and repeats.
- **Stream cuts** (`dicesim/sim/engine/streamcut.py`). The sequence family blocks the host at no
  collective, so it had no cut and no reuse (`sp` and `distrifusion` were over half of the
  default study's simulation CPU). Every rank's stream waits at once for the scatter that opens
  each step, on the group's one communicator: when it completes nothing is in flight and no rank
  computes; only the host clocks are free. A repeated window is taken from the latest simulated
  one with the same key in which no host held its stream back (no host gap, late launch or sync),
  provided every host runs at least as far ahead of its stream as it did there; each host clock
  then advances by what it did in that window. In the default study `sp` reuses 48 and
  `distrifusion` 47 of their 50 windows.
- **Batched plans for sampled routing** (`dicesim/sim/network/batchplan.py`). With `sampling =
  "multinomial"` no two all-to-alls are alike; the time went into one max-min solve per
  finishing flow per transfer, each a handful of numpy calls on a few dozen flows. Transfers of
  link-isolated groups start on idle links, so their plans are computed before the run, all
  together in lock step (one progressive-filling round raises every transfer's own level), bit
  for bit the reference planner's. Where every route back is the route there reversed (a
  switch, rail IB), a combine is its dispatch backwards and takes the dispatch's plan with the
  links mirrored, which halves the planning. Transfers are built from routes resolved once per
  group (`PairFlows`) instead of a loop per flow, all of a group's all-to-alls in one batch
  (`PairFlows.compile_many`, which numbers each transfer's links with a presence table, not a sort).
  A filling round works by flow, not by pair: the pairs are stored as columns (each flow's first,
  second, ... link), so one `take` and an OR over the columns find the flows a bottleneck freezes;
  flows are picked by index (numpy's boolean masks and masked divides over a random pattern cost
  several times more); loads are counted where every multiplicity is 1 and updated by subtraction
  (small integers: exact in any order). All tables' activation instants, group finishes and link
  byte totals are computed in one pass each, and a mirrored plan compares its flows by bytes. At
  this size (400-2,000 tables of 56 flows, ~10 levels per round) numpy's per-call overhead is most
  of the cost, so these count calls: the lock-step planner went from 81 to 51 ms (400 tables) and
  from 488 to 285 ms (2,000 tables; medians of 21, CPU, load 2.6). Experts' times are priced once
  per distinct row count over all simulated ranks (674 counts instead of 3,111 per-rank ones). The
  one-copy (skip) routing table is rounded a slice at a time, in cache.
- **Folding across shared links** (`dicesim/sim/fold.py`, `LinkShare` in
  `dicesim/sim/network/flowgroup.py`). Alike groups that cross shared links in the same roles
  with the same company evolve in lock step: one is simulated on a quotient network where each
  shared link carries its flows once per group it stands for. Equal to the full run
  (`tests/test_sim_fold.py`).
- **Routes of spread-out groups** (`dicesim/topology/fartrees.py`): one compiled multi-source
  Dijkstra with the search's tie-break gives the routes networkx gives, 12x faster at 1,024
  strided GPUs (`tests/test_topology_group_routes.py`).
- **Sampled groups** (`dicesim/sim/sample.py`) and **sampled steps** (`dicesim/sim/stepsample.py`):
  statistical, not exact (below).
- **Plans once per study** (`dicesim/plan/cache.py`): a study's evaluator and its workers build
  and replay each distinct plan once, not once per configuration. The same cache keeps what the
  engine derives from a plan (`dicesim/sim/engine/skeleton.py`): its program without costs,
  compiled once per (plan, communicators) and priced per run in one pass, and its window search,
  kept per (skeleton, which blocks are equal, matrix ids). `recommend` holds one cache per search,
  read by the timing classes, the quality model and the simulations. Equal to uncached runs
  number for number (`tests/test_sim_skeleton.py`, `tests/test_recommend_plans.py`).
- **Topologies once per study** (`dicesim/topology/cache.py`): the study's evaluator owns a
  `TopologyCache` beside its `PlanCache`: each topology graph is built once, and each (graph, groups)
  route search runs once for the fold, the engine and the trust facts. Per plan (`Plan.memo`,
  `PlanCache.derived`): the lag frames (copied per run) and the quality prediction. Per run: the
  family's held buffers are derived once for the memory estimate and the result (they were derived
  twice). Expected routing repeats one table over steps, so a group's matrix ids rank step 0's rows
  only (`tests/test_content_ids.py` checks them against the search over every step); pricing the
  cached program rewrites only its blocks and `ROWS` instructions (a third of a step's).
- **Per-rank placement in closed form** (`dicesim/placement.py`): the memory model asks every
  rank's group and place; the scan of every group made 16,384 GPUs cost 40 s of CPU.
- **Interactive commands**: `recommend` compares every pair of timing classes once, on bit sets
  (it compared them in every round, on sets of ~10^3 exchanges; since the skip-cache gate two
  classes can each be as fast as the other, and the default search then never ended: fixed).
  `recommend` runs in this process unless `--workers` is given (its rounds hold a few
  simulations each); `study` starts a LocalCluster only when its configurations' expected CPU
  time spread over the CPUs saves more than the cluster costs (`dicesim/cluster.py`,
  `workers_that_pay`, measured constants): small studies run in this process.
- **Expected counts are one table** (`dicesim/sim/costs/routing.py`): counts, sent and received rows
  are broadcast views over ranks and steps, so 1,024 ranks cost what 8 do.
- **Routing at scale** (`dicesim/topology/routing.py`): per-group searches stop once the group is
  reached, and topology validation checks reachability without an all-pairs table (it used to
  build 1,024 x 1,024 routes).
- **The cycle collector is paused during a call** (`dicesim/collector.py`, used by `dicesim/sim/api.py`
  and by `recommend`'s local search): a run allocates ~10^5 short-lived objects, and the full
  collections they triggered cost up to as much as the run; a search keeps one plan (~10^4
  actions) per timing class, and the full collections that rescanned them all were a quarter of
  `recommend`'s CPU (peak memory the same with the collector off: 470 vs 468 MB).
- Unchanged from before: one simpy process per rank (host clock inside it, callback-driven
  communicators), merged compute blocks, interference re-timing without most interrupts,
  precomputed op and expert times, memoised network plans per component history.

## Interactive commands: where the time goes (issue 17, item 3)

Both commands timed whole by `farm-bench -n 3 --vs BEFORE -- AFTER` (runs in turn, medians;
CPU = user + sys of the process and what it waited for), `python -m dicesim study --out DIR` (a
fresh DIR each run) and `python -m dicesim recommend --out DIR`, before = main at 03e0e1b, after
= branch `w3-17-int` at 3f862e3 (before its merge of main), 2026-12-07 19:41-19:44 UTC on the
2-CPU machine at load 1.2-2.7 (a quiet spell). Both commands run in one process.

| command | before | after |
|---|---|---|
| default `dicesim study` (288 configurations) | 20.1 s wall, 20.0 s CPU, 301 MiB | 10.5 s wall (10.3-13.1), 10.6 s CPU, 301 MiB |
| default `dicesim recommend` | 18.7 s wall, 13.7 s CPU, 497 MiB | 10.9 s wall (10.7-18.8), 10.8 s CPU, 454 MiB |

At load 4.4-6.7 (19:31-19:38 UTC, `--warmup 1`, after = 3d181a7) the same pairs gave 44.7 s
against 21.2 s wall (21.9 s against 12.7 s CPU) for the study and 15.3 s against 14.3 s wall
(15.1 s against 13.4 s CPU) for recommend.

Where the study's CPU goes after (`time.process_time` around each part, in one process, at
load ~5-7, so each figure is some 10-20% above a quiet machine's):
start-up 1.1 s (the modules of every command and what the study reads: pandas, networkx,
scipy, plotly; the study needs nearly all of them, so importing commands lazily saves nothing);
the 288 simulations with their metrics, trust band and quality 8.7 s (16.0 s before; by strategy
18-38 ms each, `sp` 25 ms and `distrifusion` 24 ms, which were 150 ms and 79 ms and over half
of the simulations before stream cuts); the report 1.4 s (the summary tables 0.8 s, each built
once now: they were built twice for the report and again for the terminal; figures 0.4 s, from
~1.5 s: one pass over the rows instead of two filters per trace; HTML 0.1 s); the rest (chunk
files, parquet, printed tables) about 1.5 s. Under cProfile a configuration's fixed work is
spread thin: building the engine's world 31% (pricing the cached program 7%, the group's
communication 6%), metrics 13%, the trust assessment 11%, the simpy run 19%, the memory
estimate 6%. Parsed built-in profiles, the NCCL model and the accuracy file are cached by their
text (pure functions of frozen content).

`recommend` after (cProfile): screening the 181 timing classes 44% (their plans 24%, replaying
each plan's held buffers 22%), the 47 simulations 35%, the messages of the 50 refused classes
9% (each tries the intervals 2..8). Members of a class no longer build their own plan for the
quality model: the class's plan is theirs (`timing_key`); 140 plan builds fewer.

Second round (branch `w3b-17-study`, what the bullet "Topologies once per study" lists, plus:
the study's busiest link named after ranking instead of naming every link, and a run's links
ranked once for it and the trust assessment; ranks that receive the same rows share one
expert-time table; the report reads text columns as Python strings, pandas 3's Arrow-backed ones
made its thousands of small filters slow). `farm-bench -n 3 --vs MAIN -- AFTER` (same commands,
before = main at 90715ad, after = 70824d7), 2026-12-07 20:31-20:32 UTC, load 2.0-2.6:

| command | before | after | after / before (median of pairs) |
|---|---|---|---|
| default `dicesim study` | 10.2 s wall (9.4-11.3), 10.1 s CPU | 7.6 s wall (7.5-8.9), 7.5 s CPU | 0.79 wall, 0.78 CPU |

At load 2.2-3.6 (20:24-20:26 UTC, after = ed6dd3f, before the last two changes) the pairs gave
11.2 s wall (10.0-14.3) against 14.0 s (11.6-19.7), ratio 0.80.

In one process (`time.process_time` around each part, 20:32 UTC, before / after): the whole
command 10.3 / 7.7 s; start-up 1.0 / 1.0 s; the 288 configurations 8.2 / 5.7 s, of which building
the engines 2.45 / 1.3 s, the simpy runs 1.5 / 1.3 s, the results 0.85 / 0.5 s, the trust
assessment 0.7 / 0.5 s, chunk files 0.35 / 0.2 s; the report 0.95 / 0.8 s.

First round's outputs: `study.csv` and `summary.txt` of the default study and `dicesim compare`'s
output are byte for byte the same, except the `sp` and `distrifusion` rows' latencies and what derives
from them, which differ by float round-off (at most 3e-13 relative: stream-cut reuse adds
recorded durations instead of re-deriving them). `recommend`'s output is the same but for its
timing line.

Second pass on `recommend` (branch `w3b-17-rec`; `farm-bench -n 3 --vs BEFORE -- AFTER`, before
= main at 90715ad, after = the branch, 2026-12-07 20:30-20:31 UTC, load 2.6-3.7): **6.0 s wall,
6.1 s CPU** (medians; 5.9-6.2 s wall; 394 MiB) against 10.1 s wall, 10.0 s CPU (457 MiB); median
ratio 0.58 wall, 0.60 CPU (an earlier pair with tests running beside it: 0.57 wall, 0.60 CPU). All exact: stdout, `candidates.csv` and
`candidates.parquet` byte for byte the same as main's, `report.html` the same but for plotly's
random element ids, and the timing line. What changed, CPU of the parts in one process
(`time.process_time` around each): (1) the search runs with the cycle collector paused (above;
~2.5 s of ~10 s CPU); (2) a search's plans share their actions: the `PlanCache` keeps a pool and
`build_plan(..., actions=pool)` takes an equal frozen `Action` from it instead of making another
(making them was most of a build; `tests/test_plan_pool.py`): screening 3.0 -> 2.0 s CPU, peak
memory 457 -> 394 MiB; (3) a refused class's seven probe builds (intervals 2..8) make no actions
(`rules._build(probe=True)`, the same decisions: `tests/test_cond_gate.py` checks they miss at the
same step and layer); (4) the final table is written one column at a time, not one `.loc` per
member and column. Left (CPU after, in one process): start-up imports ~1.4 s (pandas, networkx,
scipy: the command needs them), the 47 simulations 1.7 s (engine set-up and runs,
`dicesim/sim/engine/`), replaying each class's held buffers 1.2 s (~9 ms a plan in Python: the
reference caches' replay; a sweep over only the in-flight entries instead of every layer's measured
no faster), the rest of the screening 0.8 s, re-running the top 5 for the trust band 0.3 s.

Third pass on `recommend` (branch `w4-17-rec`; `farm-bench -n 5 --vs BEFORE -- AFTER`, before =
main at 80125d5, after = the branch, 2026-12-07 22:09-22:10 UTC, load 2.7-3.4): **5.0 s wall, 4.7 s
CPU** (medians; 4.9-5.4 s wall; 407 MiB) against 6.9 s wall, 6.5 s CPU (403 MiB); median ratio 0.72
wall, 0.72 CPU. Two `bench_sim.py`-style medians of 3 right after: 5.4 s (load 3.4) and 4.8 s (load
3.9): the 5 s target is met only at the limit, within the machine's drift. All exact: stdout,
`candidates.csv` and `candidates.parquet` byte for byte main's, `report.html` the same but for
plotly's random element ids, and the timing line. What changed: (1) the held-buffer replay of the
`reference`/`reference_gc` policies (`dicesim/plan/expert/replay.py`) replays a step only when it
does not repeat an earlier one: a step whose actions are those of step `t - p` moved by `p` (same skip
rows), entered with the caches of step `t - p` moved the same way (issue numbers moved by what the
`p` steps issued), holds and frees what step `t - p` did, moved; a put frees only the finished prefix
of the entries holding a send buffer (kept in issue order). `buffers._reference` (one action at a
time) stays the statement of the rules and the oracle (`tests/test_buffer_replay.py`: equal held
buffers and frees, in order, over every semantics field, 1-8 layers, 1-40 steps; three deliberate
breaks each failed it). The 134 plans: 1.0-1.1 s -> 0.25-0.3 s CPU (collector off, one process);
a 50-step plan replays 4-8 of its steps. (2) `HeldBuffer` is a named tuple (a plan holds ~2,800;
a frozen dataclass cost ~3x to make); `lag_table` skips the actions that neither make nor read an
output (lag tables byte-identical, md5 over 350 plans). (3) `PlanRefused` reads its "allowed" part
(seven probe builds) only when the message is read; the search reads only `brief` (~0.17 s).
(4) Start-up: `scipy.sparse.csgraph` is imported where a `FarTrees` is made (groups spread over
servers); the program's start-up runs with the collector paused and is frozen after it
(`collector.started`, `gc.freeze`), and its closing full collection is skipped: collections
0.24 -> 0.16 s CPU (`gc.callbacks`). Tried and dropped: the top-5 re-runs sharing the search's plan
cache (0.09 s less work, but the plans kept alive made later collections cost 0.6-1.3 s more);
importing only the invoked command's module (the other commands cost 13 ms once the needed modules
are in). Left (CPU, one process): start-up imports 1.2-1.4 s (pandas ~0.3 s; `scipy.optimize` ~0.15-
0.3 s, for the quality fit's `nnls`, compiled code with no exact replacement; networkx ~0.13 s), the
47 simulations ~1.4 s (`dicesim/sim/engine/`), building the plans ~0.45 s, the top-5 re-runs 0.2-
0.3 s. This machine sets `PYTHONDONTWRITEBYTECODE=1`: dicesim's own modules are compiled from source
at every start (~0.3 s CPU of the start-up; both sides of every pair pay it).

After the second round the study's 10 s is met at a quiet spell by more than the machine's
drift (7.6 s wall median, slowest of 3 runs 8.9 s); under heavier load (3-4) wall time rises above
CPU time, which no change to the study removes. What is left is spread thin: the simpy runs
(1.3 s), building each engine's world (1.3 s, pricing the cached program the largest part),
start-up (1.0 s), the report (0.8 s), the trust assessment (0.5 s). The second round changes no
output: `study.csv` and `summary.txt` (cmp), `study.parquet` (`DataFrame.equals`), the terminal
output and `report.html` (but for plotly's random div ids) are those of main at 90715ad.

First round: not met: the study's 10 s by about 5% (10.5 s at a quiet spell; the rest of its fixed work per
configuration has no part over a fifth of it), `recommend`'s 5 s by about 2x (bound by building
and replaying one plan per timing class, and its 47 simulations). Dask does not pay for either:
the constants of `dicesim/cluster.py` were re-measured after these changes (default study with 2
workers: 16.6 s wall and 28.5 s CPU, against 11.2 s and 11.3 s in this process, load 1.7).

## Exactness

Both shortcuts are exact or off. Folding copies bit-identical results (a folded run's tables
and trace equal the unfolded run's exactly, `tests/test_sim_fold.py`); reuse matches the full
run to float round-off of absolute times (`tests/test_sim_reuse.py`, every strategy preset,
random strategies, profiles with host overhead, interference and slowed links; stream cuts:
`tests/test_sim_streamcut.py`, the sequence presets, warm-up steps, host-bound profiles, hosts
whose lead shrinks until they hold the streams, random profiles). Reuse turns
itself off (and says why) for counts on a separate communicator, one-rank groups, recorded
runs, and groups that share a link (or an endpoint link that compute slows) with another
group. Batched plans equal the reference planner's bit for bit (`tests/test_sim_batchplan.py`).

Sampled groups are one statistical shortcut. With drawn routing no two groups carry the same
rows; above 16 alike, isolated groups the engine simulates 3 chosen by the seed and predicts the
slowest of all from their totals (normal model, pivot quantiles by Monte Carlo). The result says
so: `step_latency_low_s` / `step_latency_high_s` (95%) in the totals and `--json`, the simulated
groups and their spread in `meta["sample"]`; `tests/test_sim_sample.py` checks the interval's
coverage against full simulations over many seeds. `sample_groups=0` simulates every group.

Sampled steps are the second (`dicesim/sim/stepsample.py`). With drawn routing every step carries
new draws, so no window repeats and a group costs its whole simpy walk. Where groups are not
sampled, the engine runs a shortened plan instead: the warm-up steps and the closing steps with
their own draws, and a random sample (the seed's) of the steady steps in between, each with the
draws and the actions of the full-run step it stands for. Steady steps repeat with the plan's
period (4 for `dice`: skip-cache gates and alternating copies), so the sample is drawn per phase
and placed in phase; the shorter plan is checked to be the full plan with whole periods removed.
What crosses a step boundary (displaced collectives still in flight, stream and link timing)
comes from the sampled predecessor, another independent draw of the same law. The unsimulated
steady steps are predicted per phase from the simulated ones, with a Student-t interval (shared
within-phase variance, `n - p` degrees of freedom; the simulated steps count as draws, not as the
full run's own values; steps correlated over the plan's carry depth `d` (a displaced copy finishes
`d` steps later) at the long-run variance's bound, `(d + 1)` times the step variance). Coverage
against full simulations (S/2 on 4 slow-linked GPUs, 200 fresh seeds each): `dice` 198, `sync` 197,
`displaced` 198 of 200 (before the carry depth: `displaced` 53 of 60; docs/model.md). The result says so:
`step_latency_low_s` / `step_latency_high_s` (95%), `steps_simulated` and `step_sd_s` in the
totals and `--json`, which steps were simulated in `meta["steps"]`; `tests/test_sim_stepsample.py`
checks the coverage against full simulations over many seeds (three strategies). Lags, staleness,
memory and the collective count come from the full plan (exact); the per-step rows of unsimulated
steps are their phase's means and link totals are scaled to the predicted run time. A run with
fewer than twice the sampled steady steps (for `dice`, 50 steps simulate 10), expected routing,
and recorded runs simulate every step. Sampling steps is the default for drawn routing (as sampling
groups is above 64 alike groups): `sample_steps=0` or `dicesim simulate --every-step` simulate every
step (exact).

## Limits

- Sampled (multinomial) routing cannot reuse windows (every all-to-all differs): each simulated
  step still costs an event per rank instruction and one max-min trajectory per all-to-all
  (planned in lock step, `batchplan.py`; the flows themselves cost no simpy event). Sampled
  steps (the default) cut the G/2 run to 10 of its 50 steps (2 warm-up, 7 sampled steady, the closing one: the
  fewest that hold every one of `dice`'s 4 phases, a degree of freedom and the closing step's
  phase). Before the planner's call-count work above those 10 steps alone took about 0.18 s CPU
  (half lock-step planning, half the simpy walk) and the run 3.5x; after it the sampled run measures
  0.194-0.198 s against 0.063-0.070 s expected, 2.8-3.1x (medians of 5, `time.process_time`, load 4.5-4.8,
  two alternating runs each of main 017fbf4 and of the change): at the 3x target, not clearly under it
  on this loaded machine. Its largest parts are lock-step planning (~0.055 s: 57 rounds of ~8 filling
  levels, each ~25 numpy calls on 400 tables), the simpy walk of 10 steps (~0.05 s), the routing draws
  and the held-buffer replay. An engine that
  evaluates a window without simpy events (compute and communication slow each other op by op,
  so it is not a closed form) is not built: measured, it would not reach 3x alone. Of the exact
  multinomial G/2 run's ~0.98 s CPU, lock-step max-min planning (`FlowNetwork.preplan`: 2,000
  all-to-alls of 56 flows, 57 rounds, ~8 filling levels each) is ~0.53 s and the simpy walk ~0.28 s
  (`Engine.__init__` / `Engine.run` timed, load 5-6); a window evaluator without events leaves the
  planning. Stacking tables of one flow-link pattern into dense `[F, B]` arrays (same floats) measured
  0.50 s against 0.53 s (OpenBLAS threads made its small matrix products 10x slower under load) and
  was dropped. The exact run (`sample_steps=0`, the default before the sampler's carry-depth interval) was 13-15x; with the planner's call-count
  work it measures 0.69-0.79 s, 10-11x (same runs as above).
- Every rank's routing is drawn, not only the sampled groups' (the memory estimate reads every
  rank's received rows): drawing is the largest single part of the 1,024-GPU multinomial case
  and most of the 16,384-GPU one.
- Groups that share links but are not alike (different company on the shared links) are still
  simulated rank by rank.

## Profiling

`python benchmarks/bench_sim.py --repeat 1 --profile --quick` prints the top cProfile entries
of the 1,024-GPU, the G/2 and the multinomial G/2 case.
"""
