"""Attention efficiency from published kernel benchmarks: kernel x GPU architecture x head dim x length.

The built-in profiles give the attention core one efficiency, an assumption made for DiT-XL/2
shapes (head dim 72, 256-1024 tokens). Published forward benchmarks of the fused kernels
(``dicesim/data/attention_kernels.toml``, every curve with its source) show the fraction of the
tensor peak depends on the kernel (FlashAttention-2 reaches ~37% of an H100's peak, FlashAttention-3
~65%), on the architecture (FlashAttention-2 reaches ~61-73% of an A100's at head dim 64-128, it was built for Ampere), on
the head dimension and on the sequence length (short sequences leave the kernel's tiles idle).

:func:`attention_efficiency` reads a curve: the two measured head dimensions around the asked one
(linear between them, the nearest outside), the sequence length log-linearly between measured
points (the nearest end held outside them), as TFLOP/s per SM times the GPU's SMs (same
architecture, same clock: an assumption), capped at the profile's large-GEMM rate (the kernel's
inner loop is two GEMMs: it cannot outrun the same GPU's dense GEMM). The GPU's architecture and SM
count are the hardware profile's ``arch`` and ``sms`` (:mod:`dicesim.sim.costs.profile`): a profile
without them gets no curve.

A GPU that was itself measured is read from its own curves, not scaled from another GPU's: a curve's
``device`` names the device it ran on (the name the driver reports, which a profile's ``gpu`` carries),
and a profile whose ``gpu`` is that name, with at most a memory size and a parenthesised note after it
(:data:`DEVICE_REST`), uses those curves as measured (the mean
of the sources where several measured the same kernel and head dimension). Every other GPU of the
architecture is scaled by SMs from the architecture's ``scalable`` curves (their mean per SM where
several apply): a curve measured on a part whose tensor rate is not proportional to its SMs (the
export-limited H20) or not established (the L20) is not moved to other GPUs.
"""

from __future__ import annotations

import bisect
import math
import re
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
#: what may follow a curve's ``device`` in a profile's ``gpu`` for the two to be the same GPU: nothing, a memory
#: size ("-80GB", " 96GB") and/or a parenthesised note ("(HGX)"). Any other word names another product: the
#: "NVIDIA GeForce RTX 4090 D" has 114 SMs, not 128 (svethardware.cz/nvidia-uvedla-cinskou-geforce-rtx-4090-d-
#: pocet-sm-se-snizuje-na-114/60269; hmc-tech.com/gpu/nvidia-geforce-rtx-4090-d) and must not read the RTX 4090's
#: curves unscaled, as a check for a following letter or digit alone would let it.
DEVICE_REST = r"(?:[ -]\d+ ?GB)?(?: ?\(.*\))?"


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
    #: the device name the measuring GPU reports ("NVIDIA H20"): profiles whose ``gpu`` is it (up to
    #: :data:`DEVICE_REST`) read this curve unscaled; None: the GPU is not pinned to one device name
    device: str | None = None
    #: whether other GPUs of the architecture may be scaled from it by SM count
    scalable: bool = True

    def measured_on(self, gpu: str | None) -> bool:
        """Whether a GPU named ``gpu`` (a profile's ``gpu``) is the device this curve ran on: the name is
        ``device``, or ``device`` followed only by a memory size and/or a parenthesised note (:data:`DEVICE_REST`):
        "NVIDIA H20 96GB (HGX)" and "NVIDIA A100-SXM4-80GB" are, "NVIDIA H200" and the 114-SM
        "NVIDIA GeForce RTX 4090 D" are not."""
        return bool(gpu and self.device and re.fullmatch(re.escape(self.device) + DEVICE_REST, gpu.strip()))

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
                                  source=c["source"], device=c.get("device"), scalable=bool(c.get("scalable", True))))
    return KernelTable(curves=tuple(curves))


def _chosen(table: KernelTable, kernel: str, arch: str, gpu: str | None) -> tuple[list[KernelCurve], bool]:
    """The curves that time ``kernel`` on this GPU, and whether they were measured on it (see the module)."""
    own = [c for c in table.curves if c.kernel == kernel and c.measured_on(gpu)]
    if own:
        return own, True
    return [c for c in table.curves if c.kernel == kernel and c.arch == arch and c.scalable], False


def attention_efficiency(table: KernelTable, kernel: str, arch: str | None, sms: int | None, head_dim: int,
                         seq_len: float, peak_tflops: float, gemm_eff: float, gpu: str | None = None) -> float | None:
    """Fraction of the GPU's peak the ``kernel`` reaches, or None when no curve covers it (no
    ``arch``/``sms`` known, or no curve of this kernel on that architecture): the GPU's own curves
    (``gpu``: the profile's device name) as measured, else the architecture's TFLOP/s per SM x the
    GPU's ``sms``; several sources at one head dimension are averaged; at most the GPU's dense GEMM
    rate (``gemm_eff`` x peak)."""
    if arch is None or sms is None:
        return None
    curves, own = _chosen(table, kernel, arch, gpu)
    if not curves:
        return None

    def rate(hd: int) -> float:  # TFLOP/s on this GPU at one measured head dim: the mean over its sources
        at = [c.tflops_per_sm(seq_len) * (c.sms if own else sms) for c in curves if c.head_dim == hd]
        return sum(at) / len(at)

    dims = sorted({c.head_dim for c in curves})
    lo = [d for d in dims if d <= head_dim]
    hi = [d for d in dims if d >= head_dim]
    a, b = (lo[-1] if lo else hi[0]), (hi[0] if hi else lo[-1])
    fa, fb = rate(a), rate(b)
    tflops = fa if a == b else fa + (head_dim - a) / (b - a) * (fb - fa)
    return min(tflops / peak_tflops, gemm_eff)
