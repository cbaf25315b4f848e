"""A method's diagnostics reach its record: averaged over the test images, weighted by batch size;
what a method says about its training (ME: the mixing weights of its first steps) too."""

import json

import pytest
import torch

from benchmark.evaluate import mean_diagnostics
from methods import NetConfig, get_method
from methods.likelihoods import GaussianLikelihood
from methods.me import WeightTrace

NET = NetConfig((1, 8, 8), num_conv=1, hidden=16)


def build(method, params=None):
    torch.manual_seed(0)
    return get_method(method).build(params or {}, net=NET, latent_dim=2,
                                    likelihood=GaussianLikelihood(0.5), num_train=10)


def test_mixture_weights_are_averaged_over_all_test_images():
    model = build("me", {"m": 3})
    images = torch.rand(10, *NET.image_shape)
    got = mean_diagnostics(model, images, batch_size=4, to_input=lambda x: x)  # batches 4, 4, 2
    with torch.no_grad():
        expected = model.posterior(images).weights.mean(0)
    assert sorted(got) == ["weight_0", "weight_1", "weight_2"]
    torch.testing.assert_close(torch.tensor([got[f"weight_{j}"] for j in range(3)]),
                               expected, rtol=1e-5, atol=1e-6)
    assert abs(sum(got.values()) - 1) < 1e-5


def test_a_method_without_diagnostics_reports_none():
    assert mean_diagnostics(build("vae"), torch.rand(5, *NET.image_shape), 2, lambda x: x) == {}


# ---------------------------------------------------------------- what training leaves on record


def test_a_mixture_records_its_weights_over_its_first_training_steps():
    from benchmark.train import train

    model = build("me", {"m": 2})
    images = torch.rand(40, *NET.image_shape)
    train(model, images[:32], images[32:], to_input=lambda x: x, epochs=3, batch_size=8, lr=1e-2,
          eval_batch_size=8, patience=None, seed=0)
    rec = model.training_diagnostics()
    json.dumps(rec)  # goes into the run's JSON record as it is
    assert rec["steps_trained"] == 12  # 4 steps an epoch; validation (no_grad) is not a step
    assert rec["steps_traced"] == 12 and len(rec["step_weights"]) == 12
    assert rec["starts_at_epoch"] == 0 and len(rec["epoch_weights"]) == 3
    for row in rec["step_weights"] + rec["epoch_weights"]:
        assert len(row) == 2 and abs(sum(row) - 1) < 1e-4
    assert all(len(row) == 2 for row in rec["step_component_elbo"])
    assert rec["winner"] in (0, 1) and rec["base_component_lost"] == (rec["winner"] != 0)
    assert build("vae").training_diagnostics() == {}  # a method without one records nothing
    assert build("me", {"m": 2}).training_diagnostics() == {}  # nor before training


def test_the_weight_trace_keeps_the_first_steps_and_says_who_won_and_when():
    trace = WeightTrace(steps=5)
    trace.epoch_start(0)
    w0 = [0.5, 0.8, 0.995, 0.98, 0.999, 0.9999, 1.0]  # component 0's weight per step
    for w in w0:
        trace.step(torch.tensor([[w, 1 - w], [w, 1 - w]]), torch.tensor([[-10.0, -10.0],
                                                                         [-30.0, -30.0]]))
    rec = trace.summary()
    assert rec["steps_traced"] == 5 and rec["steps_trained"] == 7
    assert [row[0] for row in rec["step_weights"]] == w0[:5]
    assert rec["step_component_elbo"][0] == [-10.0, -30.0]
    assert rec["winner_at_last_traced_step"] == 0 and rec["winner"] == 0
    assert rec["won_from_step"] == 5  # step 3 reached 0.99 but step 4 fell back below it
    assert not rec["base_component_lost"]
    assert rec["epoch_weights"] == [[pytest.approx(sum(w0) / 7, abs=1e-5),
                                     pytest.approx(1 - sum(w0) / 7, abs=1e-5)]]


def test_a_resumed_run_says_where_its_trace_starts():
    trace = WeightTrace()
    trace.epoch_start(4)  # the trainer resumed from a checkpoint after epoch 4
    trace.step(torch.tensor([[0.1, 0.9]]), torch.zeros(2, 1))
    trace.epoch_start(5)
    rec = trace.summary()
    assert rec["starts_at_epoch"] == 4 and rec["winner"] == 1 and rec["base_component_lost"]


def test_a_run_record_holds_the_training_diagnostics(mnist_root, tmp_path):
    """An ME run through the harness's own run path on a few MNIST images: the record (what
    run.train_and_evaluate returns) carries the weight trace; a VAE's record has none."""
    from benchmark import run
    from benchmark.keys import RunKey
    from benchmark.profiles import Profile
    from benchmark.specs import DatasetSettings

    profile = Profile(name="tiny", description="", epochs=2, batch_size=16, lr=1e-3, patience=None,
                      splits=1, restarts=1, iwae_k=2, eval_batch_size=32, train_size=64,
                      val_size=32, test_size=32)
    settings = DatasetSettings(hidden=16, num_conv=1, sigma_x=0.1)
    records = {}
    for method, params in (("me", (("m", 2),)), ("vae", ())):
        key = RunKey("tiny", "t", "mnist", 2, method, "default", 0, 0)
        task = run.RunTask(key, params, profile, settings, str(mnist_root), str(tmp_path))
        records[method] = run.train_and_evaluate(task)
    trace = records["me"]["training_diagnostics"]
    assert trace["steps_trained"] == 8 and len(trace["step_weights"]) == 8
    assert "training_diagnostics" not in records["vae"]
