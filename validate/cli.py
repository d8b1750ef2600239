"""``python -m validate run ...``: run the expert-parallel executor and print what it measured.

Local ranks are spawned unless the process was started by ``torchrun`` (then this process
is one rank and rank 0 reports). Bad input: one line on stderr, exit code 2. A rank that
dies or hangs: one line on stderr, exit code 1, no trace written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dicesim.cli.entry import run_app
from dicesim.cli.study_cmd import csv_list
from dicesim.errors import ConfigError
from dicesim.limits import MAX_QUALITY_SEEDS, MAX_TIMEOUT_S, check_range
from dicesim.progress import progress_bar
from dicesim.strategy import make_strategy
from dicesim.outguard import Output, check_outputs
from dicesim.strict_table import ascii_int_list

app = typer.Typer(name="validate", help="Expert-parallel DiT-MoE executor (torch.distributed).\n\n"
                  "Example (dice on 2 gloo CPU ranks; `python3 -m validate COMMAND --help` shows one per command):"
                  "\n\n    python3 -m validate run --world-size 2 --model tiny --strategy dice --steps 10",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@app.callback()
def _root() -> None:
    """Expert-parallel DiT-MoE executor: the measured ground truth for dicesim."""


def _sync_layers(value: str | None) -> object:
    if value is None or value in ("none", "deep", "shallow", "alternate"):
        return value
    return ascii_int_list(value, "sync_layers", ("none", "deep", "shallow", "alternate", "0,1,..."))


@app.command()
def run(
    world_size: int = typer.Option(2, "--world-size", help="ranks to run"),
    backend: str = typer.Option("gloo", help="gloo (CPU) or nccl (GPUs)"),
    model: str = typer.Option("tiny", help="model preset"),
    num_experts: int | None = typer.Option(None, "--num-experts", help="override the preset's expert count"),
    strategy: str = typer.Option("dice", help="strategy preset"),
    steps: int = typer.Option(20, help="denoising steps"),
    batch: int = typer.Option(2, help="images per rank (CFG doubles them)"),
    image_size: int = typer.Option(32, "--image-size", help="image side in px"),
    seed: int = typer.Option(0, help="weights, noise and labels seed"),
    guidance_scale: float = typer.Option(4.0, "--guidance-scale", help="CFG scale; < 0 turns CFG off"),
    sync_layers: str | None = typer.Option(None, "--sync-layers", help="none|deep|shallow|alternate|0,1,..."),
    cond_interval: int | None = typer.Option(None, "--cond-interval", help="conditional communication interval"),
    cond_policy: str | None = typer.Option(None, "--cond-policy", help="low|high|random"),
    cooldown: int | None = typer.Option(None, "--cooldown", help="final synchronous steps"),
    sync_every: int | None = typer.Option(None, "--sync-every", help="periodic synchronous step"),
    stale_weights: str | None = typer.Option(None, "--stale-weights", help="current|producer"),
    count_comm: str | None = typer.Option(None, "--count-comm", help="shared|separate"),
    async_work: str | None = typer.Option(None, "--async-work", help="every_step|consumed_only"),
    cond_scope: str | None = typer.Option(None, "--cond-scope", help="all|async"),
    cond_gate: str | None = typer.Option(None, "--cond-gate", help="reference|every_candidate"),
    slot_order: str | None = typer.Option(None, "--slot-order", help="combine_first|shared_first"),
    buffer_policy: str | None = typer.Option(None, "--buffer-policy", help="reference_gc|reference|separate"),
    group_layout: str = typer.Option("contiguous", "--group-layout", help="contiguous|strided (E < W)"),
    dtype: str = typer.Option("fp32", help="fp32|bf16|fp16"),
    shadow: bool = typer.Option(False, "--shadow", help="measure each layer's error against a fresh sync output"),
    measure_memory: bool = typer.Option(False, "--measure-memory",
                                        help="count weights and the peak bytes of every tensor allocated (slower)"),
    checkpoint: Path | None = typer.Option(None, help="DiT-MoE checkpoint (public layout)"),
    trace_out: Path | None = typer.Option(None, "--trace-out", help="directory for trace files"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON summary object"),
    timeout_s: float = typer.Option(30.0, "--timeout", help="collective timeout in s (bounds a hung run)"),
    transport: str = typer.Option("distributed", "--transport",
                                  help="distributed (a process per rank) | host-staged (the ranks emulated on one "
                                       "device, cross-rank rows copied through host memory)"),
    device: str = typer.Option("cpu", "--device", help="host-staged only: cpu | cuda"),
) -> None:
    """Run one strategy on local ranks (or as one torchrun rank) and report latency, lag, memory.

    Example (dice on 2 gloo CPU ranks, tiny model):

        python3 -m validate run --world-size 2 --model tiny --strategy dice --steps 10
    """
    from validate.executor.worker import RunSpec

    strat = make_strategy(strategy, sync_layers=_sync_layers(sync_layers), cond_interval=cond_interval,
                          cond_policy=cond_policy, cooldown_steps=cooldown, sync_every=sync_every,
                          stale_weights=stale_weights, count_comm=count_comm, async_work=async_work,
                          cond_scope=cond_scope, cond_gate=cond_gate, slot_order=slot_order,
                          buffer_policy=buffer_policy)
    if getattr(strat, "seed", seed) != seed:  # the run seed also fixes the `random` policy's choice (not a strategy change)
        strat = strat.model_copy(update={"seed": seed})
    if not 0 < timeout_s <= MAX_TIMEOUT_S:  # NaN fails too
        raise ConfigError("timeout", f"must be > 0 s, got {timeout_s}", f"0 < timeout <= {MAX_TIMEOUT_S} s")
    if trace_out is not None:
        check_outputs([Output("--trace-out", trace_out, "dir", ("validate-*.trace.json", "validate-*.events.parquet",
                                                                "*.trace.json", "*.events.parquet"))], [checkpoint])
    spec = RunSpec(strategy=strat, model=model, num_experts=num_experts, steps=steps, batch=batch,
                   image_size=image_size, seed=seed, guidance_scale=None if guidance_scale < 0 else guidance_scale,
                   shadow=shadow, group_layout=group_layout, dtype=dtype, trace=trace_out is not None,
                   checkpoint=None if checkpoint is None else str(checkpoint), measure_memory=measure_memory)
    if transport != "distributed" or device != "cpu":
        from validate.executor.hoststaged import cli_run

        if transport == "distributed":
            raise ConfigError("device", "the distributed transport picks devices by --backend", ("cpu",))
        summary = cli_run(spec, transport=transport, world_size=world_size, device=device, trace_out=trace_out)
    else:
        summary = _run_distributed(spec, world_size=world_size, backend=backend, timeout_s=timeout_s,
                                   trace_out=trace_out)
        if summary is None:  # a torchrun rank other than 0
            return
    if as_json:  # the shared result schema (dicesim.results), the same the simulator prints
        from dicesim.results import result_from_executor

        print(result_from_executor(summary).to_json())
        return
    _print_human(summary)


def _run_distributed(spec, *, world_size: int, backend: str, timeout_s: float, trace_out: Path | None) -> dict | None:
    """Spawn (or join, under torchrun) the ranks of one run; rank 0's summary, None on other ranks."""
    from validate.executor.launch import launch, run_from_env, under_torchrun
    from validate.executor.summary import summarize, write_run_trace

    if under_torchrun():
        outcomes = run_from_env([spec], backend=backend, timeout_s=timeout_s)
        if outcomes is None:  # not rank 0
            return None
    else:
        outcomes = launch([spec], world_size=world_size, backend=backend, timeout_s=timeout_s)
    outcome = outcomes[0]
    summary = summarize(outcome)
    if trace_out is not None:
        paths = write_run_trace(outcome, trace_out)
        summary["trace_files"] = {k: str(v) for k, v in paths.items()}
    return summary


