"""Traffic of DeepEP's normal (high-throughput) dispatch and combine, as in its own benchmark.

DeepEP's test (deepseek-ai/DeepEP ``tests/test_intranode.py``, ``tests/test_internode.py``)
routes each token with random scores: experts live on ranks in contiguous blocks; across
nodes it first picks ``topk_groups`` nodes (the best group score, i.e. uniformly at random),
then the ``topk`` best experts inside them (uniformly at random). A token is sent once to each
*rank* that holds one of its experts; across nodes it crosses the network once per *node*, to
the GPU with the same local index, which forwards it over NVLink to the destination ranks
(the chunked RDMA -> NVLink pipeline, so both legs run at the same time). Combine moves the
same rows back.

Row counts here are the exact expectations over that random routing (hypergeometric
probabilities), so every rank sends the same expected traffic and nothing is sampled.
The benchmark's published figures divide *logical* bytes by time: for intranode, the rows
a rank receives including its own; across nodes, the token-node pairs it sends including
its own node. :func:`deepep_traffic` returns those byte counts with the flows.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

FP8_ROW_FACTOR = 1 + 4 / 128
"""FP8 dispatch bytes per hidden element: 1 byte plus one fp32 scale per 128 elements (DeepEP test)."""


@dataclass(frozen=True, kw_only=True)
class DeepEPConfig:
    """The benchmark setting: tokens per rank, hidden size, experts chosen per token, and so on."""

    tokens: int
    hidden: int
    topk: int
    experts: int
    topk_groups: int = 0  # nodes a token may use (0: no group limit)
    dispatch_elem_nbytes: float = FP8_ROW_FACTOR
    combine_elem_nbytes: float = 2.0


@dataclass(frozen=True)
class DeepEPTraffic:
    """Flows ``(src_rank, dst_rank, nbytes)`` of one dispatch or combine, and rank 0's logical bytes."""

    flows: tuple[tuple[int, int, float], ...]
    nvl_logical_nbytes: float
    rdma_logical_nbytes: float


def _p_any(pool: int, marked: int, k: int) -> float:
    """P(at least one of ``marked`` items among ``k`` drawn without replacement from ``pool``)."""
    if marked <= 0:
        return 0.0
    return 1.0 - comb(pool - marked, k) / comb(pool, k)


def deepep_traffic(cfg: DeepEPConfig, *, nodes: int, gpus_per_node: int, combine: bool) -> DeepEPTraffic:
    """Expected per-pair traffic of a dispatch (``combine=False``) or combine over ``nodes`` x ``gpus_per_node``."""
    W = nodes * gpus_per_node
    if cfg.experts % W:
        raise ValueError(f"experts {cfg.experts} not divisible by {W} ranks")
    groups = min(cfg.topk_groups or nodes, nodes)
    pool = cfg.experts * groups // nodes  # experts a token chooses among, once its nodes are picked
    p_node_chosen = groups / nodes
    p_rank = _p_any(pool, cfg.experts // W, cfg.topk)  # a given rank of a chosen node gets the token
    p_node_hit = _p_any(pool, cfg.experts // nodes, cfg.topk)  # a chosen node gets at least one expert
    elem = cfg.combine_elem_nbytes if combine else cfg.dispatch_elem_nbytes
    row = cfg.hidden * elem
    T = cfg.tokens
    rows: dict[tuple[int, int], float] = {}
    for a in range(nodes):
        for l in range(gpus_per_node):  # noqa: E741 - local index, as in DeepEP
            src = a * gpus_per_node + l
            for b in range(nodes):
                hop = src if b == a else b * gpus_per_node + l  # where the token enters node b
                if hop != src:
                    rows[(src, hop)] = rows.get((src, hop), 0.0) + T * p_node_chosen * p_node_hit
                for m in range(gpus_per_node):
                    dst = b * gpus_per_node + m
                    if dst != hop:
                        rows[(hop, dst)] = rows.get((hop, dst), 0.0) + T * p_node_chosen * p_rank
    flows = tuple(((d, s, r * row) if combine else (s, d, r * row)) for (s, d), r in sorted(rows.items()))
    nvl_logical = W * T * p_rank * p_node_chosen * row  # rows rank 0 receives, its own included
    rdma_logical = nodes * T * p_node_chosen * p_node_hit * row  # token-node pairs rank 0 sends
    return DeepEPTraffic(flows=flows, nvl_logical_nbytes=nvl_logical, rdma_logical_nbytes=rdma_logical)
