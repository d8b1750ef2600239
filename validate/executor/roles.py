"""Copy roles: each token's K expert copies re-ordered so role 0 is the copy a skip step keeps.

Policy ``low`` keeps the higher-scored copy 0, ``high`` copy K-1, ``random`` a per-token copy
fixed by ``strategy.seed`` (:func:`random_kept_copy`); roles 1.. are the copies a skip step drops.

Shape legend: N token rows, K copies per token.
"""

from __future__ import annotations

import numpy as np
import torch

_MASK64 = (1 << 64) - 1


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def random_kept_copy(seed: int, layer: int, token_keys_N: np.ndarray, top_k: int) -> torch.Tensor:
    """Copy index each token keeps under the ``random`` policy: fixed per (seed, layer, token).

    A hash of the token's global key, not an RNG stream, so any partition of the tokens over
    ranks (or the single-process emulation) picks the same copy.
    """
    salt = _mix64(np.array([(seed * 1_000_003 + layer) & _MASK64], dtype=np.uint64))
    h = _mix64(token_keys_N.astype(np.uint64) ^ salt)
    return torch.from_numpy((h % np.uint64(top_k)).astype(np.int64))


def role_order(idx_NK: torch.Tensor, kept: int | None, kept_random_N: torch.Tensor | None) -> torch.Tensor:
    """Copy index of each role, ``role_copy_NK[:, 0]`` = the copy a skip step keeps.

    ``kept`` is :meth:`ExpertParallelStrategy.kept_copy` (copies are sorted by score); None means the
    per-token choice ``kept_random_N``.
    """
    N, K = idx_NK.shape
    dev = idx_NK.device
    copies_K = torch.arange(K, device=dev)
    if kept is not None:
        kept_N = torch.full((N,), kept, dtype=torch.int64, device=dev)
    else:
        kept_N = kept_random_N.to(dev)
    others_NK = copies_K.expand(N, K)[copies_K.expand(N, K) != kept_N.unsqueeze(1)].view(N, K - 1)
    return torch.cat([kept_N.unsqueeze(1), others_NK], dim=1)