@app.command()
def quality(
    strategies: str = typer.Option("displaced,interweaved,displaced-deep,interweaved-deep,dice",
                                   help="comma-separated strategy presets (sync is the reference)"),
    model: str = typer.Option("small", help="model preset"),
    steps: int = typer.Option(20, help="denoising steps"),
    batch: int = typer.Option(2, help="images per emulated rank"),
    world_size: int = typer.Option(2, "--world-size", help="emulated ranks (sets the global batch)"),
    image_size: int = typer.Option(64, "--image-size", help="pixels"),
    seed: int = typer.Option(0, help="noise, labels and weight seed"),
    checkpoint: Optional[Path] = typer.Option(None, help="DiT-MoE checkpoint (public layout) instead of random weights"),
    out: Optional[Path] = typer.Option(None, help="write the markdown table here (atomically)"),
    seeds: int = typer.Option(3, help="digits: seeds (noise and labels), >= 2 for a spread"),
    images: int = typer.Option(200, help="digits: images per seed (divisible by every --world-sizes entry)"),
    guidance_scale: float = typer.Option(1.5, "--guidance-scale", help="digits: CFG scale"),
    check_steps: str = typer.Option("10,40", "--check-steps", help="digits: other step counts for the lag/T check"),
    world_sizes: str = typer.Option("2,4", "--world-sizes", help="digits: gloo ranks for the distributed check"),
) -> None:
    """Staleness vs output. `--model digits`: the trained model's image quality per strategy
    (FD, class accuracy, deviation) -> docs/quality.md, its figure and the simulator's quality table.
    Other models: lag, stale-layer error and final-latent deviation from sync (random weights).

    Example (dice against sync on the tiny model, random weights, ~10 s):

        python3 -m validate quality --model tiny --steps 6 --strategies dice
    """
    from dicesim.atomic import write_text_atomic

    if out is not None:
        check_outputs([Output("--out", out)], [checkpoint])
    if model == "digits":
        _digits_quality(steps=steps, seeds=seeds, images=images, guidance_scale=guidance_scale,
                        check_steps=check_steps, world_sizes=world_sizes, checkpoint=checkpoint, out=out)
        return
    from validate.quality.staleness import staleness_markdown, staleness_table
    from validate.executor.worker import RunSpec

    base = RunSpec(strategy=make_strategy("sync"), model=model, steps=steps, batch=batch, image_size=image_size,
                   seed=seed, checkpoint=str(checkpoint) if checkpoint else None)
    names = csv_list(strategies, "--strategies")  # ",,," is no strategy at all: refused, as by compare
    with progress_bar("quality", unit="strategies") as ticker:
        table = staleness_table(list(names or ()), base, world_size=world_size, ticker=ticker)
    command = (f"python -m validate quality --strategies {strategies} --model {model} --steps {steps} "
               f"--batch {batch} --world-size {world_size} --image-size {image_size} --seed {seed}")
    text = staleness_markdown(table, command)
    if out is not None:
        write_text_atomic(text, out)
    typer.echo(text)


