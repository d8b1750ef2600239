"""How large an input may be: every size and range limit a reader or a run enforces, in one place.

Each limit is sized from what this project's runs can hold on a 24 GiB machine (see
docs/limits.md for the reasoning and the measurements); an input past a limit is refused
with one line that names the limit, never truncated. Readers import the numbers from here;
nothing else defines a size limit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from dicesim.errors import ConfigError, DicesimError

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

#: integers that reach numpy or torch must fit a signed 64-bit integer
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1

# --- files ---------------------------------------------------------------------------------
#: TOML inputs (scenario, sweep, topology, profile) and GraphML topologies, bytes on disk
MAX_TEXT_FILE_BYTES = 16 * MiB
#: Chrome JSON traces (and torch.profiler exports), bytes after gunzip: parsing costs ~10x in
#: Python objects, so 256 MiB of JSON is ~3 GiB in memory; larger traces belong in Parquet
MAX_JSON_TRACE_BYTES = 256 * MiB
#: Parquet traces, bytes on disk, and the uncompressed size of their row groups
MAX_PARQUET_BYTES = 1 * GiB
MAX_PARQUET_UNCOMPRESSED_BYTES = 4 * GiB
#: events in one trace (~150 B each as a pandas table: 10 M events ~ 1.5 GiB)
MAX_TRACE_EVENTS = 10_000_000
#: timestamps and durations of torch.profiler events (1e15 us is 31 years: past it, float
#: sums of times lose the microsecond)
MAX_TRACE_TIME_US = 1e15
#: nesting of JSON/TOML documents (trace metadata nests 6 deep, scenarios 3)
MAX_NESTING = 32
#: router histograms given as .npy / .csv files, bytes on disk
MAX_HISTOGRAM_BYTES = 256 * MiB
#: length of a --where / --fit-on selection expression
MAX_EXPRESSION_CHARS = 1000
#: values (objects, arrays, numbers, strings) one JSON document may hold, counted before it is
#: parsed (commas and brackets). The simulator's own traces hold one value per 13.3 B (measured:
#: 333 MiB, 26.3 M values, XL/2 x64 80 steps), so a trace at MAX_JSON_TRACE_BYTES holds ~20 M;
#: 256 MiB of ``{},`` would be 89 M empty dicts (~6 GB as Python objects) and is refused
MAX_JSON_VALUES = 24_000_000
#: decoded size of a Parquet trace's columns (dictionary-encoded strings expanded), measured on
#: the still-encoded table: a few KB of dictionary indices can stand for gigabytes of text. A
#: trace at MAX_TRACE_EVENTS with names of ~12 characters decodes to ~1.3 GB
MAX_PARQUET_DECODED_BYTES = 2 * GiB
#: columns of a result table (a sweep table has ~40); rows x columns bounds what pandas builds
MAX_RESULT_TABLE_COLUMNS = 256

# --- topologies ----------------------------------------------------------------------------
#: nodes and directed edges of a topology file (routing all GPU pairs is O(GPUs^2))
MAX_TOPOLOGY_NODES = 20_000
MAX_TOPOLOGY_EDGES = 200_000
# link bandwidths and latencies, profile rates and times: the physical ranges below (PHYSICAL)

# --- runs ----------------------------------------------------------------------------------
#: simulated GPUs (and GPUs of a topology)
MAX_WORLD_SIZE = 16_384
#: denoising steps (samplers use 25..1000)
MAX_STEPS = 10_000
#: MoE layers of a model or a strategy table (the presets have 4..40)
MAX_LAYERS = 1024
#: images per GPU; with the largest image this keeps every row and byte count inside int64
MAX_BATCH = 1 << 20
#: image side in pixels
MAX_IMAGE_PX = 16_384
#: routed experts of a model
MAX_EXPERTS = 4096
#: bytes of the simulator's per-(layer, step, rank) routing tables, see ``sim_table_nbytes``
MAX_SIM_TABLE_NBYTES = 4 * GiB
#: events one recorded simulation may hold (``--out`` writes them as a trace)
MAX_RECORDED_EVENTS = 20_000_000
#: measured events per (rank, step, MoE layer) of a recorded run, links included (sync, the
#: busiest: 17.6 on XL/2 x8 8x-rtx4090-pcie); rounded up
EVENTS_PER_RANK_STEP_LAYER = 20
#: configurations of one sweep
MAX_SWEEP_POINTS = 100_000
#: result tables given to `results report` or `check` (Parquet or CSV): bytes on disk and rows.
#: The largest table a command writes is a sweep's, one row per configuration; its HTML
#: explorer embeds every row, so a larger table would make a page no browser opens
MAX_RESULT_TABLE_BYTES = 256 * MiB
MAX_RESULT_TABLE_ROWS = MAX_SWEEP_POINTS
#: local worker processes of a sweep or comparison (each holds a simulation in memory)
MAX_LOCAL_WORKERS = 256
#: local executor ranks (each is a process on this machine)
MAX_EXECUTOR_RANKS = 64
#: seeds of `validate quality --model digits` (each seed runs every strategy; 3 take ~3 min)
MAX_QUALITY_SEEDS = 1000
#: executor collective timeout, seconds (a day; past it a hung rank is never noticed)
MAX_TIMEOUT_S = 86_400
#: `validate train-small`: optimizer steps, images per step, torch threads (the machine's CPUs
#: at most: more threads than cores only slow a deterministic run down) and learning rate
MAX_TRAIN_STEPS = 1_000_000
MAX_TRAIN_BATCH = 4096
MAX_LEARNING_RATE = 10.0
#: work of one `accuracy --paper` run: the sum over the simulations it runs (each distinct
#: model x topology x batch x strategy) of GPUs x MoE layers x steps. The committed file needs
#: 652,800 (48 simulations: 5.4 s of CPU, 16.5 s wall on the shared 2-core machine), so the
#: limit is about a minute
MAX_ACCEPTANCE_WORK = 2_000_000
#: executor checkpoints: a file larger than this many times the model's fp32 weights is not
#: a checkpoint of it (EMA + weights + optimizer state is ~4x)
CHECKPOINT_SIZE_FACTOR = 8
MIN_CHECKPOINT_LIMIT_BYTES = 64 * MiB


# --- time and network -----------------------------------------------------------------------
#: connecting to a Dask scheduler (``--scheduler``) and reading its handshake; a port that
#: accepts and never answers is given up after this
SCHEDULER_CONNECT_TIMEOUT_S = 10.0
#: waiting for a connected scheduler to have at least one worker
SCHEDULER_WORKERS_TIMEOUT_S = 60.0
#: a Dask scheduler's handshake is one small msgpack frame (58 B measured); more is not Dask
MAX_SCHEDULER_HANDSHAKE_BYTES = 64 * KiB

# --- memory of runs ------------------------------------------------------------------------
#: a process that has imported the simulator and run a small simulation (measured: 139 MB RSS
#: after ``import dicesim.sim.api``, 194-208 MB after XL/2 x64 for 100-400 steps)
RUN_BASE_NBYTES = 256 * MiB
#: peak memory per recorded event, estimated as :func:`recorded_events` (measured: XL/2 x64
#: 8x-dgx-h100-rail ``simulate --out``, 20 and 80 steps: 0.88 and 2.84 GB peak, 0.91 KB per
#: estimated event over the difference)
RECORDED_EVENT_NBYTES = 1000
#: share of the memory available when a command starts that its simulations may plan to use
MEMORY_BUDGET_FRACTION = 0.8


def sim_table_nbytes(*, layers: int, steps: int, world_size: int, experts: int, group_size: int,
                     sampled: bool = True) -> int:
    """Bytes of the routing tables a simulation builds (``dicesim.sim.costs.routing.TokenRouting``):
    int64 counts ``[L, T, W, E]``, the full and one-copy send tables ``[L, T, W, S]`` and the rows
    each rank receives ``[L, T, W]`` for both. Where each member holds one expert (``S == E``) the
    full send table is the counts table itself, not a copy. Expected counts (``sampled`` False) are
    one ``[L, E]`` table seen through broadcast views."""
    send = group_size if group_size == experts else 2 * group_size
    if not sampled:
        return 8 * layers * (experts + send + 2)
    return 8 * layers * steps * world_size * (experts + send + 2)


def recorded_events(*, layers: int, steps: int, world_size: int) -> int:
    """Upper estimate of the events a recorded simulation holds."""
    return EVENTS_PER_RANK_STEP_LAYER * layers * steps * world_size


def human_bytes(nbytes: float) -> str:
    """``1.5 GiB``-style size for messages."""
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if nbytes >= size:
            return f"{nbytes / size:.3g} {unit}"
    return f"{int(nbytes)} B"


def check_range(field: str, value: int, low: int, high: int,
                error: Callable[[str, str, str], DicesimError] | None = None) -> int:
    """``value`` if ``low <= value <= high``; otherwise a one-line error naming the range."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        make = error or (lambda f, p, a: ConfigError(f, p, a))
        raise make(field, f"{value!r} is out of range", f"integers {low}..{high}")
    return value


