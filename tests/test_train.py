"""Trainer: checkpoint resume (what a requeued Slurm task relies on) and the NaN guard."""

import pytest
import torch

from benchmark.train import NonFiniteLoss, lr_at_step, train
from methods import NetConfig, get_method
from methods.likelihoods import GaussianLikelihood

NET = NetConfig((1, 28, 28), num_conv=3, hidden=16)


def tiny_vae():
    torch.manual_seed(0)
    return get_method("vae").build({}, net=NET, latent_dim=2, likelihood=GaussianLikelihood(0.1),
                                   num_train=64)


def fit(model, epochs, checkpoint=None, tag="a"):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(64, 1, 28, 28, generator=g)
    return train(model, images[:48], images[48:], to_input=lambda t: t, epochs=epochs,
                 batch_size=16, lr=1e-3, eval_batch_size=16, patience=None, seed=1,
                 checkpoint=checkpoint, checkpoint_tag=tag)


def test_resume_continues_from_the_checkpoint_and_matches_an_uninterrupted_run(tmp_path):
    ckpt = tmp_path / "run.ckpt"
    first = fit(tiny_vae(), 2, ckpt)
    assert first["resumed_from_epoch"] is None and ckpt.exists()
    torch.manual_seed(123)  # the checkpoint restores the RNG; this must not matter
    resumed = fit(tiny_vae(), 3, ckpt)
    assert resumed["resumed_from_epoch"] == 2 and resumed["epochs_run"] == 3
    straight = fit(tiny_vae(), 3)
    assert [h["val_elbo"] for h in resumed["history"]] == pytest.approx(
        [h["val_elbo"] for h in straight["history"]], abs=1e-3)


def test_checkpoint_of_another_configuration_is_ignored(tmp_path):
    ckpt = tmp_path / "run.ckpt"
    fit(tiny_vae(), 2, ckpt, tag="old-config")
    again = fit(tiny_vae(), 2, ckpt, tag="new-config")
    assert again["resumed_from_epoch"] is None and len(again["history"]) == 2


def test_non_finite_loss_raises(monkeypatch):
    model = tiny_vae()
    monkeypatch.setattr(model, "loss", lambda x: torch.tensor(float("inf"), requires_grad=True))
    with pytest.raises(NonFiniteLoss, match="epoch 1"):
        fit(model, 1)


def test_cosine_schedule_decays_to_zero_and_resumes_bit_identically(tmp_path):
    """lr_at_step: lr at the first step, lr/2 half way, 0 after the last; a run resumed from its
    checkpoint under the cosine schedule matches an uninterrupted one (the lr is a function of the
    step count alone, so no scheduler state is saved)."""
    assert lr_at_step("cosine", 1e-3, 0, 100) == 1e-3
    assert lr_at_step("cosine", 1e-3, 50, 100) == pytest.approx(5e-4)
    assert lr_at_step("cosine", 1e-3, 100, 100) == pytest.approx(0.0, abs=1e-18)
    assert all(lr_at_step("cosine", 1e-3, t, 100) > lr_at_step("cosine", 1e-3, t + 1, 100)
               for t in range(100))
    assert lr_at_step("constant", 1e-3, 99, 100) == 1e-3

    def fit_cosine(model, checkpoint=None, schedule="cosine"):
        g = torch.Generator().manual_seed(0)
        images = torch.rand(64, 1, 28, 28, generator=g)
        return train(model, images[:48], images[48:], to_input=lambda t: t, epochs=3,
                     batch_size=16, lr=1e-3, eval_batch_size=16, patience=None, seed=1,
                     checkpoint=checkpoint, checkpoint_tag="c", lr_schedule=schedule)

    class Interrupted(Exception):
        pass

    def interrupt_at_third_epoch(epoch, epochs):
        if epoch == 2:
            raise Interrupted

    ckpt = tmp_path / "run.ckpt"
    cut = tiny_vae()
    cut.on_epoch_start = interrupt_at_third_epoch
    with pytest.raises(Interrupted):
        fit_cosine(cut, ckpt)  # the checkpoint holds epochs 1-2 of 3
    resumed = fit_cosine(tiny_vae(), ckpt)
    straight = fit_cosine(tiny_vae())
    assert resumed["resumed_from_epoch"] == 2
    assert [h["val_elbo"] for h in resumed["history"]] == \
        [h["val_elbo"] for h in straight["history"]]
    constant = fit_cosine(tiny_vae(), schedule="constant")
    assert constant["history"][-1]["val_elbo"] != straight["history"][-1]["val_elbo"]
