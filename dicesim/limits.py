"""How large an input may be: every size and range limit a reader or a run enforces, in one place.

Each limit is sized from what this project's runs can hold on a 24 GiB machine (see
docs/limits.md for the reasoning and the measurements); an input past a limit is refused
with one line that names the limit, never truncated. Readers import the numbers from here;
nothing else defines a size limit.
"""

from __future__ import annotations

from collections.abc import Callable

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

# --- topologies ----------------------------------------------------------------------------
#: nodes and directed edges of a topology file (routing all GPU pairs is O(GPUs^2))
MAX_TOPOLOGY_NODES = 20_000
MAX_TOPOLOGY_EDGES = 200_000
#: per-direction link bandwidth and per-hop latency a topology may declare (1 PB/s, 10 s):
#: far past any real link, close enough that times stay well inside float precision
MAX_LINK_BW_BPS = 1e15
MAX_LINK_LATENCY_S = 10.0
#: any fixed time of a hardware profile (launch, collective base, host overhead), seconds
MAX_FIXED_TIME_S = 10.0

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
#: executor checkpoints: a file larger than this many times the model's fp32 weights is not
#: a checkpoint of it (EMA + weights + optimizer state is ~4x)
CHECKPOINT_SIZE_FACTOR = 8
MIN_CHECKPOINT_LIMIT_BYTES = 64 * MiB


def sim_table_nbytes(*, layers: int, steps: int, world_size: int, experts: int, group_size: int,
                     sampled: bool = True) -> int:
    """Bytes of the routing tables a simulation builds: int64 counts ``[L, T, W, E]`` plus the
    full and one-copy send tables ``[L, T, W, S]`` (``dicesim.sim.costs.routing.TokenRouting``);
    expected counts (``sampled`` False) are one ``[L, E]`` table seen through broadcast views."""
    if not sampled:
        return 8 * layers * (experts + 2 * group_size)
    return 8 * layers * steps * world_size * (experts + 2 * group_size)


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
