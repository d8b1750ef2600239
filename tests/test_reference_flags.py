"""`dicesim strategy show --reference-flags`: a DICE reference command line as an ExpertParallelStrategy."""

from __future__ import annotations

import pytest

from dicesim.cli import main
from dicesim.errors import ConfigError
from dicesim.reference_flags import strategy_from_reference_flags
from dicesim.strategy import make_strategy

DICE_CMD = ("torchrun --nproc_per_node 8 sample_ddp.py --model DiT-XL/2 --per-proc-batch-size 32 --ep --ep-async "
            "--ep-async-pipeline --ep-async-mode shallow --ep-async-noskip-step 2 --ep-async-skip-strategy low "
            "--auto-gc --num-sampling-steps 50 --tf32")


def test_dice_command_line_is_the_dice_preset():
    cfg, notes = strategy_from_reference_flags(DICE_CMD)
    assert cfg.model_copy(update={"name": "dice"}) == make_strategy("dice")
    assert any("50 rectified-flow steps" in n for n in notes)


@pytest.mark.parametrize("flags, fields", [
    ("--ep", dict(scheme="sync")),
    ("", dict(scheme="data_parallel")),
    ("--ep --ep-async --ep-async-mode all", dict(scheme="displaced", sync_layers="none", buffer_policy="reference")),
    # --ep-async-mode names the asynchronous layers; sync_layers names the others
    ("--ep --ep-async --ep-async-mode deep --ep-async-pipeline", dict(scheme="interweaved", sync_layers="shallow")),
    ("--ep --ep-async --ep-async-mode interleaved", dict(sync_layers="alternate")),
    # the first step is always synchronous, then the warm-up ones
    ("--ep --ep-async --ep-async-mode all --ep-async-warm-up 3 --ep-async-cool-down 2 --strided-sync 5",
     dict(warmup_steps=4, cooldown_steps=2, sync_every=5)),
    ("--ep --ep-async --ep-async-mode all --ep-async-noskip-step 2 --ep-async-skip-strategy rand",
     dict(cond_interval=2, cond_policy="random", cond_scope="all")),
    # the flag's name is the opposite of what the code does
    ("--ep --ep-async --ep-async-mode all --ep-score-use-latest", dict(stale_weights="producer")),
    # the reference runs n = 3 to the end for T = 50 (harness: dice_n3_28x50, displaced_cond_n3_28x50)
    ("--ep --ep-async --ep-async-pipeline --ep-async-mode shallow --ep-async-noskip-step 3 "
     "--ep-async-skip-strategy low", dict(cond_interval=3, cond_gate="reference")),
    # i % -n is 0 exactly when i % n is (diep.py:68)
    ("--ep --ep-async --ep-async-mode all --ep-async-noskip-step -2 --ep-async-skip-strategy high",
     dict(cond_interval=2, cond_policy="high")),
    # cool-down alone is ignored (diffusion/warmup.py:13-14; harness: interweaved_cooldown_only)
    ("--ep --ep-async --ep-async-mode all --ep-async-pipeline --ep-async-cool-down 3",
     dict(warmup_steps=1, cooldown_steps=0)),
    # with a warm-up it counts (harness: interweaved_warmup_cooldown, forced steps 0, 1, 2, 47, 48, 49)
    ("--ep --ep-async --ep-async-mode all --ep-async-pipeline --ep-async-warm-up 2 --ep-async-cool-down 3",
     dict(warmup_steps=3, cooldown_steps=3)),
])
def test_flag_mapping(flags, fields):
    cfg, _ = strategy_from_reference_flags(flags)
    for k, v in fields.items():
        assert getattr(cfg, k) == v, k
    if cfg.is_async:
        assert (cfg.async_work, cfg.slot_order, cfg.count_comm) == ("every_step", "combine_first", "shared")


@pytest.mark.parametrize("flags, message", [
    ("--ep --ep-async --bogus", "unknown flag or value '--bogus'"),
    ("--ep --ep-async --ep-async-mode sideways", "invalid choice: 'sideways'"),
    ("--ep --ep-async --ep-async-mode all --ep-async-warm-up two", "'two' is not an integer in ASCII digits"),
    ("--ep --ep-async", "--ep-async needs --ep-async-mode"),
    ("--ep-async --ep-async-mode all", "--ep-async needs --ep"),
    ("--ep --auto-gc", "--auto-gc needs --ep-async"),
    ("--ep --ep-async --ep-async-mode all --ep-async-noskip-step 2", "needs --ep-async-skip-strategy"),
    ("--ep --ep-async --ep-async-mode all --ep-async-noskip-step 0 --ep-async-skip-strategy low",
     "ZeroDivisionError at step 1"),
    ("--sp --ep", "not modelled by dicesim yet"),
    ('--ep "--ep-async', "cannot split the command line"),
])
def test_bad_flags_are_config_errors(flags, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        strategy_from_reference_flags(flags)


def test_cli_prints_fields_and_lag_table(capsys):
    assert main(["strategy", "show", "--layers", "4", "--steps", "4", "--reference-flags", DICE_CMD]) == 0
    out = capsys.readouterr().out
    assert "buffer_policy" in out and "reference_gc" in out and "interweaved" in out
    assert "0/1" in out  # a synced layer's dropped copy at a skip step


@pytest.mark.parametrize("args", [["--reference-flags", "--ep --ep-async --frobnicate"],
                                  ["dice", "--reference-flags", "--ep"], []])
def test_cli_errors_one_line_exit_2(capsys, args):
    assert main(["strategy", "show", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err


def test_cool_down_alone_is_noted_as_ignored():
    _, notes = strategy_from_reference_flags("--ep --ep-async --ep-async-mode all --ep-async-cool-down 3")
    assert any("--ep-async-cool-down alone is ignored" in n for n in notes)


def test_interval_the_reference_fails_on_is_refused_naming_the_step(capsys):
    """dice with n = 4, 28 layers, 50 steps: the reference fails at step 6 (i = 44), layer 0
    (harness: dice_n4_28x50); n = 3 runs to the end."""
    flags = DICE_CMD.replace("--ep-async-noskip-step 2", "--ep-async-noskip-step {n}")
    assert main(["strategy", "show", "--steps", "50", "--reference-flags", flags.format(n=4)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "at step 6 of 50 (its i = 44), layer 0" in err and "ep_fwd.py:184" in err
    assert main(["strategy", "show", "--steps", "50", "--reference-flags", flags.format(n=3)]) == 0
