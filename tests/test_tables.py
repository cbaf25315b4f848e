"""Table specs 2, 4 and cifar10, dataset settings with network variants, and the FC networks."""

import dataclasses

import pytest
import torch
from torch import nn
from torch.distributions import Bernoulli, Independent

from benchmark import datasets
from benchmark.specs import load_dataset_settings, load_table_spec, table_names
from benchmark.yamlio import ConfigError
from methods import NetConfig, registered_methods
from methods.likelihoods import BernoulliLikelihood
from methods.networks import make_decoder, make_trunk

PAPER_TABLE4 = ["VAE", "SA(1)", "SA(4)", "IAF(1)", "IAF(4)", "HF(1)", "HF(4)", "ME(2)", "ME(4)",
                "VLAE(2)", "VLAE(4)", "RME(2)", "RME(4)", "GPVAE"]


def test_every_table_loads_with_plugins_settings_and_loaders():
    assert {"1", "2", "4", "cifar10"} <= set(table_names())
    for name in table_names():
        spec = load_table_spec(name)
        assert spec.rows and spec.dims and spec.datasets, name
        assert all(row.has_plugin for row in spec.rows), name
        for ds in spec.datasets:
            settings = load_dataset_settings(ds)
            assert (settings.data or ds) in datasets.LOADERS, (name, ds)


def test_table2_and_cifar10_have_table1s_rows():
    table1 = load_table_spec("1")
    assert len(table1.rows) == 22
    t2, c10 = load_table_spec("2"), load_table_spec("cifar10")
    assert t2.rows == table1.rows and c10.rows == table1.rows
    assert t2.datasets == ("svhn", "celeba") and c10.datasets == ("cifar10",)
    assert t2.dims == c10.dims == (10, 20, 50)
    svhn, celeba = load_dataset_settings("svhn"), load_dataset_settings("celeba")
    assert (svhn.num_conv, svhn.hidden) == (3, 512) and (celeba.num_conv, celeba.hidden) == (4, 512)


def test_table4_rows_and_network_variants():
    spec = load_table_spec("4")
    assert [row.label for row in spec.rows] == PAPER_TABLE4
    assert spec.datasets == ("binarized_mnist", "binarized_mnist_fc") and len(spec.dims) == 1
    cnn, fc = (load_dataset_settings(ds) for ds in spec.datasets)
    assert cnn.network == "cnn" and cnn.data is None and cnn.num_conv == 3
    assert fc.network == "fc" and fc.data == "binarized_mnist"


def test_settings_hash_unchanged_for_entries_without_the_new_fields():
    """Records made before `data` / `network` / `learn_sigma_x` existed must keep their config
    hash; a learned sigma_x (Tables 1-2's default) is a configuration of its own."""
    mnist = load_dataset_settings("mnist")
    assert mnist.as_config() == {"num_conv": 3, "hidden": 256, "sigma_x": 0.1, "learn_sigma_x": True}
    fixed = dataclasses.replace(mnist, learn_sigma_x=False)
    assert fixed.as_config() == {"num_conv": 3, "hidden": 256, "sigma_x": 0.1}
    assert load_dataset_settings("binarized_mnist_fc").as_config()["network"] == "fc"


@pytest.mark.parametrize("entry, match", [
    ({"hidden": 8, "network": "rnn"}, "network must be"),
    ({"hidden": 8}, "num_conv"),
    ({"hidden": 8, "num_conv": 2, "network": "fc"}, "num_conv"),
    ({"hidden": 8, "num_conv": 2, "width": 3}, "unknown key 'width'"),
])
def test_bad_dataset_settings_are_config_errors(monkeypatch, tmp_path, entry, match):
    import benchmark.specs as specs

    (tmp_path / "datasets.yaml").write_text(f"bad: {entry!r}\n".replace("'", '"'))
    monkeypatch.setattr(specs, "SPEC_DIR", tmp_path)
    with pytest.raises(ConfigError, match=match):
        load_dataset_settings("bad")


# ------------------------------------------------------------------------- FC networks

FC = NetConfig((1, 28, 28), hidden=32, network="fc")
CNN = NetConfig((1, 28, 28), num_conv=3, hidden=32)


def test_fc_networks_are_the_documented_mlps():
    trunk, decoder = make_trunk(FC), make_decoder(FC, latent_dim=5)
    linears = [m for m in trunk.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 32), (32, 32)]
    linears = [m for m in decoder.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(5, 32), (32, 32), (32, 784)]
    z = torch.randn(3, 4, 5)  # leading sample dims are kept
    assert decoder(z).shape == (3, 4, 1, 28, 28)
    assert trunk(torch.rand(4, 1, 28, 28)).shape == (4, 32)
    with pytest.raises(ValueError, match="unknown network"):
        NetConfig((1, 28, 28), network="rnn")


def _variant_params(info):
    return info.variants[-1]  # the largest variant exercises the most structure


@pytest.mark.parametrize("name", sorted(registered_methods()))
def test_every_plugin_builds_fc_networks_through_the_factory(name):
    """No plugin builds a network of its own: with an FC config, no conv layer is left anywhere,
    and one Bernoulli training step and the IWAE proposal work."""
    info = registered_methods()[name]
    torch.manual_seed(0)
    model = info.build(_variant_params(info), net=FC, latent_dim=3,
                       likelihood=BernoulliLikelihood(), num_train=64)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    assert not convs, f"{name} builds conv layers under an FC config"
    x = (torch.rand(4, 1, 28, 28) < 0.3).float()
    model.on_epoch_start(0, 2)
    loss = model.loss(x)
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    cnn = info.build(_variant_params(info), net=CNN, latent_dim=3,
                     likelihood=BernoulliLikelihood(), num_train=64)
    assert any(isinstance(m, nn.Conv2d) for m in cnn.modules())


def test_bernoulli_log_prob_broadcasts_either_way():
    """Against torch.distributions.Bernoulli: samples (K, B, ...) vs a batch, and one mean image
    (C, H, W) vs a batch (the mean-image floor)."""
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(4, 1, 28, 28, generator=g) < 0.3).float()
    lik = BernoulliLikelihood()
    for out in (torch.randn(5, 4, 1, 28, 28, generator=g), torch.randn(1, 28, 28, generator=g)):
        expected = Independent(Bernoulli(logits=out), 3).log_prob(x)
        got = lik.log_prob(x, out)
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected)

