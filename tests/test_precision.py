"""The profile's `precision` (fp32 | bf16): fp32 leaves every config hash as it was before the key
existed; bf16 trains under autocast where the hardware has it (forced here: the test machine may
not have it) and evaluates in fp32; anywhere else, and for a bad value, one error line."""

import hashlib
import json

import pytest
import torch
import yaml

from benchmark import run
from benchmark import train as train_module
from benchmark.cli import main
from benchmark.evaluate import evaluate, iwae_log_likelihood
from benchmark.keys import RunKey
from benchmark.plan import make_plan
from benchmark.profiles import SWEEP_ONLY, Profile, apply_overrides, load_profile
from benchmark.specs import DatasetSettings, load_table_spec
from benchmark.train import PrecisionUnavailable, autocast_dtype, bf16_flags_in_cpuinfo, train
from benchmark.yamlio import ConfigError
from methods import NetConfig, get_method
from methods.likelihoods import GaussianLikelihood

NET = NetConfig((1, 28, 28), num_conv=3, hidden=16)


def tasks(profile, tmp_path, **only):
    return make_plan(load_table_spec("1"), profile, data_root=str(tmp_path),
                     results_dir=str(tmp_path), **only).tasks


@pytest.mark.parametrize("name", ["paper", "claims"])
def test_fp32_by_default_leaves_every_config_hash_as_before_the_key(name, tmp_path):
    """Every run of Table 1 (the paper profile: 3,960 runs; the claims profile): the profile part
    of its config is the profile less what sizes the sweep, exactly as before `precision`
    existed, and the hash is that config's (so records made before the key stay current)."""
    profile = load_profile(name)
    assert profile.precision == "fp32"
    before = {k: v for k, v in profile.as_dict().items()
              if k not in SWEEP_ONLY and k != "precision"
              and (k != "lr_schedule" or v != "constant")}
    plan = tasks(profile, tmp_path)
    assert len(plan) == 3960 or name != "paper"
    for task in plan:
        config = task.config()
        assert config["profile"] == {**before, "epochs": task.profile.epochs}
        assert "precision" not in config["profile"]
        text = json.dumps(config, sort_keys=True)
        assert task.config_hash() == hashlib.sha256(text.encode()).hexdigest()[:16]
    # `--set precision=fp32` is the profile itself: same name, same runs
    same = apply_overrides(profile, ["precision=fp32"])
    assert same.name == profile.name
    assert [t.config_hash() for t in tasks(same, tmp_path, methods={"vae", "gpvae"})] == \
        [t.config_hash() for t in tasks(profile, tmp_path, methods={"vae", "gpvae"})]


def test_bf16_runs_are_new_runs_with_precision_in_their_config(tmp_path):
    claims = load_profile("claims")
    bf16 = apply_overrides(claims, ["precision=bf16"])
    assert bf16.name == "claims+precision=bf16" and bf16.precision == "bf16"
    only = dict(methods={"vae"}, dataset_filter={"mnist"}, dims={10})
    base, new = tasks(claims, tmp_path, **only)[0], tasks(bf16, tmp_path, **only)[0]
    assert new.config()["profile"]["precision"] == "bf16"
    assert new.config_hash() != base.config_hash() and new.record_path != base.record_path
    assert new.key.split_seed == base.key.split_seed and new.key.init_seed == base.key.init_seed