def run_nbytes(*, layers: int, steps: int, world_size: int, experts: int, group_size: int, record: bool) -> int:
    """Estimated peak memory of one simulation: a process, its routing tables and (recorded)
    its events. An upper estimate: unrecorded runs measured at about half of their tables."""
    tables = sim_table_nbytes(layers=layers, steps=steps, world_size=world_size, experts=experts,
                              group_size=group_size)
    events = recorded_events(layers=layers, steps=steps, world_size=world_size) if record else 0
    return RUN_BASE_NBYTES + tables + RECORDED_EVENT_NBYTES * events


# --- physical ranges -----------------------------------------------------------------------
@dataclass(frozen=True)
class PhysicalRange:
    """The plausible values of one physical quantity, in the unit its field is stored in."""

    low: float
    high: float
    unit: str
    allowed: str  # the range as a reader says it, with its unit
    low_open: bool = False  # ``low`` itself is not allowed (a rate of 0 divides by zero)

    def problem(self, value: object) -> str | None:
        """Why ``value`` is not plausible (``"not a number"``, ...), or None."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "not a number"
        if not math.isfinite(value):
            return "not a finite number"
        if value > self.high or value < self.low or (self.low_open and value == self.low):
            return "outside the plausible range"
        return None


#: every physical quantity an input file can set, with its plausible range. Lower bounds keep
#: rates away from zero (a denormal bandwidth made the solver divide by ~0 and return NaN; 1e-300
#: B/s gave a step of 1e303 s); upper bounds keep sums and products finite in float64.
PHYSICAL: Mapping[str, PhysicalRange] = {
    # topologies: NVLink 4 is 4.5e11 B/s, 1 Gbit Ethernet 1.25e8; real hops take 0.05-3 us
    "bw_Bps": PhysicalRange(1e6, 1e15, "B/s", "1 MB/s to 1 PB/s per direction"),
    "latency_s": PhysicalRange(1e-9, 10.0, "s", "1 ns to 10 s per hop"),
    # hardware profiles: the CPU calibration stub starts at 1e-6 TFLOP/s and 1e-3 GB/s and is fitted from there
    "peak_tflops": PhysicalRange(1e-6, 1e5, "TFLOP/s", "1e-06 to 1e+05 TFLOP/s (1 MFLOP/s to 100 PFLOP/s)"),
    "mem_bw_GBps": PhysicalRange(1e-3, 1e5, "GB/s", "0.001 to 1e+05 GB/s (1 MB/s to 100 TB/s)"),
    # fitted efficiencies go as low as 4.5e-4 (h100-calibrated-graph, ops.final) and 1.1e-7 (a
    # tiny embedding op in the GPU overlap check's CPU calibration); the floor keeps rates far from zero
    "efficiency": PhysicalRange(1e-9, 1.0, "of peak", "1e-09 to 1 of peak"),
    "fixed_time_s": PhysicalRange(0.0, 10.0, "s", "0 to 10 s"),
    "interference": PhysicalRange(0.0, 100.0, "x", "0 to 100 (up to 101x slower)"),
    # a GPU's memory as the driver reports it: 24 GiB (RTX 4090) .. 141 GB (H200); the range spans
    # the smallest and largest accelerators with room on both sides
    "gpu_memory_bytes": PhysicalRange(1 << 28, 1 << 42, "B", "256 MiB to 4 TiB"),
    # router histograms: tokens routed to one expert; sums over 4096 experts stay finite and exact
    "tokens": PhysicalRange(0.0, 1e15, "tokens", "0 to 1e+15 tokens per expert"),
    # published figures (nccl-tests, DeepEP) as stored: GB/s and microseconds
    "published_GBps": PhysicalRange(1e-3, 1e7, "GB/s", "0.001 to 1e+07 GB/s (1 MB/s to 10 PB/s)", low_open=True),
    "published_us": PhysicalRange(1e-3, 1e10, "us", "0.001 to 1e+10 us (1 ns to 3 h)", low_open=True),
    "message_nbytes": PhysicalRange(1, 1 << 40, "B", "1 B to 1 TiB"),
    # the acceptance file's ratios: a speedup (x) or a share of a step (fraction)
    "ratio": PhysicalRange(0.0, 1e3, "", "0 to 1000"),
}


def physical_problem(quantity: str, value: object) -> str | None:
    """Why ``value`` is not a plausible ``quantity`` (a key of :data:`PHYSICAL`), with the
    allowed range and its unit; None when it is plausible."""
    rng = PHYSICAL[quantity]
    problem = rng.problem(value)
    return None if problem is None else f"{value!r} is {problem} (allowed: {rng.allowed})"


class NonFiniteResult(DicesimError):
    """A simulation produced NaN or infinity: never written, reported as one line."""


def check_finite_figures(figures: Mapping[str, object], *, where: str) -> None:
    """NonFiniteResult when any number in ``figures`` is NaN or infinite (inputs inside the
    physical ranges never produce one; if one does, the result is refused, not written)."""
    bad = [k for k, v in figures.items()
           if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isfinite(v)]
    if bad:
        raise NonFiniteResult(f"{where}: the simulation produced {figures[bad[0]]!r} for {bad[0]}; no result was "
                              "written (inputs inside the ranges of docs/limits.md should never do this: "
                              "please report it)")
