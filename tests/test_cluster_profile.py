"""Cluster profile loader (benchmark/cluster.py): fast, no Slurm needed."""

import os
import stat
from pathlib import Path

import pytest
import submitit

from benchmark.cluster import (
    ClusterProfile,
    executor_kwargs,
    executor_parameters,
    load_cluster_profile,
    make_executor,
)

REPO = Path(__file__).resolve().parents[1]

FULL = """\
partition: gpu
account: lab
qos: high
gpus_per_node: 1
cpus_per_task: 8
mem_gb: 32
timeout_min: 120
array_parallelism: 16
signal_delay_s: 60
max_requeues: 3
setup:
  - module load cuda
  - source .venv/bin/activate
overrides:
  gpvae:
    timeout_min: 240
    mem_gb: 48.5
  sa:
    setup: []
"""


def write(tmp_path: Path, text: str, name: str = "site.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_valid_file(tmp_path):
    profile = load_cluster_profile(write(tmp_path, FULL))
    assert isinstance(profile, ClusterProfile)
    assert profile.name == "site"
    assert (profile.partition, profile.account, profile.qos) == ("gpu", "lab", "high")
    assert profile.setup == ("module load cuda", "source .venv/bin/activate")
    assert profile.overrides == {"gpvae": {"timeout_min": 240, "mem_gb": 48.5}, "sa": {"setup": ()}}
    with pytest.raises(AttributeError):
        profile.partition = "cpu"  # frozen
    assert executor_parameters(profile) == {
        "slurm_partition": "gpu",
        "slurm_account": "lab",
        "slurm_qos": "high",
        "gpus_per_node": 1,
        "cpus_per_task": 8,
        "mem_gb": 32,
        "timeout_min": 120,
        "slurm_array_parallelism": 16,
        "slurm_signal_delay_s": 60,
        "slurm_setup": ["module load cuda", "source .venv/bin/activate"],
    }
    assert executor_kwargs(profile) == {"slurm_max_num_timeout": 3}


def test_unset_keys_are_omitted(tmp_path):
    profile = load_cluster_profile(write(tmp_path, "partition: debug\nqos:\n"))
    assert executor_parameters(profile) == {"slurm_partition": "debug"}
    assert executor_parameters(load_cluster_profile(write(tmp_path, "{}\n", "empty.yaml"))) == {}
    assert executor_kwargs(profile) == {}


def test_override_merge(tmp_path):
    profile = load_cluster_profile(write(tmp_path, FULL))
    gpvae = executor_parameters(profile, "gpvae")
    assert gpvae["timeout_min"] == 240 and gpvae["mem_gb"] == 48.5
    assert gpvae["slurm_partition"] == "gpu" and gpvae["cpus_per_task"] == 8  # the rest inherited
    assert executor_parameters(profile, "sa")["slurm_setup"] == []  # replaced, not merged
    assert executor_parameters(profile, "vae") == executor_parameters(profile)  # no override
    assert executor_parameters(profile)["timeout_min"] == 120  # base untouched by the merges


def assert_one_line_error(tmp_path, text, expected):
    """Loading `text` fails with one line that names the file and contains `expected`."""
    path = write(tmp_path, text)
    with pytest.raises(ValueError) as err:
        load_cluster_profile(path)
    message = str(err.value)
    assert expected in message and str(path) in message and "\n" not in message


@pytest.mark.parametrize(
    "text, expected",
    [
        ("partition: gpu\ntimeout: 60\n", "unknown key 'timeout'"),
        ("overrides:\n  gpvae:\n    time_min: 5\n", "overrides.gpvae: unknown key 'time_min'"),
    ],
)
def test_bad_key(tmp_path, text, expected):
    assert_one_line_error(tmp_path, text, expected)


@pytest.mark.parametrize(
    "text, key",
    [
        ("timeout_min: '60'\n", "timeout_min"),
        ("timeout_min: 1.5\n", "timeout_min"),
        ("cpus_per_task: 0\n", "cpus_per_task"),
        ("gpus_per_node: true\n", "gpus_per_node"),
        ("mem_gb: -4\n", "mem_gb"),
        ("partition: 5\n", "partition"),
        ("setup: module load cuda\n", "setup"),
        ("setup: [1, 2]\n", "setup"),
        ("overrides:\n  gpvae:\n    mem_gb: lots\n", "mem_gb"),
        ("overrides: [gpvae]\n", "overrides"),
        ("overrides:\n  gpvae: 240\n", "overrides.gpvae"),
    ],
)
def test_bad_type(tmp_path, text, key):
    assert_one_line_error(tmp_path, text, key)


def test_by_name_and_unknown_name():
    assert load_cluster_profile("local").source == REPO / "slurm" / "local.yaml"
    with pytest.raises(ValueError, match="unknown cluster profile 'nosuchcluster'.*local"):
        load_cluster_profile("nosuchcluster")


@pytest.mark.parametrize("name", ["local", "example"])
def test_shipped_profiles_are_accepted_by_submitit(name, tmp_path, monkeypatch):
    """submitit itself validates the parameter names and renders the sbatch script."""
    fake_srun = tmp_path / "bin" / "srun"  # SlurmExecutor only checks that srun is on PATH
    fake_srun.parent.mkdir()
    fake_srun.write_text("#!/bin/sh\nexit 1\n")
    fake_srun.chmod(fake_srun.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{fake_srun.parent}{os.pathsep}{os.environ['PATH']}")
    profile = load_cluster_profile(name)
    for method in (None, *profile.overrides):
        executor = make_executor(profile, tmp_path / "submitit", method, name=f"t-{method}")
        assert isinstance(executor, submitit.AutoExecutor)
        slurm = executor._executor
        assert slurm.max_num_timeout == profile.max_requeues
        script = slurm._make_submission_file_text("python -m x", "0")
        resources = profile.resources(method)
        assert f"--time={resources['timeout_min']}" in script
        assert f"--signal=USR2@{resources['signal_delay_s']}" in script
        assert f"--partition={profile.partition}" in script
        for line in resources.get("setup", []):
            assert line in script