def _int_list(value: str, field: str) -> list[int]:
    out = list(ascii_int_list(value, field, ("10,40",)))
    if any(v < 1 for v in out):
        raise ConfigError(field, f"{value!r} has a value below 1", (">= 1",))
    return out


def _digits_quality(*, steps: int, seeds: int, images: int, guidance_scale: float, check_steps: str,
                    world_sizes: str, checkpoint: Path | None, out: Path | None) -> None:
    from validate.digits.data import CHECKPOINT_FILE, DATA_DIR
    from validate.quality.run import QualityPaths, run_quality
    from validate.quality.study import QualityStudyConfig

    worlds, checks = _int_list(world_sizes, "world_sizes"), _int_list(check_steps, "check_steps")
    check_range("seeds", seeds, 2, MAX_QUALITY_SEEDS)  # >= 2 for a spread
    if images < 2 or any(images % w for w in worlds):
        raise ConfigError("images", f"{images} must be >= 2 and divisible by every world size {worlds}")
    ckpt = checkpoint or DATA_DIR / CHECKPOINT_FILE
    if not ckpt.exists():
        raise ConfigError("checkpoint", f"no such file {ckpt}; run `python -m validate train-small` first")
    cfg = QualityStudyConfig(checkpoint=str(ckpt), steps=steps, guidance_scale=guidance_scale, images=images,
                      seeds=tuple(range(seeds)))
    cfg.check(check_steps=checks, world_sizes=worlds)
    command = (f"python -m validate quality --model digits --steps {steps} --seeds {seeds} --images {images} "
               f"--guidance-scale {guidance_scale:g} --check-steps {check_steps} --world-sizes {world_sizes}")
    paths = QualityPaths() if out is None else QualityPaths(doc=out)
    check_outputs([Output("--out", paths.doc), Output("its figure", paths.figure), Output("its table", paths.table)],
                  [ckpt, paths.data_dir / "classifier.pt", paths.data_dir / "train_log.json"])
    with progress_bar("quality", unit="samples") as ticker:
        run_quality(cfg, paths, check_steps=checks, world_sizes=worlds, command=command, echo=typer.echo,
                    ticker=ticker)


