"""A DICE reference command line (``sample_ddp.py`` flags) as a dicesim strategy.

The reference (github Cobalt-27/DICE) chooses its strategy with command-line flags
(``sample_ddp.py:374-391``); docs/strategies.md (``--ep*``) and docs/sequence-parallel.md
(``--sp*``) map each to dicesim's fields and cite the code that gives it its meaning.
:func:`strategy_from_reference_flags` applies that mapping, rejects what the reference itself
rejects (and the one combination dicesim does not model, ``--sp --ep``), and returns notes on
what dicesim does differently.
"""

from __future__ import annotations

import argparse
import shlex

from dicesim.errors import ConfigError
from dicesim.limits import MAX_STEPS
from dicesim.strategy import REFERENCE_SEMANTICS, ExpertParallelStrategy, SequenceParallelStrategy, Strategy
from dicesim.strict_table import ascii_int

#: --ep-async-mode names the layers that run asynchronously; sync_layers names the others
ASYNC_MODE_TO_SYNC_LAYERS = {"shallow": "deep", "deep": "shallow", "interleaved": "alternate", "all": "none"}
SKIP_STRATEGY_TO_POLICY = {"low": "low", "high": "high", "rand": "random"}
#: flags of sample_ddp.py that set the workload or the output, not the strategy
_WORKLOAD_FLAGS = ("--model", "--vae", "--vae-path", "--sample-dir", "--per-proc-batch-size", "--num-fid-samples",
                   "--num-experts", "--image-size", "--num-classes", "--cfg-scale", "--num-sampling-steps",
                   "--global-seed", "--ckpt", "--extra-folder-name", "--extra-name")
_WORKLOAD_SWITCHES = ("--tf32", "--trim-samples", "--single-img")


