"""Attention efficiency from published kernel benchmarks: kernel x GPU architecture x head dim x length.

The built-in profiles give the attention core one efficiency, an assumption made for DiT-XL/2
shapes (head dim 72, 256-1024 tokens). Published forward benchmarks of the fused kernels
(``dicesim/data/attention_kernels.toml``, every curve with its source) show the fraction of the
tensor peak depends on the kernel (FlashAttention-2 reaches ~37% of an H100's peak, FlashAttention-3
~65%), on the architecture (FlashAttention-2 reaches ~59% of an A100's, it was built for Ampere), on
the head dimension and on the sequence length (short sequences leave the kernel's tiles idle).

:func:`attention_efficiency` reads a curve: the two measured head dimensions around the asked one
(linear between them, the nearest outside), the sequence length log-linearly between measured
points (the nearest end held outside them), as TFLOP/s per SM times the GPU's SMs (same
architecture, same clock: an assumption), capped at the profile's large-GEMM rate (the kernel's
inner loop is two GEMMs: it cannot outrun the same GPU's dense GEMM). The GPU's architecture and SM
count are the hardware profile's ``arch`` and ``sms`` (:mod:`dicesim.sim.costs.profile`): a profile
without them gets no curve.
"""

from __future__ import annotations

import bisect
import math
import tomllib
import typing
from dataclasses import dataclass
from importlib import resources
from typing import Literal

from dicesim.errors import ConfigError

SCHEMA = "dicesim-attention-kernels/1"
KERNELS = ("fa2", "fa3", "cudnn")
#: the GPU architectures the curves are measured on: what a profile's ``arch`` may name
Arch = Literal["hopper", "ampere", "ada"]
ARCHS: tuple[str, ...] = typing.get_args(Arch)


@dataclass(frozen=True)
class KernelCurve:
    """One kernel's measured forward throughput on one architecture at one head dimension."""

    kernel: str
    arch: str
    head_dim: int
    seq: tuple[float, ...]
    tflops: tuple[float, ...]  # what the kernel reached on the GPU that measured it
    sms: int  # that GPU's SM count
    source: str

    def tflops_per_sm(self, seq_len: float) -> float:
        """Measured TFLOP/s per SM at ``seq_len`` (log-linear between points, ends held)."""
        s, y = self.seq, self.tflops
        if seq_len <= s[0]:
            return y[0] / self.sms
        if seq_len >= s[-1]:
            return y[-1] / self.sms
        i = bisect.bisect_right(s, seq_len)
        t = (math.log(seq_len) - math.log(s[i - 1])) / (math.log(s[i]) - math.log(s[i - 1]))
        return (y[i - 1] + t * (y[i] - y[i - 1])) / self.sms


@dataclass(frozen=True)
class KernelTable:
    curves: tuple[KernelCurve, ...]


def builtin_kernel_table() -> KernelTable:
    """The curves shipped with dicesim (read it once per use and pass it on)."""
    text = (resources.files("dicesim") / "data" / "attention_kernels.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    if data.get("schema") != SCHEMA:
        raise ConfigError("attention_kernels.toml", f"schema {data.get('schema')!r}", (SCHEMA,))
    curves = []
    for c in data["curve"]:
        where = f"attention_kernels.toml: {c['kernel']}/{c['arch']}/{c['head_dim']}"
        if len(c["seq"]) != len(c["tflops"]) or list(c["seq"]) != sorted(c["seq"]):
            raise ConfigError(where, "seq must be increasing and as long as tflops")
        if c["arch"] not in ARCHS:
            raise ConfigError(where, f"unknown architecture {c['arch']!r}", ARCHS)
        curves.append(KernelCurve(kernel=c["kernel"], arch=c["arch"], head_dim=int(c["head_dim"]),
                                  seq=tuple(float(s) for s in c["seq"]),
                                  tflops=tuple(float(t) for t in c["tflops"]), sms=int(c["sms"]),
                                  source=c["source"]))
    return KernelTable(curves=tuple(curves))


def attention_efficiency(table: KernelTable, kernel: str, arch: str | None, sms: int | None, head_dim: int,
                         seq_len: float, peak_tflops: float, gemm_eff: float) -> float | None:
    """Fraction of the GPU's peak the ``kernel`` reaches, or None when no curve covers it (no
    ``arch``/``sms`` known, or no curve of this kernel on that architecture): the curve's TFLOP/s
    per SM x the GPU's ``sms``, at most its dense GEMM rate (``gemm_eff`` x peak)."""
    if arch is None or sms is None:
        return None
    curves = sorted((c for c in table.curves if c.kernel == kernel and c.arch == arch),
                    key=lambda c: c.head_dim)
    if not curves:
        return None
    lo = [c for c in curves if c.head_dim <= head_dim]
    hi = [c for c in curves if c.head_dim >= head_dim]
    a, b = (lo[-1] if lo else hi[0]), (hi[0] if hi else lo[-1])
    fa, fb = a.tflops_per_sm(seq_len), b.tflops_per_sm(seq_len)
    per_sm = fa if a.head_dim == b.head_dim else fa + (head_dim - a.head_dim) / (b.head_dim - a.head_dim) * (fb - fa)
    return min(per_sm * sms / peak_tflops, gemm_eff)


def curve_sources(table: KernelTable, kernel: str, arch: str | None) -> list[str]:
    """The sources of the curves :func:`attention_efficiency` reads for ``kernel`` on ``arch``."""
    return [c.source for c in table.curves if c.kernel == kernel and c.arch == arch]
