"""Cluster profiles (slurm/NAME.yaml) -> submitit Slurm executor arguments.

A profile names the site's partition/account/QoS, the resources of one run, and per-method-family
overrides (e.g. gpvae trains longer). Every key is optional; unset keys are left to submitit's and
the site's defaults. See slurm/README.md for each key and slurm/example.yaml for a template.

    profile = load_cluster_profile("mycluster")            # slurm/mycluster.yaml, or a path
    executor = submitit.AutoExecutor(folder, cluster="slurm", **executor_kwargs(profile))
    executor.update_parameters(name="gpvae", **executor_parameters(profile, "gpvae"))
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .yamlio import ConfigError, read_yaml_mapping

SLURM_DIR = Path(__file__).resolve().parents[1] / "slurm"

# profile key -> (accepted YAML types, description used in errors)
_RESOURCE_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "partition": ((str,), "a string"),
    "account": ((str,), "a string"),
    "qos": ((str,), "a string"),
    "gpus_per_node": ((int,), "an integer >= 0"),
    "cpus_per_task": ((int,), "an integer >= 1"),
    "mem_gb": ((int, float), "a number > 0"),
    "timeout_min": ((int,), "an integer >= 1"),
    "array_parallelism": ((int,), "an integer >= 1"),
    "signal_delay_s": ((int,), "an integer >= 0"),
    "max_requeues": ((int,), "an integer >= 0"),
    "setup": ((list,), "a list of shell lines (strings)"),
}
_MINIMUM = {"gpus_per_node": 0, "cpus_per_task": 1, "timeout_min": 1, "array_parallelism": 1,
            "signal_delay_s": 0, "max_requeues": 0}

# profile key -> submitit AutoExecutor.update_parameters keyword. Generic AutoExecutor parameters
# keep their name; Slurm-only ones take the "slurm_" prefix (SlurmExecutor's _make_sbatch_string
# arguments: partition, account, qos, array_parallelism, signal_delay_s, setup).
_UPDATE_PARAMETER = {
    "partition": "slurm_partition",
    "account": "slurm_account",
    "qos": "slurm_qos",
    "gpus_per_node": "gpus_per_node",
    "cpus_per_task": "cpus_per_task",
    "mem_gb": "mem_gb",
    "timeout_min": "timeout_min",
    "array_parallelism": "slurm_array_parallelism",
    "signal_delay_s": "slurm_signal_delay_s",
    "setup": "slurm_setup",
}
# max_requeues is a SlurmExecutor constructor argument (max_num_timeout), not an update_parameters
# one: AutoExecutor(..., slurm_max_num_timeout=N). See executor_kwargs().
_CONSTRUCTOR_PARAMETER = {"max_requeues": "slurm_max_num_timeout"}

_METHOD_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class ClusterProfile:
    name: str
    source: Path
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gpus_per_node: int | None = None
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    timeout_min: int | None = None
    array_parallelism: int | None = None
    signal_delay_s: int | None = None
    max_requeues: int | None = None
    setup: tuple[str, ...] = ()
    # method family -> {resource key: value}, each checked like the top-level keys
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False)

    def resources(self, method: str | None = None) -> dict[str, Any]:
        """The set resource keys, with `method`'s overrides applied (unset keys left out)."""
        merged = {k: getattr(self, k) for k in _RESOURCE_KEYS}
        merged["setup"] = list(self.setup) if self.setup else None
        if method is not None:
            merged.update({k: (list(v) if k == "setup" else v)
                           for k, v in self.overrides.get(method, {}).items()})
        return {k: v for k, v in merged.items() if v is not None}


def cluster_profile_names() -> list[str]:
    return sorted(p.stem for p in SLURM_DIR.glob("*.yaml"))


def _check_value(key: str, value: Any, where: str) -> Any:
    """The value, converted (setup -> tuple), or ConfigError naming the key and `where`."""
    types, what = _RESOURCE_KEYS[key]
    ok = isinstance(value, types) and not isinstance(value, bool)
    if ok and key == "setup":
        ok = all(isinstance(line, str) for line in value)
    elif ok and key in _MINIMUM:
        ok = value >= _MINIMUM[key]
    elif ok and key == "mem_gb":
        ok = value > 0
    elif ok and isinstance(value, str):
        ok = bool(value.strip())
    if not ok:
        raise ConfigError(f"{where}: key {key!r} must be {what}, got {value!r}")
    return tuple(value) if key == "setup" else value


