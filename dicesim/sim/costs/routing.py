"""Expert load and placement: how many routed rows each rank sends to each other rank.

Placement (``strategies.md``): with W ranks and E experts, either W | E (one expert-parallel
group of all W ranks, E/W experts each) or E | W (W/E groups of E ranks, each a full set of
experts; groups are data-parallel replicas). Which member holds which expert and which
ranks form a group come from :mod:`dicesim.placement`, the definition the executor uses too.

Load: per layer, a probability over experts (uniform, Zipf(alpha) with a seeded per-layer
ranking, or a measured histogram). Copies per (layer, step, rank, expert) are either the
expected counts (largest-remainder rounding, identical for every rank and step) or a seeded
multinomial sample. A skip dispatch (conditional communication) carries one copy per token:
the full counts divided by top_k, rounded so each rank sends exactly ``tokens`` rows.
Everything is a pure function of (config, seed).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from dicesim.errors import ConfigError
from dicesim.inputs import check_file_size
from dicesim.limits import MAX_HISTOGRAM_BYTES, PHYSICAL, physical_problem
from dicesim.placement import Placement
from dicesim.scenario import RoutingConfig

Sampling = Literal["expected", "multinomial"]
SAMPLINGS: tuple[str, ...] = ("expected", "multinomial")


def expert_probs(cfg: RoutingConfig, num_layers: int, num_experts: int, seed: int,
                 histogram: np.ndarray | None = None) -> np.ndarray:
    """Per-layer probability that a routed copy goes to each expert, shape ``(layers, experts)``.

    ``histogram`` overrides ``cfg.histogram`` (a path) when given: ``[experts]`` or ``[layers, experts]``.
    """
    L, E = num_layers, num_experts
    if cfg.kind == "uniform":
        return np.full((L, E), 1.0 / E)
    if cfg.kind == "zipf":
        base = 1.0 / np.arange(1, E + 1) ** cfg.alpha
        base /= base.sum()
        out = np.empty((L, E))
        for l in range(L):
            # which expert is popular differs per layer; the ranking is a seeded permutation
            perm = np.random.default_rng([seed, 0x21F, l]).permutation(E)
            out[l, perm] = base
        return out
    hist = histogram if histogram is not None else load_histogram(cfg.histogram)
    hist = np.asarray(hist, dtype=float)
    if hist.ndim == 1:
        hist = np.broadcast_to(hist, (L, hist.shape[0]))
    if hist.ndim != 2 or hist.shape != (L, E):
        raise ConfigError("routing.histogram", f"has shape {hist.shape}, expected ({E},) or ({L}, {E})")
    # each count within its physical range before any sum: 1e308 per expert summed to inf
    # and made every probability 0 (a uniform load simulated 27% too fast, exit 0)
    rng = PHYSICAL["tokens"]
    outside = ~np.isfinite(hist) | (hist < rng.low) | (hist > rng.high)
    if outside.any():
        problem = physical_problem("tokens", float(hist[np.unravel_index(np.argmax(outside), hist.shape)]))
        raise ConfigError("routing.histogram", f"count {problem}")
    if (hist.sum(axis=1) <= 0).any():
        raise ConfigError("routing.histogram", "needs finite non-negative counts with a positive sum per layer")
    return hist / hist.sum(axis=1, keepdims=True)


def histogram_from_trace(path: str | Path) -> np.ndarray:
    """``[layers, experts]`` copies routed to each expert, summed over ranks and steps, from
    an executor trace (file or directory) whose metadata carries ``router_hist``."""
    from dicesim.trace import read_trace

    from dicesim.trace.runmeta import router_hist

    _df, metas = read_trace(path)
    hists = [router_hist(m, path).astype(float) for m in (metas if isinstance(metas, list) else [metas])
             if m.extra.get("router_hist") is not None]
    if not hists:
        raise ConfigError("routing.histogram", f"{path}: no executor router histogram in this trace")
    if len({h.shape[2:] for h in hists}) != 1:
        raise ConfigError("routing.histogram", f"{path}: traces of different models (layers x experts differ)")
    return sum(h.sum(axis=(0, 1)) for h in hists)  # axes: rank, step, layer, expert


def load_histogram(path: str | None) -> np.ndarray:
    """Read a router histogram: ``.npy`` / ``.csv`` (rows = layers, columns = experts), or an
    executor trace (``.trace.json``, ``.events.parquet`` or a directory of them)."""
    if not path:
        raise ConfigError("routing.histogram", "is required when routing.kind = 'histogram'")
    p = Path(path)
    if p.is_dir() or p.name.endswith((".trace.json", ".trace.json.gz", ".events.parquet")):
        return histogram_from_trace(p)
    if not p.exists():
        raise ConfigError("routing.histogram", f"file {str(p)!r} not found")
    if p.suffix not in (".npy", ".csv"):
        raise ConfigError("routing.histogram", f"{p}: unsupported file type",
                          (".npy", ".csv", ".trace.json", ".events.parquet", "a trace directory"))
    check_file_size(p, MAX_HISTOGRAM_BYTES, lambda problem: ConfigError("routing.histogram", f"{p}: {problem}"))
    try:
        with warnings.catch_warnings():  # "input contained no data": reported below as an empty histogram
            warnings.simplefilter("ignore", UserWarning)
            hist = np.load(p, allow_pickle=False) if p.suffix == ".npy" else np.loadtxt(p, delimiter=",", ndmin=1)
    except Exception as exc:  # noqa: BLE001 -- a corrupt .npy header fails in the tokenizer, the parser, ...
        raise ConfigError("routing.histogram", f"{p}: unreadable ({type(exc).__name__}: "
                          f"{' '.join(str(exc).split())[:120]})") from None
    if not isinstance(hist, np.ndarray) or hist.dtype.kind not in "iuf" or hist.ndim not in (1, 2) or hist.size == 0:
        raise ConfigError("routing.histogram", f"{p}: holds {getattr(hist, 'dtype', type(hist).__name__)} values of "
                          f"shape {getattr(hist, 'shape', '?')}", "a non-empty [experts] or [layers, experts] array of numbers")
    return hist


def _largest_remainder(target_X: np.ndarray, total: int) -> np.ndarray:
    """Round non-negative reals along the last axis to integers summing to ``total``."""
    base = np.floor(target_X).astype(np.int64)
    short = total - base.sum(axis=-1, keepdims=True)
    order = np.argsort(-(target_X - base), axis=-1, kind="stable")
    rank = np.argsort(order, axis=-1, kind="stable")
    return base + (rank < short).astype(np.int64)


#: rows of a drawn table rounded at once by :func:`_one_copy` (a slice of about 0.5 MB at 8 experts)
_ROWS_PER_SLICE = 8192


def _one_copy(counts_X: np.ndarray, top_k: int, tokens: int) -> np.ndarray:
    """``_largest_remainder(counts_X / top_k, tokens)``; for two copies in closed form: halves of
    even counts are whole, odd counts leave a remainder of exactly 1/2 and the stable order gives
    the missing rows to the first odd ones (the general rounding costs two sorts per row)."""
    if top_k != 2 or counts_X.dtype.kind not in "iu":
        return _largest_remainder(counts_X / top_k, tokens)
    rows = counts_X.reshape(-1, counts_X.shape[-1]) if counts_X.ndim else counts_X
    if rows.ndim < 2 or rows.shape[0] <= _ROWS_PER_SLICE:
        return _two_copy_half(counts_X, tokens)
    # drawn tables are hundreds of MB: a slice of rows at a time keeps the temporaries in cache
    # (and out of the peak memory); every row goes through the same integer operations
    out = np.empty(rows.shape, dtype=np.int64)
    for i in range(0, rows.shape[0], _ROWS_PER_SLICE):
        out[i:i + _ROWS_PER_SLICE] = _two_copy_half(rows[i:i + _ROWS_PER_SLICE], tokens)
    return out.reshape(counts_X.shape)


def _two_copy_half(counts_X: np.ndarray, tokens: int) -> np.ndarray:
    x = counts_X.astype(np.int64, copy=False)
    half, odd = x >> 1, x & 1  # divmod by 2 in two's complement (floor), without a division
    short = tokens - half.sum(axis=-1, keepdims=True)
    return half + (odd.astype(bool) & (np.cumsum(odd, axis=-1) <= short))


@dataclass(frozen=True)
class TokenRouting:
    """Routed rows between ranks for every (layer, step); arrays are read-only.

    ``counts_LTWE[l, t, r, e]``: copies rank r sends to expert e at layer l, step t (full dispatch).
    """

    placement: Placement
    tokens_per_rank: int
    top_k: int
    counts_LTWE: np.ndarray
    top1_share: float = 0.6  # default of RoutingConfig.top1_share
    #: every rank's counts are independent draws from one distribution (sampled routing): groups of
    #: ranks are then statistically alike (what :mod:`dicesim.sim.sample` relies on)
    drawn: bool = False
    _send: dict = field(init=False, repr=False, compare=False)
    _recv: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        full = self.counts_LTWE
        # expected counts repeat one [L, E] table over steps and ranks (a broadcast view): derive
        # everything from that table and broadcast the results, so thousands of ranks cost nothing
        same = full.ndim == 4 and full.strides[1] == 0 and full.strides[2] == 0
        base = full[:, :1, :1, :] if same else full
        skip = _one_copy(base, self.top_k, self.tokens_per_rank)  # one copy per token on skip steps
        # expert -> the group member holding it: sum each member's experts (sorted by member)
        owner = np.asarray(self.placement.owner_table())
        by_member = np.argsort(owner, kind="stable")
        starts = np.searchsorted(owner[by_member], np.arange(self.placement.ep_size))
        send = {}
        one_each = owner.shape[0] == self.placement.ep_size and (by_member == np.arange(owner.shape[0])).all()
        for k, c in ((False, base), (True, skip)):
            c = c.astype(np.int64, copy=False)
            # member m holds expert m: the counts are the send table already (shared only when nobody
            # else can write to them: the caller's read-only counts or our own one-copy table)
            mine = k or not c.flags.writeable
            s = c if one_each and mine else np.add.reduceat(c[..., by_member], starts, axis=-1)
            if same:
                s = np.broadcast_to(s, full.shape[:3] + (self.placement.ep_size,))
            s.setflags(write=False)
            send[k] = s
        object.__setattr__(self, "_send", send)
        object.__setattr__(self, "_recv", {})

    @property
    def num_layers(self) -> int:
        return self.counts_LTWE.shape[0]

    @property
    def num_steps(self) -> int:
        return self.counts_LTWE.shape[1]

    def send_rows(self, layer: int, step: int, skip: bool) -> np.ndarray:
        """``[W, S]``: rows each rank sends to each member of its own group."""
        return self._send[bool(skip)][layer, step]

    def send_rows_LTWS(self, skip: bool) -> np.ndarray:
        """``[L, T, W, S]``: rows each rank sends to each member of its group, every layer and step."""
        return self._send[bool(skip)]

    def group_matrix(self, group: tuple[int, ...], layer: int, step: int, skip: bool) -> np.ndarray:
        """``[S, S]``: rows member i of ``group`` sends to member j."""
        return self._send[bool(skip)][layer, step][list(group)]

    def recv_rows_LTW(self, skip: bool) -> np.ndarray:
        """``[L, T, W]``: rows each rank receives for its experts (self-traffic included); read-only."""
        out = self._recv.get(bool(skip))
        if out is not None:
            return out
        send = self._send[bool(skip)]
        groups = self.placement.groups()
        if send.strides[1] == 0 and send.strides[2] == 0:  # every rank sends the same rows (expected counts)
            pos = np.empty(self.placement.world_size, dtype=np.intp)  # each rank's place in its group
            for group in groups:
                pos[list(group)] = np.arange(len(group))
            per_member = send[:, :1, 0, :] * len(groups[0])
            out = np.broadcast_to(per_member[:, :, pos], send.shape[:3])
        else:
            out = np.zeros(send.shape[:3], dtype=np.int64)
            for group in groups:
                g = list(group)
                out[:, :, g] = send[:, :, g, :].sum(axis=2)
            out.setflags(write=False)
        self._recv[bool(skip)] = out
        return out

    def sent_rows(self, skip: bool) -> int:
        """Rows one rank sends in one dispatch (tokens x copies)."""
        return self.tokens_per_rank * (1 if skip else self.top_k)


def build_routing(cfg: RoutingConfig, placement: Placement, *, num_layers: int, num_steps: int,
                  tokens_per_rank: int, top_k: int, seed: int, sampling: Sampling = "expected",
                  histogram: np.ndarray | None = None) -> TokenRouting:
    """Routed copies for every (layer, step, rank, expert), deterministic for ``seed``."""
    if sampling not in SAMPLINGS:
        raise ConfigError("routing.sampling", f"unknown sampling {sampling!r}", SAMPLINGS)
    E, W, L, T = placement.num_experts, placement.world_size, num_layers, num_steps
    probs_LE = expert_probs(cfg, L, E, seed, histogram)
    copies = tokens_per_rank * top_k
    if sampling == "expected":
        per_layer = _largest_remainder(probs_LE * copies, copies)  # [L, E]
        counts = np.broadcast_to(per_layer[:, None, None, :], (L, T, W, E))  # one table, read-only view
    else:
        counts = np.empty((L, T, W, E), dtype=np.int64)
        for l in range(L):
            rng = np.random.default_rng([seed, 0x5A3, l])
            counts[l] = rng.multinomial(copies, probs_LE[l], size=(T, W))
    counts.setflags(write=False)
    return TokenRouting(placement=placement, tokens_per_rank=tokens_per_rank, top_k=top_k,
                        counts_LTWE=counts, top1_share=cfg.top1_share, drawn=sampling != "expected")
