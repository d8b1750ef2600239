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

Each kernel ends with a pass over the received bytes in the rank's own memory, after they have
arrived: dispatch copies every received message into the packed per-expert layout
(``internode_ll.cu`` @ de8cfca:245-302, @ ebfe47e:226-288), combine reads every returned expert
output and writes the weighted sum per token (@ de8cfca:454-499, @ ebfe47e:432-490). The pass
waits for the messages: a source's count (dispatch) or flag (combine) is sent only after all its
messages to that expert were issued (@ de8cfca:216-224, 432-443), and the send loops interleave
every expert token by token, so the counts come at the end of the transfer; in the June kernels
the pass also follows a grid sync after this rank's own sends (@ de8cfca:242-243, 460). It is timed
at the GPU's memory rate (:data:`GPU_HBM_Bps`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

LLTransport = Literal["rdma", "nvlink+rdma"]
LL_TRANSPORTS: tuple[str, ...] = ("rdma", "nvlink+rdma")

#: memory rate, bytes/s, of the GPUs (a topology's ``gpu`` key) the low-latency figures run on
GPU_HBM_Bps: Mapping[str, float] = MappingProxyType({
    # NVIDIA H100 SXM datasheet: 3.35 TB/s HBM3 (docs/hardware.md)
    "h100-sxm": 3.35e12,
    # assumption, labelled: the H800 SXM is the H100 SXM's GH100 with the same 80 GB of HBM3, cut only in
    # NVLink and FP64 (https://aiwiki.ai/wiki/nvidia_h800); no H800 datasheet figure was found, the H100's stands in
    "h800": 3.35e12,
})


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


def ll_recv_pass_nbytes(cfg: LowLatencyConfig, combine: bool) -> float:
    """Bytes one rank's receiving phase reads and writes in its own memory after the messages arrived.

    A rank receives ``tokens * topk`` messages in expectation (every rank sends that many, uniformly
    over the experts). Dispatch reads each whole message and writes its FP8 values, scales and source
    index packed (``internode_ll.cu`` @ de8cfca:279-301); combine reads each BF16 expert output and
    writes one BF16 row per token (@ de8cfca:466-497).
    """
    received = cfg.tokens * cfg.topk
    if combine:
        return received * 2.0 * cfg.hidden + cfg.tokens * 2.0 * cfg.hidden
    packed = cfg.hidden + cfg.hidden / 128 * 4 + 4
    return received * (cfg.message_nbytes(False) + packed)


def ll_recv_pass_s(cfg: LowLatencyConfig, gpu: str, combine: bool) -> float:
    """Seconds of the receiving pass on a ``gpu`` (a key of :data:`GPU_HBM_Bps`)."""
    if gpu not in GPU_HBM_Bps:
        raise ValueError(f"no memory rate for GPU {gpu!r} (known: {', '.join(sorted(GPU_HBM_Bps))})")
    return ll_recv_pass_nbytes(cfg, combine) / GPU_HBM_Bps[gpu]
