"""train-small: a few steps lower the loss, runs are reproducible, and the committed
checkpoint is in the public DiT-MoE layout (loads through validate.model.checkpoint, whole or by expert)."""

from __future__ import annotations

import pytest
import torch

from dicesim.models import get_model
from validate.model.checkpoint import load_into_bank, load_into_model, read_checkpoint, save_checkpoint
from validate.digits.data import CHECKPOINT_FILE, DATA_DIR, DIGITS_SIDE_PX, load_digits_split
from validate.model.experts import ExpertBank
from validate.model.model import DiTMoE
from validate.model.sampler import SamplerConfig, sample_reference
from validate.digits.train import TrainConfig, eval_loss, new_model, train

QUICK = TrainConfig(steps=25, batch=32, lr=3e-3, warmup_steps=5, ema_decay=0.0, threads=1, log_every=25)


@pytest.fixture(scope="module")
def data():
    return load_digits_split()


def test_data_split_is_fixed_and_in_range(data):
    assert data.train_x.shape == (1438, 1, 8, 8) and data.test_x.shape == (359, 1, 8, 8)
    assert float(data.train_x.min()) == -1.0 and float(data.train_x.max()) == 1.0
    again = load_digits_split()
    assert torch.equal(again.test_y, data.test_y)
    assert set(data.test_y.tolist()) == set(range(10))


def test_a_few_steps_lower_the_loss_and_repeat_exactly(data):
    x, y = data.test_x[:128], data.test_y[:128]
    before = eval_loss(new_model(QUICK.seed), x, y)
    model_a, log = train(QUICK, data)
    model_b, _ = train(QUICK, data)
    after = eval_loss(model_a, x, y)
    # adaLN-Zero: the untrained model predicts v = 0, so its loss is E|noise - x0|^2 (> 1.5 here)
    assert before > 1.5 and after < 0.8 * before, (before, after)
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(a, b), name
    assert log["curve"][-1]["step"] == QUICK.steps and log["seconds"] > 0


def test_checkpoint_round_trip_through_the_public_loader(tmp_path, data):
    model, _ = train(TrainConfig(steps=2, batch=8, warmup_steps=1, threads=1, log_every=2), data)
    path = tmp_path / "digits.pt"
    save_checkpoint(model, path)
    fresh = DiTMoE(get_model("digits"), latent_side=DIGITS_SIDE_PX, seed=7)
    load_into_model(fresh, read_checkpoint(path))
    x, t, y = data.test_x[:4], torch.full((4,), 0.5), data.test_y[:4]
    torch.testing.assert_close(fresh(x, t, y), model(x, t, y), rtol=0, atol=0)


@pytest.mark.skipif(not (DATA_DIR / CHECKPOINT_FILE).is_file(), reason="checkpoint not trained yet")
def test_committed_checkpoint_is_small_and_loads_whole_and_by_expert():
    path = DATA_DIR / CHECKPOINT_FILE
    assert path.stat().st_size < 5 * 2**20
    state = read_checkpoint(path)
    preset = get_model("digits")
    model = DiTMoE(preset, latent_side=DIGITS_SIDE_PX)
    load_into_model(model, state)
    bank = ExpertBank(preset, (1, 5), layer=3)
    load_into_bank(bank, state)
    torch.testing.assert_close(bank[5].up_proj.weight, model.blocks[3].experts[5].up_proj.weight, rtol=0, atol=0)
    # a trained model turns noise into images in the data range, not zeros or blow-ups
    out = sample_reference(model.eval(), torch.arange(10), config=SamplerConfig(num_steps=8, guidance_scale=1.5),
                           seed=0)
    assert 0.3 < float(out.std()) < 1.5 and float(out.abs().max()) < 4
