"""Checkpoints in the public DiT-MoE layout (feizc/DiT-MoE ``models.py``).

:class:`validate.model.model.DiTMoE` names its modules like the public model, so its state dict
already has that layout: ``x_embedder.proj.weight``, ``t_embedder.mlp.0.weight``,
``y_embedder.embedding_table.weight``, ``pos_embed``, ``blocks.{i}.attn.qkv.weight``,
``blocks.{i}.adaLN_modulation.1.weight``, ``blocks.{i}.moe.gate.weight`` (E x D),
``blocks.{i}.moe.experts.{e}.{gate,up,down}_proj.weight``,
``blocks.{i}.moe.shared_experts.{gate,up,down}_proj.weight``, ``final_layer.linear.weight``,
``final_layer.adaLN_modulation.1.weight`` (and the biases).

Loading checks every key and shape first and reports all problems in one
:class:`~dicesim.errors.ConfigError`. A model or bank that holds only some experts takes
those from a full checkpoint and ignores the other experts' weights.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from dicesim.atomic import write_atomic
from dicesim.errors import ConfigError
from dicesim.inputs import check_file_size
from dicesim.limits import CHECKPOINT_SIZE_FACTOR, MIN_CHECKPOINT_LIMIT_BYTES
from dicesim.models import ModelPreset, get_model
from validate.model.experts import ExpertBank
from validate.model.model import DiTMoE

_EXPERT_KEY = re.compile(r"^blocks\.(\d+)\.moe\.experts\.(\d+)\.", re.ASCII)
_WRAPPER_KEYS = ("ema", "model", "state_dict", "module")  # training scripts nest the weights
_SHOWN = 4  # key names listed per problem before "... and N more"


def export_state_dict(model: DiTMoE) -> dict[str, torch.Tensor]:
    """Detached copies of the model's weights in the public layout (only the held experts)."""
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def save_checkpoint(model: DiTMoE, path: str | os.PathLike[str]) -> None:
    """Write ``export_state_dict(model)`` with torch.save, atomically (tmp file + rename)."""
    state = export_state_dict(model)
    write_atomic(path, lambda tmp: torch.save(state, tmp))


def read_checkpoint(path: str | os.PathLike[str], *, max_bytes: int | None = None) -> dict[str, torch.Tensor]:
    """Load a state dict from disk (tensors only), unwrapping ``ema``/``model`` and DDP prefixes.

    Refused with one ConfigError: files over ``max_bytes`` (default: the limit for the largest
    preset), anything ``torch.load(weights_only=True)`` cannot unpickle, non-string keys,
    non-floating or non-finite weights.
    """
    limit = max_bytes if max_bytes is not None else checkpoint_limit_nbytes(get_model("G/2"))
    check_file_size(Path(path), limit, lambda problem: ConfigError("checkpoint", f"{path}: {problem}"),
                    what="checkpoint")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the outcome is reported below
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- a hostile file makes torch.load fail in many ways
        raise ConfigError("checkpoint", f"cannot read {path}: {' '.join(str(exc).split())[:200]}") from None
    for wrapper in _WRAPPER_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise ConfigError("checkpoint", f"{path} does not hold a state dict of named tensors")
    for k, v in obj.items():
        if not v.is_floating_point():
            raise ConfigError("checkpoint", f"{path}: {k} holds {v.dtype} values", "floating-point weights")
        if not bool(torch.isfinite(v).all()):
            raise ConfigError("checkpoint", f"{path}: {k} holds NaN or infinite values", "finite weights")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def checkpoint_limit_nbytes(preset: ModelPreset) -> int:
    """Largest checkpoint file accepted for ``preset``: ``CHECKPOINT_SIZE_FACTOR`` x its fp32 weights."""
    D, H, E, L = preset.hidden, preset.expert_hidden, preset.num_experts, preset.depth
    per_block = 10 * D * D + 3 * D * H * E + 3 * D * preset.shared_hidden + E * D  # attn+adaLN, experts, shared, gate
    return max(MIN_CHECKPOINT_LIMIT_BYTES, CHECKPOINT_SIZE_FACTOR * 4 * L * per_block)


def load_into_model(model: DiTMoE, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Copy a public-layout state dict into ``model`` (cast to its dtype and device).

    Raises ConfigError naming missing keys, unexpected keys and shape mismatches. Experts
    this model does not hold (subset ``expert_ids``) may be present or absent.
    """

    def foreign(key: str) -> bool:
        match = _EXPERT_KEY.match(key)
        if match is None:
            return False
        layer, expert = int(match[1]), int(match[2])
        return layer < len(model.blocks) and expert < model.preset.num_experts and expert not in model.blocks[layer].experts

    target = model.state_dict()
    _check_against(target, state_dict, ignore=foreign)
    model.load_state_dict({k: state_dict[k] for k in target}, strict=True)


def load_into_bank(bank: ExpertBank, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Copy the bank's experts of layer ``bank.layer`` out of a (full or partial) checkpoint."""
    prefix = f"blocks.{bank.layer}.moe.experts."

    def foreign(key: str) -> bool:  # held experts are in ``target``, so only others reach here
        match = _EXPERT_KEY.match(key)
        return match is not None and int(match[2]) < bank.num_experts

    target = {prefix + k: t for k, t in bank.state_dict().items()}
    mine = {k: t for k, t in state_dict.items() if k.startswith(prefix)}
    _check_against(target, mine, ignore=foreign)
    bank.load_state_dict({k.removeprefix(prefix): mine[k] for k in target}, strict=True)


def _check_against(
    target: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor], *, ignore: Callable[[str], bool]
) -> None:
    """Raise one ConfigError listing every key or shape problem of ``given`` against ``target``."""
    missing = sorted(k for k in target if k not in given)
    unexpected = sorted(k for k in given if k not in target and not ignore(k))
    mismatched = sorted(
        f"{k} {_shape(given[k])} vs model {_shape(target[k])}"
        for k in target
        if k in given and tuple(given[k].shape) != tuple(target[k].shape)
    )
    problems = []
    for label, names in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if names:
            shown = ", ".join(names[:_SHOWN]) + (f" ... and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")
            problems.append(f"{len(names)} {label}: {shown}")
    if any(k.startswith("pos_embed ") for k in mismatched):
        problems.append("pos_embed size says the checkpoint is for another latent_side")
    if problems:
        raise ConfigError("checkpoint", "; ".join(problems))


def _shape(t: torch.Tensor) -> str:
    return "x".join(str(s) for s in t.shape) or "scalar"
