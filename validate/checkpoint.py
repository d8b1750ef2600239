"""Checkpoints in the public DiT-MoE layout (feizc/DiT-MoE ``models.py``).

:class:`validate.model.DiTMoE` names its modules like the public model, so its state dict
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
import pickle
import re
from collections.abc import Callable, Mapping

import torch

from dicesim.atomic import write_atomic
from dicesim.errors import ConfigError
from validate.experts import ExpertBank
from validate.model import DiTMoE

_EXPERT_KEY = re.compile(r"^blocks\.(\d+)\.moe\.experts\.(\d+)\.")
_WRAPPER_KEYS = ("ema", "model", "state_dict", "module")  # training scripts nest the weights
_SHOWN = 4  # key names listed per problem before "... and N more"


def export_state_dict(model: DiTMoE) -> dict[str, torch.Tensor]:
    """Detached copies of the model's weights in the public layout (only the held experts)."""
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def save_checkpoint(model: DiTMoE, path: str | os.PathLike[str]) -> None:
    """Write ``export_state_dict(model)`` with torch.save, atomically (tmp file + rename)."""
    state = export_state_dict(model)
    write_atomic(path, lambda tmp: torch.save(state, tmp))


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load a state dict from disk (tensors only), unwrapping ``ema``/``model`` and DDP prefixes."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise ConfigError("checkpoint", f"cannot read {path}: {' '.join(str(exc).split())[:200]}") from None
    for wrapper in _WRAPPER_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError("checkpoint", f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


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
