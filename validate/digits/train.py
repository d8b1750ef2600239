"""Train the ``digits`` DiT-MoE on scikit-learn's handwritten digits, deterministically.

The network is :class:`validate.model.model.DiTMoE` itself, driven through the same pieces the
expert-parallel executor calls (patch embedding, adaLN attention half, router, routed
SwiGLU experts with top-2, shared expert, gated residual, head), so the checkpoint this
writes is in the public DiT-MoE layout and loads through :mod:`validate.model.checkpoint`.

The recipe follows DiT-MoE (feizc/DiT-MoE ``train.py`` / ``rectified_flow.py``):
- rectified flow: x_t = (1 - t) x_0 + t noise, target v = noise - x_0, t = sigmoid(N(0, 1))
  (logit-normal), the time passed to the network as is, as the sampler does;
- classifier-free guidance by dropping 10% of the labels to the null class;
- a Switch-style load-balancing loss on every router (coefficient 0.01, as DiT-MoE);
- DiT's adaLN-Zero initialisation (modulation and output layers start at zero), label and
  timestep embeddings N(0, 0.02^2);
- AdamW, linear warm-up then cosine decay, gradient clipping at 1, and an EMA of the
  weights (decay with warm-up), which is what gets saved.

Determinism: every random draw (data order, t, noise, label dropout) comes from one
seeded ``torch.Generator``; torch runs with a fixed thread count and deterministic
algorithms. The same command on the same software therefore writes the same checkpoint.

Shape legend: B images, C channels, S pixels per side, T tokens, D hidden, N = B*T token
rows, E experts, K copies per token.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from dicesim.atomic import write_all_atomic
from dicesim.errors import ConfigError
from dicesim.limits import INT64_MAX, MAX_LEARNING_RATE, MAX_TRAIN_BATCH, MAX_TRAIN_STEPS, check_range
from dicesim.membudget import usable_cpus
from dicesim.models import get_model
from dicesim.progress import NO_PROGRESS, Ticker
from validate.digits.data import DIGITS_SIDE_PX, DigitsSplit
from validate.model.model import DiTMoE, top_k_copies

MODEL_NAME = "digits"


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """One training run; the defaults are the committed checkpoint's."""

    steps: int = 1500
    batch: int = 64
    lr: float = 1e-3
    warmup_steps: int = 200
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    balance_coef: float = 0.01
    label_dropout: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    threads: int = 1
    log_every: int = 100

    def __post_init__(self) -> None:
        # every field bounded before torch sees it: a NaN learning rate was a ValueError traceback
        # from the optimizer, 100,000 threads an allocation failure (dicesim/limits.py)
        check_range("steps", self.steps, 1, MAX_TRAIN_STEPS)
        check_range("batch", self.batch, 1, MAX_TRAIN_BATCH)
        check_range("threads", self.threads, 1, usable_cpus())
        check_range("log_every", self.log_every, 1, MAX_TRAIN_STEPS)
        check_range("seed", self.seed, 0, INT64_MAX)
        for name, high, low_open in (("lr", MAX_LEARNING_RATE, True), ("weight_decay", 1.0, False),
                                     ("balance_coef", 100.0, False), ("label_dropout", 1.0, False),
                                     ("grad_clip", 1e6, True)):
            v = getattr(self, name)
            ok = isinstance(v, (int, float)) and math.isfinite(v) and (0 < v if low_open else 0 <= v) and v <= high
            if not ok:
                raise ConfigError(name, f"{v!r} is out of range", f"{'0 <' if low_open else '0 <='} {name} <= {high:g}")
        if not 0 <= self.warmup_steps <= self.steps:
            raise ConfigError("warmup_steps", f"{self.warmup_steps} is outside 0..steps", f"0..{self.steps}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError("ema_decay", f"{self.ema_decay} is outside [0, 1)", "[0, 1)")


def new_model(seed: int, label_dropout: float = 0.1) -> DiTMoE:
    """The ``digits`` DiT-MoE with DiT's training initialisation (adaLN-Zero)."""
    model = DiTMoE(get_model(MODEL_NAME), latent_side=DIGITS_SIDE_PX, seed=seed, label_dropout_prob=label_dropout)
    with torch.no_grad():
        for block in model.blocks:
            block.adaLN_modulation[-1].weight.zero_()
            block.adaLN_modulation[-1].bias.zero_()
        for p in (*model.final_layer.adaLN_modulation[-1].parameters(), *model.final_layer.linear.parameters()):
            p.zero_()
        gen = torch.Generator().manual_seed(seed)
        model.y_embedder.embedding_table.weight.normal_(0.0, 0.02, generator=gen)
        for layer in (model.t_embedder.mlp[0], model.t_embedder.mlp[2]):
            layer.weight.normal_(0.0, 0.02, generator=gen)
    return model


def forward_with_balance(model: DiTMoE, x_BCSS: torch.Tensor, t_B: torch.Tensor, y_B: torch.Tensor,
                         drop_generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference forward piece by piece, plus the mean Switch balance loss of the routers.

    Balance loss per layer: E * sum_e f_e * P_e, with f_e the share of token copies routed to
    expert e and P_e its mean router probability (1 when perfectly balanced).
    """
    x_BTD, c_BD = model.embed(x_BCSS, t_B, y_B, drop_generator=drop_generator)
    balance = x_BTD.new_zeros(())
    for block in model.blocks:
        mod = block.modulation(c_BD)
        x_BTD = block.attention_half(x_BTD, c_BD, mod=mod)
        h_ND, gate_mlp_BD = block.moe_input(x_BTD, c_BD, mod=mod)
        probs_NE = block.moe.gate.probs(h_ND)
        idx_NK, score_NK = top_k_copies(probs_NE, block.preset.top_k)
        E = probs_NE.shape[1]
        share_E = torch.bincount(idx_NK.reshape(-1), minlength=E).float() / idx_NK.numel()
        balance = balance + E * (share_E * probs_NE.mean(dim=0)).sum()
        routed_ND = block.routed_experts(h_ND, idx_NK, score_NK)
        x_BTD = block.moe_output(x_BTD, routed_ND, block.shared_expert(h_ND), gate_mlp_BD)
    return model.head(x_BTD, c_BD), balance / len(model.blocks)


def flow_batch(x0_BCSS: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noisy inputs x_t, times t_B (logit-normal) and velocity targets for clean images x0."""
    B = x0_BCSS.shape[0]
    t_B = torch.sigmoid(torch.randn(B, generator=gen))
    noise_BCSS = torch.randn(x0_BCSS.shape, generator=gen)
    t_B111 = t_B.view(B, 1, 1, 1)
    return (1 - t_B111) * x0_BCSS + t_B111 * noise_BCSS, t_B, noise_BCSS - x0_BCSS


def flow_loss(model: DiTMoE, x0_BCSS: torch.Tensor, y_B: torch.Tensor, gen: torch.Generator, *,
              drop_generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Velocity MSE and balance loss on one batch (all randomness from ``gen``)."""
    xt_BCSS, t_B, v_BCSS = flow_batch(x0_BCSS, gen)
    out_BOSS, balance = forward_with_balance(model, xt_BCSS, t_B, y_B, drop_generator)
    return F.mse_loss(out_BOSS[:, : x0_BCSS.shape[1]], v_BCSS), balance


@torch.no_grad()
def eval_loss(model: DiTMoE, x0_BCSS: torch.Tensor, y_B: torch.Tensor, *, seed: int = 12345) -> float:
    """Velocity MSE on fixed noise and times (no label dropout): comparable across models."""
    return float(flow_loss(model, x0_BCSS, y_B, torch.Generator().manual_seed(seed))[0])


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up to ``lr``, then cosine decay to zero at ``steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps, 1)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))


def ema_decay_at(cfg: TrainConfig, step: int) -> float:
    """EMA decay with the usual warm-up, min(decay, (1 + step) / (10 + step)): a fixed 0.999
    would still hold 0.999^1500 = 22% of the untrained weights after a 1,500-step run."""
    return min(cfg.ema_decay, (1 + step) / (10 + step))


def train(cfg: TrainConfig, data: DigitsSplit, *, on_log: Callable[[dict], None] | None = None,
          ticker: Ticker = NO_PROGRESS) -> tuple[DiTMoE, dict]:
    """Train; returns the EMA model (eval mode) and the log (config, loss curve, seconds).
    ``ticker`` hears of each optimizer step."""
    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True)
    model = new_model(cfg.seed, cfg.label_dropout).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    drop_gen = torch.Generator().manual_seed(cfg.seed + 1)
    x_all, y_all = data.train_x, data.train_y
    n = x_all.shape[0]
    eval_x, eval_y = data.test_x, data.test_y
    curve: list[dict] = []
    order, pos = torch.randperm(n, generator=gen), 0
    sums = [0.0, 0.0, 0]
    start = time.perf_counter()
    ticker.expect(cfg.steps)
    for step in range(cfg.steps):
        if pos + cfg.batch > n:  # a new epoch: fresh permutation, the partial tail is dropped
            order, pos = torch.randperm(n, generator=gen), 0
        idx = order[pos : pos + cfg.batch]
        pos += cfg.batch
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, step)
        mse, balance = flow_loss(model, x_all[idx], y_all[idx], gen, drop_generator=drop_gen)
        loss = mse + cfg.balance_coef * balance
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        decay = ema_decay_at(cfg, step)
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), model.parameters()):
                p_ema.lerp_(p, 1.0 - decay)
        sums = [sums[0] + mse.item(), sums[1] + balance.item(), sums[2] + 1]
        ticker.advance()
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            row = {"step": step + 1, "train_mse": sums[0] / sums[2], "balance": sums[1] / sums[2],
                   "heldout_mse_ema": eval_loss(ema, eval_x, eval_y), "lr": lr_at(cfg, step),
                   "elapsed_s": time.perf_counter() - start}
            curve.append(row)
            sums = [0.0, 0.0, 0]
            if on_log is not None:
                on_log(row)
    log = {"config": asdict(cfg), "model": MODEL_NAME, "train_images": n, "heldout_images": int(eval_x.shape[0]),
           "seconds": time.perf_counter() - start, "torch": torch.__version__, "curve": curve}
    return ema, log


def train_small(cfg: TrainConfig, out_dir: str | os.PathLike[str], *, command: str,
                echo: Callable[[str], None] = print, ticker: Ticker = NO_PROGRESS) -> dict:
    """Train the classifier and the DiT-MoE; write both weights and the log to ``out_dir``.

    Files (all written atomically): the DiT-MoE checkpoint in the public layout, the
    classifier weights and ``train_log.json`` (both runs' settings, the loss curve, held-out
    classifier accuracy, wall-clock seconds and the command).
    """
    from validate.model.checkpoint import export_state_dict
    from validate.digits.classifier import accuracy, save_classifier, train_classifier
    from validate.digits.data import CHECKPOINT_FILE, CLASSIFIER_FILE, TRAIN_LOG_FILE, load_digits_split

    out = Path(out_dir)
    data = load_digits_split()
    torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    clf = train_classifier(data, seed=cfg.seed)
    clf_acc = accuracy(clf, data.test_x, data.test_y)
    clf_s = time.perf_counter() - t0
    echo(f"classifier: held-out accuracy {clf_acc:.4f} on {data.test_x.shape[0]} images ({clf_s:.1f} s)")

    def report(row: dict) -> None:
        echo(f"step {row['step']:5d}  train MSE {row['train_mse']:.4f}  held-out MSE (EMA) {row['heldout_mse_ema']:.4f}"
             f"  balance {row['balance']:.3f}  {row['elapsed_s']:.0f} s")

    model, log = train(cfg, data, on_log=report, ticker=ticker)
    log.update(command=command, classifier={"heldout_accuracy": clf_acc, "heldout_images": int(data.test_x.shape[0]),
                                             "seconds": clf_s, "file": CLASSIFIER_FILE},
               checkpoint=CHECKPOINT_FILE)
    state = export_state_dict(model)
    write_all_atomic([
        (out / CHECKPOINT_FILE, lambda tmp: torch.save(state, tmp)),
        (out / TRAIN_LOG_FILE, lambda tmp: tmp.write_text(json.dumps(log, indent=1) + "\n", encoding="utf-8")),
    ])
    save_classifier(clf, out / CLASSIFIER_FILE)
    return log
