"""Common random numbers: within one run key every method starts from the same decoder weights and,
where it has one, the same base encoder b(x), c(x), whatever else it builds (methods.base)."""

import pytest
import torch

from benchmark.keys import RunKey
from methods import NetConfig, get_method, registered_methods
from methods.likelihoods import GaussianLikelihood

NET = NetConfig((1, 28, 28), num_conv=3, hidden=32)
D = 4


def build(method, seed, params=None):
    torch.manual_seed(seed)  # what run.train_and_evaluate does with the key's init seed
    return get_method(method).build(params or {}, net=NET, latent_dim=D,
                                    likelihood=GaussianLikelihood(0.1), num_train=100)


def tensors(module):
    return dict(module.state_dict())


def assert_same(a, b):
    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys()
    for name in ta:
        assert torch.equal(ta[name], tb[name]), name


@pytest.mark.parametrize("method", sorted(registered_methods()))
def test_every_method_starts_from_the_vaes_decoder(method):
    key = RunKey("p", "t", "mnist", D, method, "default", split=1, restart=0)
    assert_same(build(method, key.init_seed).decoder, build("vae", key.init_seed).decoder)


def test_base_encoders_are_shared():
    vae = build("vae", 7)
    assert_same(build("gpvae", 7).base, vae.encoder)
    for method in ("sa", "iaf", "hf"):
        assert_same(build(method, 7).encoder, vae.encoder)
    assert_same(build("me", 7, {"m": 3}).components[0], vae.encoder)
    assert_same(build("vlae", 7).encoder.trunk, vae.encoder.trunk)


def test_other_seeds_other_weights_and_the_rest_stays_seeded():
    a, b = build("vae", 7), build("vae", 8)
    assert not torch.equal(a.decoder.fc[0].weight, b.decoder.fc[0].weight)
    assert not torch.equal(a.encoder.head.weight, b.encoder.head.weight)
    # method-specific parts still come from the key's seed: the same key builds the same model
    assert_same(build("gpvae", 7), build("gpvae", 7))
    # and they differ from the shared parts' draws (not a copy of the base encoder)
    gp = build("gpvae", 7)
    assert not torch.equal(gp.psi_m.net[0].weight, gp.base.trunk.net[0].weight)
