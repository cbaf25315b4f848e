"""A method's diagnostics reach its record: averaged over the test images, weighted by batch size."""

import torch

from benchmark.evaluate import mean_diagnostics
from methods import NetConfig, get_method
from methods.likelihoods import GaussianLikelihood

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
