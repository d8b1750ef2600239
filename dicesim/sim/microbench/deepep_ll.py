"""Traffic of DeepEP's low-latency dispatch and combine, as in its own benchmark.

The low-latency kernels (deepseek-ai/DeepEP ``csrc/kernels/internode_ll.cu``) send one message per
(token, selected expert) pair straight to the rank that holds the expert: a token whose two
experts live on one rank is sent twice, and nothing is forwarded (``internode_ll.cu`` @ ebfe47e,
lines 96 and 135-148: one warp per top-k slot, each putting its message to ``dst_rank``). Combine
sends each expert output back the same way. The benchmark (``tests/test_low_latency.py`` @ ebfe47e,
lines 24-25 and 108) draws every token's top-k experts from random scores, so experts are uniform
without replacement; a message carries ``hidden + hidden / 128 * 4 + 16`` bytes in dispatch (FP8
values, one fp32 scale per 128, a 16-byte header) and ``2 * hidden`` in combine (BF16).

Expected messages from one rank to another are therefore ``tokens * topk / W`` whatever the
expert count (as long as the experts divide evenly over the W ranks), and nothing is sampled.
A rank's messages to itself are a local copy (no link). Which path a message to another rank of
the same server takes is the kernel version's choice: ``"rdma"`` (February 2025: through the NICs,
``internode_ll.cu`` @ ebfe47e:142-143) or ``"nvlink+rdma"`` (June 2025, DeepEP PR #173: NVLink
where ``nvshmemi_get_p2p_ptr`` finds a peer mapping, ``internode_ll.cu`` @ de8cfca:152-154).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

LLTransport = Literal["rdma", "nvlink+rdma"]
LL_TRANSPORTS: tuple[str, ...] = ("rdma", "nvlink+rdma")


@dataclass(frozen=True, kw_only=True)
class LowLatencyConfig:
    """The low-latency benchmark setting: tokens per rank, hidden size, experts per token, path."""

    tokens: int
    hidden: int
    topk: int
    transport: LLTransport = "nvlink+rdma"

    def message_nbytes(self, combine: bool) -> float:
        """Bytes of one (token, expert) message (``tests/test_low_latency.py`` @ ebfe47e:108)."""
        return 2.0 * self.hidden if combine else self.hidden + self.hidden / 128 * 4 + 16


def ll_pair_nbytes(cfg: LowLatencyConfig, world: int, combine: bool) -> float:
    """Expected bytes one rank sends to each other rank in one dispatch (or combine)."""
    return cfg.tokens * cfg.topk / world * cfg.message_nbytes(combine)