def _step_count(text: str) -> int:
    """A step count of a flag: ASCII digits (``int`` would read Arabic-Indic or full-width digits
    as numbers no shell user typed), within +-MAX_STEPS (negatives act as the reference makes them act)."""
    value = ascii_int(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not an integer in ASCII digits")
    if abs(value) > MAX_STEPS:
        raise argparse.ArgumentTypeError(f"{value} is outside -{MAX_STEPS}..{MAX_STEPS} steps")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sample_ddp.py", add_help=False, allow_abbrev=False, exit_on_error=False)
    for flag in ("--ep", "--ep-async", "--ep-async-pipeline", "--auto-gc", "--ep-score-use-latest", "--sp",
                 "--sp-async", "--sp-legacy-cache", *_WORKLOAD_SWITCHES):
        p.add_argument(flag, action="store_true")
    p.add_argument("--ep-async-mode", choices=tuple(ASYNC_MODE_TO_SYNC_LAYERS))
    p.add_argument("--ep-async-skip-strategy", choices=tuple(SKIP_STRATEGY_TO_POLICY))
    for flag, default in (("--ep-async-warm-up", 0), ("--ep-async-cool-down", 0), ("--strided-sync", 0),
                          ("--sp-async-warm-up", 0), ("--ep-async-noskip-step", 1)):
        p.add_argument(flag, type=_step_count, default=default)
    for flag in _WORKLOAD_FLAGS:
        p.add_argument(flag)
    return p


def _flags(cmdline: str) -> list[str]:
    try:
        tokens = shlex.split(cmdline)
    except ValueError as exc:
        raise ConfigError("reference flags", f"cannot split the command line ({exc})") from None
    # drop a launcher prefix such as "torchrun --nproc_per_node 8 sample_ddp.py"
    script = next((i for i, tok in enumerate(tokens) if tok.endswith(".py")), None)
    return tokens[script + 1:] if script is not None else tokens


def _require(cond: bool, problem: str, where: str) -> None:
    if not cond:
        raise ConfigError("reference flags", f"{problem} (the reference rejects it: {where})")


def strategy_from_reference_flags(cmdline: str, *, name: str = "reference") -> tuple[Strategy, list[str]]:
    """The strategy a reference command line runs, and notes on where dicesim differs."""
    try:
        args, unknown = _parser().parse_known_args(_flags(cmdline))
    except argparse.ArgumentError as exc:
        raise ConfigError("reference flags", str(exc)) from None
    if unknown:
        raise ConfigError("reference flags", f"unknown flag or value {unknown[0]!r}",
                          "the flags of sample_ddp.py:354-395")
    if args.sp or args.sp_async or args.sp_legacy_cache or args.sp_async_warm_up:
        return _sequence_from_flags(args, name)
    notes: list[str] = []
    _require(args.ep or not args.ep_async, "--ep-async needs --ep", "models.py:40-41")
    if not args.ep_async:
        for flag, on in (("--auto-gc", args.auto_gc), ("--ep-async-pipeline", args.ep_async_pipeline),
                         ("--ep-score-use-latest", args.ep_score_use_latest),
                         ("--ep-async-warm-up", args.ep_async_warm_up > 0),
                         ("--ep-async-cool-down", args.ep_async_cool_down > 0),
                         ("--strided-sync", args.strided_sync > 0)):
            _require(not on, f"{flag} needs --ep-async", "sample_ddp.py:410-431")
        if args.ep_async_noskip_step != 1 or args.ep_async_skip_strategy:
            notes.append("conditional communication flags have no effect without --ep-async (sample_ddp.py:182-191)")
        scheme = "sync" if args.ep else "data_parallel"
        return ExpertParallelStrategy(name=name, scheme=scheme), notes
    _require(args.ep_async_mode is not None, "--ep-async needs --ep-async-mode", "models.py:329-338")
    n = args.ep_async_noskip_step
    _require(n == 1 or args.ep_async_skip_strategy is not None,
             "--ep-async-noskip-step other than 1 needs --ep-async-skip-strategy", "diep.py:136-137")
    if n == 0:
        raise ConfigError("reference flags", "--ep-async-noskip-step 0: the reference takes its step counter "
                          "modulo n (expertpara/diep.py:68) and fails with ZeroDivisionError at step 1, the "
                          "first step whose layers hold a skip-cache entry", "1 (off) or an interval >= 2")
    if n < 0:  # i % -n != 0 exactly when i % n != 0; -1 enables skipping on no step
        notes.append(f"--ep-async-noskip-step {n} acts as {-n} in the reference (diep.py:68: i % {n} is 0 "
                     f"exactly when i % {-n} is; read, not run)")
        n = -n
    warm_up, strided, cool_down = max(args.ep_async_warm_up, 0), max(args.strided_sync, 0), args.ep_async_cool_down
    if cool_down > 0 and not (warm_up or strided):
        notes.append("--ep-async-cool-down alone is ignored by the reference: ep_forced_sync returns before its "
                     "cool-down test unless --ep-async-warm-up or --strided-sync is set (diffusion/warmup.py:13-14, "
                     "23-24); so is it here")
        cool_down = 0
    fields: dict[str, object] = dict(
        REFERENCE_SEMANTICS,
        scheme="interweaved" if args.ep_async_pipeline else "displaced",
        sync_layers=ASYNC_MODE_TO_SYNC_LAYERS[args.ep_async_mode],
        # the first step always runs synchronously (diffusion/warmup.py:11-12), then the warm-up ones
        warmup_steps=1 + warm_up,
        cooldown_steps=max(cool_down, 0),
        sync_every=strided,
        cond_interval=n,
        buffer_policy="reference_gc" if args.auto_gc else "reference",
        # the flag's name says the opposite of what the code does (sample_ddp.py:192, ep_fwd.py:190-193)
        stale_weights="producer" if args.ep_score_use_latest else "current",
    )
    if n > 1:
        fields["cond_policy"] = SKIP_STRATEGY_TO_POLICY[args.ep_async_skip_strategy]
        if n > 2:
            notes.append(f"with --ep-async-noskip-step {n} the reference runs or fails depending on the step count "
                         "and the layers (a one-copy output that finds no skip-cache entry, expertpara/ep_fwd.py:184); "
                         "the plan is refused, naming the step, where it fails")
        if args.ep_async_skip_strategy == "rand":
            notes.append("'rand' draws one mask for every layer (diep.py:80-88); dicesim's 'random' draws one "
                         "per layer from StrategyConfig.seed")
    elif args.ep_async_skip_strategy is not None:
        notes.append(f"--ep-async-skip-strategy has no effect with --ep-async-noskip-step {args.ep_async_noskip_step} "
                     "(diep.py:128: no step is a candidate)")
    if args.strided_sync > 0:
        notes.append("the reference syncs when (T - t) % S == 0 (diffusion/warmup.py:21-22), dicesim when "
                     "t % S == 0: the same steps when S divides the step count T")
    if args.model in ("DiT-XL/2", "DiT-G/2"):
        notes.append("XL/2 and G/2 sample 50 rectified-flow steps whatever --num-sampling-steps says "
                     "(sample_ddp.py:229)")
    try:
        return ExpertParallelStrategy(name=name, **fields), notes
    except ValueError as exc:  # pydantic's ValidationError
        raise ConfigError("reference flags", " ".join(str(exc).split())) from None


#: flags that only asynchronous expert parallelism accepts (sample_ddp.py:412-431)
_EP_ASYNC_ONLY = ("ep_async_pipeline", "ep_score_use_latest", "ep_async_warm_up", "ep_async_cool_down",
                  "strided_sync")


def _sequence_from_flags(args: argparse.Namespace, name: str) -> tuple[SequenceParallelStrategy, list[str]]:
    """``--sp`` (and its options) as a :class:`SequenceParallelStrategy` (docs/sequence-parallel.md)."""
    _require(args.sp or not args.sp_async, "--sp-async needs --sp", "models.py:44-45")
    _require(args.sp_async or args.sp_async_warm_up <= 0, "--sp-async-warm-up needs --sp-async",
             "sample_ddp.py:422-423")
    _require(args.sp_async or not args.sp_legacy_cache, "--sp-legacy-cache needs --sp-async", "sample_ddp.py:425-426")
    _require(args.sp_async or args.ep_async or not args.auto_gc, "--auto-gc needs --ep-async or --sp-async",
             "sample_ddp.py:410-411")
    _require(args.ep or not args.ep_async, "--ep-async needs --ep", "models.py:40-41")
    if not args.ep_async:
        for flag in _EP_ASYNC_ONLY:
            _require(not getattr(args, flag), f"--{flag.replace('_', '-')} needs --ep-async", "sample_ddp.py:412-431")
    if args.ep:
        raise ConfigError("reference flags", "--sp with --ep (sequence-parallel attention, expert-parallel MoE on each "
                          "rank's token slice, models.py:322-354) is not modelled by dicesim yet",
                          "--sp [--sp-async] without --ep")
    notes: list[str] = []
    if args.ep_async_noskip_step != 1 or args.ep_async_skip_strategy:
        notes.append("conditional communication flags have no effect without --ep-async (sample_ddp.py:182-191)")
    if args.auto_gc:
        notes.append("--auto-gc has no effect on the comm manager: sp_init always gets auto_gc=True "
                     "(sample_ddp.py:194), which only the legacy cache reads (df.py:38-45)")
    if args.sp_legacy_cache:
        notes.append("--sp-legacy-cache is not modelled: dicesim runs the comm manager's collectives and buffers "
                     "instead. The legacy cache (df.py:64-88, sp_cache.py) has the same K/V lag (1 step, measured) "
                     "but sends K and V of every layer separately (2L asynchronous all-gathers per step instead of "
                     "ceil(L/4)) and holds about (W-1)/W of a K/V set per layer plus the own slices in flight")
    warmup = max(args.sp_async_warm_up, 0)
    if warmup and args.model not in (None, "DiT-XL/2", "DiT-G/2"):
        notes.append(f"on the DDPM path (DiT-S/B/L) --sp-async-warm-up {warmup} leaves {warmup} fresh steps, not "
                     f"{warmup + 1}: its counter runs T-1..0 (diffusion/gaussian_diffusion.py:501); dicesim counts "
                     "the rectified-flow path's")
    if args.single_img:
        notes.append("--single-img: the batch is rank 0's --per-proc-batch-size images (x2 with guidance), computed "
                     "by every rank (sample_ddp.py:213); dicesim's batch is then the images of one rank")
    if args.model in ("DiT-XL/2", "DiT-G/2"):
        notes.append("XL/2 and G/2 sample 50 rectified-flow steps whatever --num-sampling-steps says "
                     "(sample_ddp.py:229)")
    return SequenceParallelStrategy(name=name, kv_async=args.sp_async, warmup_steps=warmup,
                                    single_img=args.single_img), notes