def _resolve(path_or_name: str | Path) -> Path:
    path = Path(path_or_name)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        return path
    path = SLURM_DIR / f"{path_or_name}.yaml"
    if not path.exists():
        known = ", ".join(cluster_profile_names()) or "none"
        raise ConfigError(f"unknown cluster profile {str(path_or_name)!r} (no {path}); "
                          f"known profiles: {known}")
    return path


def load_cluster_profile(path_or_name: str | Path) -> ClusterProfile:
    """A cluster profile by name (slurm/NAME.yaml) or path; ConfigError (a ValueError) if invalid."""
    path = _resolve(path_or_name)
    data = read_yaml_mapping(path)
    valid = [*_RESOURCE_KEYS, "overrides"]
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in valid:
            raise ConfigError(f"{path}: unknown key {key!r}; valid keys: {', '.join(valid)}")
        if value is None:  # `qos:` with nothing after it means unset
            continue
        if key != "overrides":
            values[key] = _check_value(key, value, str(path))
    overrides = data.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise ConfigError(f"{path}: key 'overrides' must be a mapping of method family -> "
                          f"{{key: value}}, got {overrides!r}")
    checked: dict[str, dict[str, Any]] = {}
    for method, keys in overrides.items():
        where = f"{path}: overrides.{method}"
        if not isinstance(method, str) or not _METHOD_NAME.match(method):
            raise ConfigError(f"{path}: key 'overrides' has a bad method family name {method!r}")
        if not isinstance(keys, dict):
            raise ConfigError(f"{where} must be a mapping of key: value, got {keys!r}")
        for key in keys:
            if key not in _RESOURCE_KEYS:
                raise ConfigError(f"{where}: unknown key {key!r}; valid keys: {', '.join(_RESOURCE_KEYS)}")
        checked[method] = {key: _check_value(key, value, where)
                           for key, value in keys.items() if value is not None}
    return ClusterProfile(name=path.stem, source=path, overrides=checked, **values)


def executor_parameters(profile: ClusterProfile, method: str | None = None) -> dict[str, Any]:
    """Keyword arguments for submitit.AutoExecutor(..., cluster="slurm").update_parameters(...),
    with `method`'s overrides applied; keys the profile leaves unset are left out."""
    return {_UPDATE_PARAMETER[k]: v for k, v in profile.resources(method).items() if k in _UPDATE_PARAMETER}


def executor_kwargs(profile: ClusterProfile, method: str | None = None) -> dict[str, Any]:
    """Keyword arguments for the submitit.AutoExecutor constructor (only max_requeues lives there)."""
    return {_CONSTRUCTOR_PARAMETER[k]: v for k, v in profile.resources(method).items()
            if k in _CONSTRUCTOR_PARAMETER}


def make_executor(profile: ClusterProfile, folder: str | Path, method: str | None = None, **params):
    """A submitit AutoExecutor for Slurm set up from the profile; `params` (e.g. name=...) win."""
    import submitit

    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", **executor_kwargs(profile, method))
    executor.update_parameters(**{**executor_parameters(profile, method), **params})
    return executor



SUBMITIT_MAX_REQUEUES = 3  # SlurmExecutor's max_num_timeout default, used when a profile sets none


def max_requeues(profile: ClusterProfile, method: str | None = None) -> int:
    return profile.resources(method).get("max_requeues", SUBMITIT_MAX_REQUEUES)


def sbatch_directives(profile: ClusterProfile, folder: str | Path, method: str | None = None, *,
                      name: str, array_size: int) -> list[str]:
    """The #SBATCH lines submitit writes for a job array of `array_size` runs of `method`, made
    without Slurm (for --dry-run) by the function submitit itself uses (a private one: a submitit
    upgrade that changes it shows up in tests/test_slurm_harness.py, which compares these lines
    with a real submission)."""
    from submitit.slurm import slurm as submitit_slurm

    # update_parameters' renaming: generic names through the equivalence table, slurm_ prefix dropped
    renames = submitit_slurm.SlurmExecutor._equivalence_dict()
    params: dict[str, Any] = {}
    for key, value in {**executor_parameters(profile, method), "name": name}.items():
        params[key.removeprefix("slurm_") if key.startswith("slurm_") else renames.get(key, key)] = value
    if "mem" in params:
        params["mem"] = submitit_slurm._convert_mem(params["mem"])
    folder = Path(folder).expanduser().absolute()  # as submitit's executor stores it
    text = submitit_slurm._make_sbatch_string(command="", folder=folder, map_count=array_size, **params)
    return [line for line in text.splitlines() if line.startswith("#SBATCH")]