def test_a_bad_precision_is_one_error_line(capsys, tmp_path):
    rc = main(["--table", "1", "--profile", "smoke", "--set", "precision=fp16", "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "precision must be fp32 or bf16, got 'fp16'" in err[0], err[0]
    data = {k: v for k, v in load_profile("smoke").as_dict().items() if k != "name"}
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({**data, "precision": 16}))
    with pytest.raises(ConfigError, match="key 'precision' must be str, got 16"):
        load_profile(str(path))
    with pytest.raises(ValueError, match="precision must be fp32 or bf16"):
        autocast_dtype("half", "cpu")


def test_cpu_flags_say_where_bf16_is_fast():
    assert bf16_flags_in_cpuinfo("flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n") \
        == {"avx512_bf16", "amx_bf16"}
    assert bf16_flags_in_cpuinfo("Features\t: fp asimd bf16 i8mm\n") == {"bf16"}
    amd_zen3 = "flags\t\t: fpu sse2 avx avx2 fma f16c vaes vpclmulqdq\n"
    assert bf16_flags_in_cpuinfo(amd_zen3) == frozenset()


def tiny(method="vae", **params):
    torch.manual_seed(0)
    return get_method(method).build(params, net=NET, latent_dim=2,
                                    likelihood=GaussianLikelihood(0.1), num_train=64)


def fit(model, precision, epochs=1):
    images = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    return train(model, images[:48], images[48:], to_input=lambda t: t, epochs=epochs,
                 batch_size=16, lr=1e-3, eval_batch_size=16, patience=None, seed=1,
                 precision=precision), images


def watch(model, seen):
    """Record, per call of loss (training) and elbo (validation), whether autocast was on and the
    dtype of the decoder's output and of what the call returned."""
    model.decoder.register_forward_hook(lambda m, a, out: seen["decoder"].append(out.dtype))
    for name in ("loss", "elbo"):
        original = getattr(model, name)

        def wrapped(x, _original=original, _name=name):
            autocast = torch.is_autocast_enabled("cpu")
            out = _original(x)
            seen[_name].append((autocast, out.dtype))
            return out

        setattr(model, name, wrapped)


def test_bf16_trains_under_autocast_and_evaluates_in_fp32(monkeypatch):
    monkeypatch.setattr(train_module, "cpu_has_fast_bf16", lambda: True)
    model, seen = tiny(), {"loss": [], "elbo": [], "decoder": []}
    before = [p.detach().clone() for p in model.parameters()]
    watch(model, seen)
    summary, images = fit(model, "bf16")
    # 3 steps under bf16 autocast: the decoder computes in bf16; parameters stay fp32 and move
    assert [a for a, _ in seen["loss"]] == [True] * 3
    assert seen["decoder"][:3] == [torch.bfloat16] * 3
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    # the validation ELBO (after the epoch): no autocast, fp32 all through
    assert seen["elbo"][-1] == (False, torch.float32) and seen["decoder"][-1] == torch.float32
    assert torch.isfinite(torch.tensor(summary["best_val_elbo"]))
    assert not torch.is_autocast_enabled("cpu")  # nothing left switched on
    # the evaluation after training (IWAE K, ELBO) is fp32
    with torch.no_grad():
        assert iwae_log_likelihood(model, images[:8], k=5).dtype == torch.float32
    result = evaluate(model, images[48:], k=5, batch_size=16, to_input=lambda t: t)
    assert all(isinstance(v, float) and v == v for v in result.values())


@pytest.mark.parametrize("method, params", [
    ("vae", {}), ("sa", {"k": 1}), ("iaf", {"k": 1}), ("hf", {"k": 1}), ("me", {"m": 2}),
    ("rme", {"m": 2}), ("vlae", {"t": 2}), ("gpvae", {})])
def test_every_family_takes_a_bf16_step(monkeypatch, method, params):
    """Smoke size (tiny networks, two steps of 8): a finite loss under bf16 autocast and an fp32
    validation ELBO, for each family's first variant."""
    monkeypatch.setattr(train_module, "cpu_has_fast_bf16", lambda: True)
    model = tiny(method, **params)
    images = torch.rand(24, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    summary = train(model, images[:16], images[16:], to_input=lambda t: t, epochs=1, batch_size=8,
                    lr=1e-3, eval_batch_size=8, patience=None, seed=1, precision="bf16")
    assert torch.isfinite(torch.tensor([summary["final_train_elbo"], summary["best_val_elbo"]])).all()
    with torch.no_grad():
        assert model.elbo(images[16:]).dtype == torch.float32


def test_fp32_never_autocasts():
    model, seen = tiny(), {"loss": [], "elbo": [], "decoder": []}
    watch(model, seen)
    fit(model, "fp32")
    assert seen["loss"] == [(False, torch.float32)] * 3


def test_declared_fp32_modules_stay_out_of_autocast(monkeypatch):
    """IAF declaring its flow: the MADE layers run in fp32 inside bf16 training, the decoder in
    bf16, and no hook is left on the model afterwards."""
    monkeypatch.setattr(train_module, "cpu_has_fast_bf16", lambda: True)
    model = tiny("iaf", k=2)
    model.fp32_modules = ("flow",)
    made, decoder = [], []
    model.flow.steps[1].out.register_forward_hook(lambda m, a, out: made.append(out.dtype))
    model.decoder.register_forward_hook(lambda m, a, out: decoder.append(out.dtype))
    fit(model, "bf16")
    assert made[:3] == [torch.float32] * 3 and decoder[:3] == [torch.bfloat16] * 3
    assert all(len(m._forward_pre_hooks) == 0 for m in model.flow.modules())
    assert not torch.is_autocast_enabled("cpu")


def test_bf16_without_fast_hardware_is_refused_in_one_line(monkeypatch, mnist_root, tmp_path):
    """Refused, not trained in fp32: a record under a bf16 config hash must hold bf16 numbers."""
    monkeypatch.setattr(train_module, "cpu_has_fast_bf16", lambda: False)
    model = tiny()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(PrecisionUnavailable) as refused:
        fit(model, "bf16")
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    # through the run path: the line a failed run's record and log carry
    profile = Profile(name="tiny", description="", epochs=1, batch_size=16, lr=1e-3, patience=None,
                      splits=1, restarts=1, iwae_k=2, eval_batch_size=32, train_size=32,
                      val_size=16, test_size=16, precision="bf16")
    key = RunKey("tiny", "t", "mnist", 2, "vae", "default", 0, 0)
    task = run.RunTask(key, (), profile, DatasetSettings(hidden=16, num_conv=1, sigma_x=0.1),
                       str(mnist_root), str(tmp_path))
    with pytest.raises(PrecisionUnavailable) as refused:
        run.train_and_evaluate(task)
    line = run.error_summary(refused.value)
    assert "\n" not in str(refused.value) and line == f"PrecisionUnavailable: {refused.value}"
    assert line.startswith("PrecisionUnavailable: precision bf16 refused: this CPU")
    assert "precision fp32" in line


def test_bf16_where_the_hardware_has_it(tmp_path):
    """On a CUDA device with bf16 (or a CPU with avx512_bf16 / amx_bf16): a real bf16 step."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        autocast_dtype("bf16", device)
    except PrecisionUnavailable as err:
        pytest.skip(str(err))
    model = tiny().to(device)
    images = torch.rand(32, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    summary = train(model, images[:16], images[16:], to_input=lambda t: t.to(device), epochs=1,
                    batch_size=8, lr=1e-3, eval_batch_size=16, patience=None, seed=1,
                    precision="bf16")
    assert torch.isfinite(torch.tensor(summary["best_val_elbo"]))
    with torch.no_grad():
        assert model.elbo(images[:4].to(device)).dtype == torch.float32
