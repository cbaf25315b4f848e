"""`--set KEY=VALUE` on top of a profile: YAML scalars, checked like a profile file (every problem in
one error line), and new runs with the changed values in their config hash."""

import pytest

from benchmark.cli import main
from benchmark.plan import make_plan
from benchmark.profiles import apply_overrides, load_profile
from benchmark.specs import load_table_spec
from benchmark.yamlio import ConfigError


def test_values_are_yaml_scalars_and_the_name_says_what_changed():
    quick = load_profile("quick")
    p = apply_overrides(quick, ["epochs=10", "batch_size = 64", "lr=5e-4", "patience=null",
                                "test_size="])
    assert (p.epochs, p.batch_size, p.lr, p.patience, p.test_size) == (10, 64, 5e-4, None, None)
    assert p.name == "quick+batch_size=64,epochs=10,lr=0.0005,test_size=null"
    assert (p.iwae_k, p.train_size, p.splits) == (quick.iwae_k, quick.train_size, quick.splits)
    # the sweep's size and the text do not change any run: the profile's own runs
    same = apply_overrides(quick, ["splits=2", "description=mine", f"epochs={quick.epochs}"])
    assert same.name == "quick" and same.splits == 2 and same.description == "mine"
    assert apply_overrides(quick, []) == quick


def test_every_problem_in_one_error_line(capsys):
    rc = main(["--table", "1", "--profile", "smoke", "--set", "epoch=10", "--set", "bs=64",
               "--set", "lr=fast", "--set", "iwae_k", "--set", "epochs=2", "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    line = err[0]
    assert line.startswith("error: --set on profile 'smoke': ")
    for needle in ("'iwae_k' is not KEY=VALUE", "unknown keys 'bs', 'epoch'",
                   "key 'lr' must be float, got 'fast'", "valid keys: description, epochs"):
        assert needle in line, line
    with pytest.raises(ConfigError, match="epochs must be >= 1, got 0"):
        apply_overrides(load_profile("smoke"), ["epochs=0"])


def test_overrides_are_new_runs_with_their_values_in_the_config_hash(tmp_path, capsys):
    spec, smoke = load_table_spec("1"), load_profile("smoke")
    mine = apply_overrides(smoke, ["epochs=3"])

    def tasks(profile):
        return make_plan(spec, profile, data_root=str(tmp_path), results_dir=str(tmp_path),
                         methods={"vae"}, dataset_filter={"mnist"}, dims={10}).tasks

    base, new = tasks(smoke)[0], tasks(mine)[0]
    assert new.key.profile == "smoke+epochs=3" and new.config()["profile"]["epochs"] == 3
    assert new.config_hash() != base.config_hash()
    assert new.key.split == base.key.split and new.record_path != base.record_path
    rc = main(["--table", "1", "--profile", "smoke", "--set", "epochs=3", "--methods", "vae",
               "--datasets", "mnist", "--dims", "10", "--results-dir", str(tmp_path), "--dry-run"])
    out = capsys.readouterr()
    assert rc == 0 and "profile smoke+epochs=3:" in out.err and "would run" in out.out