@app.command("train-small")
def train_small_cmd(
    steps: int = typer.Option(1500, help="optimizer steps"),
    batch: int = typer.Option(64, help="images per step"),
    lr: float = typer.Option(1e-3, help="peak learning rate"),
    seed: int = typer.Option(0, help="seed of every random draw"),
    threads: int = typer.Option(1, help="torch threads (fixed: results depend on it)"),
    out_dir: Optional[Path] = typer.Option(None, "--out-dir", help="where to write (default: validate/data/digits)"),
) -> None:
    """Train the `digits` DiT-MoE and the digit classifier on scikit-learn's digits (deterministic).

    Example (a 10-step smoke run into out/; the committed checkpoint took --steps 1500):

        python3 -m validate train-small --steps 10 --out-dir out/digits
    """
    from validate.digits.data import CHECKPOINT_FILE, CLASSIFIER_FILE, DATA_DIR, TRAIN_LOG_FILE
    from validate.digits.train import TrainConfig, train_small

    cfg = TrainConfig(steps=steps, batch=batch, lr=lr, seed=seed, threads=threads,
                      warmup_steps=min(TrainConfig.warmup_steps, steps))
    command = (f"python -m validate train-small --steps {steps} --batch {batch} --lr {lr:g} --seed {seed} "
               f"--threads {threads}")
    target = out_dir or DATA_DIR
    check_outputs([Output("--out-dir", target, "dir", (CHECKPOINT_FILE, CLASSIFIER_FILE, TRAIN_LOG_FILE))])
    with progress_bar("train-small", unit="steps") as ticker:
        log = train_small(cfg, target, command=command, echo=typer.echo, ticker=ticker)
    typer.echo(f"wrote {target} in {log['seconds']:.0f} s: final held-out MSE {log['curve'][-1]['heldout_mse_ema']:.4f}")


def _print_human(s: dict) -> None:
    if s.get("transport") == "host-staged":
        print(f"{s['strategy']} ({s['strategy_desc']}) as {s['emulated_world_size']} host-staged ranks on one "
              f"{s['device_name']}, {s['model']}, {s['steps']} steps, batch {s['batch_per_emulated_rank']}/rank, "
              f"{s['image_size_px']} px; {sum(s['staged_nbytes_per_step'])} B through host memory")
    else:
        print(f"{s['strategy']} ({s['strategy_desc']}) on {s['world_size']} x {s['backend']} ranks, {s['model']}, "
              f"{s['steps']} steps, batch {s['batch_per_rank']}/rank, {s['image_size_px']} px")
    print(f"  mean step latency (steps 1..): {s['mean_step_latency_s'] * 1e3:.2f} ms; "
          f"exposed communication: {s['total_exposed_comm_s'] * 1e3:.2f} ms in total")
    print(f"  peak stale-buffer memory per rank: {s['peak_held_nbytes']} B; mean lag {s['mean_lag_steps']:.3f} steps "
          f"(score-weighted {s['score_weighted_mean_lag_steps']:.3f} steps, max {s['max_lag_steps']} steps)"
          + ("" if s.get("lag_of", "expert output") == "expert output" else f"; lag of the {s['lag_of']}"))
    if s.get("memory_peak_live_nbytes_per_rank"):
        for r, (w, pw, live, plive) in enumerate(zip(
                s["memory_weights_nbytes_per_rank"], s["memory_predicted_weights_nbytes_per_rank"],
                s["memory_peak_live_nbytes_per_rank"], s["memory_predicted_live_nbytes_per_rank"])):
            print(f"  rank {r} memory: weights {w} B (predicted {pw} B); tensors allocated while sampling, peak "
                  f"{live} B (predicted working set + held buffers {plive} B, measured/predicted {live / plive:.3f})")
    if s.get("shadow_rel_l2_mean") is not None:
        print(f"  shadow relative L2 error: mean {s['shadow_rel_l2_mean']:.4f}, max {s['shadow_rel_l2_max']:.4f}")
    for kind, path in s.get("trace_files", {}).items():
        print(f"  trace ({kind}): {path}")


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors and rank failures become one line on stderr."""
    from validate.executor.launch import RankFailure

    return run_app(app, argv, failures=((RankFailure, 1),))
