"""Peak bytes of the tensors a run allocates, on any device (CPU included), by watching torch's dispatcher.

CUDA has ``torch.cuda.max_memory_allocated`` (what the DICE reference prints, ``sample_ddp.py:257-258``);
the CPU allocator keeps no such statistic. :class:`LiveTensorBytes` is a ``TorchDispatchMode`` that
sees every op's output tensors: a storage seen for the first time adds its ``nbytes`` to the live
total, and a ``weakref.finalize`` on the storage takes it off again when the last tensor using it
is freed. The running maximum is the peak. This is how ``torch.distributed._tools.mem_tracker``
counts too; that tool assumes training iterations (one forward per module), so it is not used.

What it counts: storages created by dispatched ops while the mode is active (op outputs, ``empty``
buffers a collective receives into, caches kept across steps). What it does not: tensors made
before it was entered (the model's weights: counted separately and exactly from the module),
kernel-internal scratch that never becomes an op output, gloo's own transport buffers, the Python
objects around tensors. ``mark`` keeps the live bytes at named points, so a peak can be split.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class LiveTensorBytes(TorchDispatchMode):
    """Live and peak bytes of the storages dispatched ops create while the mode is active."""

    def __init__(self) -> None:
        super().__init__()
        self.live_nbytes = 0
        self.peak_nbytes = 0
        self._seen: weakref.WeakSet[torch.UntypedStorage] = weakref.WeakSet()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        # an output sharing an input's storage is a view or an in-place result: nothing new
        given = {id(t.untyped_storage()) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and id(t.untyped_storage()) not in given:
                self._track(t.untyped_storage())
        return out

    def _track(self, storage: torch.UntypedStorage) -> None:
        if storage in self._seen:
            return
        n = storage.nbytes()
        if n == 0:
            return
        self._seen.add(storage)
        self.live_nbytes += n
        self.peak_nbytes = max(self.peak_nbytes, self.live_nbytes)
        weakref.finalize(storage, self._release, n)

    def _release(self, nbytes: int) -> None:
        self.live_nbytes -= nbytes


def module_nbytes(module: torch.nn.Module) -> dict[str, int]:
    """Bytes of a module's parameters and buffers (the weights a rank holds), exactly."""
    return {
        "parameters": sum(p.numel() * p.element_size() for p in module.parameters()),
        "buffers": sum(b.numel() * b.element_size() for b in module.buffers()),
    }
