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

# the repository's slurm/, which an installed wheel holds as benchmark/slurm (pyproject.toml)
SLURM_DIR = next((d for d in (Path(__file__).resolve().parent / "slurm",
                              Path(__file__).resolve().parents[1] / "slurm") if d.is_dir()),
                 Path(__file__).resolve().parents[1] / "slurm")

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
    "runs_per_task": ((int,), "an integer >= 1"),
    "setup": ((list,), "a list of shell lines (strings)"),
}
# keys about the whole sweep: top level only, not in `overrides`
_SWEEP_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "sweep_parallelism": ((int,), "an integer >= 1"),
    "max_array_size": ((int,), "an integer >= 1"),
}
_MINIMUM = {"gpus_per_node": 0, "cpus_per_task": 1, "timeout_min": 1, "array_parallelism": 1,
            "signal_delay_s": 0, "max_requeues": 0, "runs_per_task": 1, "sweep_parallelism": 1,
            "max_array_size": 1}

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
    runs_per_task: int | None = None
    setup: tuple[str, ...] = ()
    sweep_parallelism: int | None = None
    max_array_size: int | None = None
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
    types, what = {**_RESOURCE_KEYS, **_SWEEP_KEYS}[key]
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
    valid = [*_RESOURCE_KEYS, *_SWEEP_KEYS, "overrides"]
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
                      name: str, array_size: int, **extra) -> list[str]:
    """The #SBATCH lines submitit writes for a job array of `array_size` runs of `method`, made
    without Slurm (for --dry-run) by the function submitit itself uses (a private one: a submitit
    upgrade that changes it shows up in tests/test_slurm_harness.py, which compares these lines
    with a real submission)."""
    from submitit.slurm import slurm as submitit_slurm

    # update_parameters' renaming: generic names through the equivalence table, slurm_ prefix dropped
    renames = submitit_slurm.SlurmExecutor._equivalence_dict()
    params: dict[str, Any] = {}
    for key, value in {**executor_parameters(profile, method), **extra, "name": name}.items():
        params[key.removeprefix("slurm_") if key.startswith("slurm_") else renames.get(key, key)] = value
    if "mem" in params:
        params["mem"] = submitit_slurm._convert_mem(params["mem"])
    folder = Path(folder).expanduser().absolute()  # as submitit's executor stores it
    text = submitit_slurm._make_sbatch_string(command="", folder=folder, map_count=array_size, **params)
    return [line for line in text.splitlines() if line.startswith("#SBATCH")]


# ------------------------------------------------------------------ packing, caps, array sizes

# Runs packed into one job (one GPU) when a GPU profile leaves runs_per_task unset. An ESTIMATE, not
# a measurement (no GPU was available where this was sized; slurm/README.md says how): one MNIST run
# needs under 0.9 GB of host memory and well under 1 GB on the GPU, and the paper's Table 3 puts a
# batch of 128 at 3.6 ms (VAE) to 9.9 ms (GPVAE) on an RTX 2080 Ti: launch-bound, the GPU mostly idle.
DEFAULT_RUNS_PER_GPU = 4
RUN_HOST_MEMORY_GB = 2.0  # host memory a packed run is given (0.9 GB measured on CPU, with margin)
SLURM_DEFAULT_MAX_ARRAY_SIZE = 1001  # Slurm's own default MaxArraySize


def runs_per_task(profile: ClusterProfile, method: str | None = None) -> tuple[int, str]:
    """(runs packed into one job of `method`'s array, how that number was decided)."""
    res = profile.resources(method)
    if "runs_per_task" in res:
        return res["runs_per_task"], "runs_per_task in the profile"
    gpus = res.get("gpus_per_node", 0)
    if not gpus:
        return 1, "default: no GPU asked for, one run per job"
    n, limits = DEFAULT_RUNS_PER_GPU * gpus, [f"{DEFAULT_RUNS_PER_GPU} per GPU (estimate)"]
    if res.get("cpus_per_task") and res["cpus_per_task"] < n:
        n, limits = res["cpus_per_task"], limits + [f"cpus_per_task {res['cpus_per_task']}"]
    if res.get("mem_gb") and int(res["mem_gb"] // RUN_HOST_MEMORY_GB) < n:
        n = max(1, int(res["mem_gb"] // RUN_HOST_MEMORY_GB))
        limits.append(f"mem_gb {res['mem_gb']} at {RUN_HOST_MEMORY_GB:g} GB a run")
    return n, "default: " + ", ".join(limits)


def expected_device(request: str, profile: ClusterProfile, method: str | None = None) -> str:
    """What device the runs of `method`'s array will use: decided on the node (benchmark.run.
    resolve_device), so this says what the profile's resources make of the request."""
    gpus = profile.resources(method).get("gpus_per_node", 0)
    if request == "auto":
        return (f"auto: cuda on the node ({gpus} GPU{'s' if gpus > 1 else ''} per job)" if gpus else
                "auto: cpu (the profile asks for no GPU: gpus_per_node)")
    if request.startswith("cuda") and not gpus:
        return (f"{request}, but the profile asks for no GPU (gpus_per_node): the runs fail unless "
                "the partition's nodes give one anyway")
    return request


def max_array_size(profile: ClusterProfile) -> tuple[int, str]:
    """(the most tasks one job array may have, where that came from): the profile's
    max_array_size, else the controller's MaxArraySize (`scontrol show config`), else Slurm's
    default. Array indices run 0..MaxArraySize-1, so an array holds at most MaxArraySize tasks."""
    if profile.max_array_size:
        return profile.max_array_size, "max_array_size in the profile"
    import shutil
    import subprocess

    if shutil.which("scontrol"):
        try:
            out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                                 timeout=30).stdout
            m = re.search(r"^MaxArraySize\s*=\s*(\d+)", out, re.M)
            if m:
                return int(m.group(1)), "MaxArraySize from scontrol show config"
        except (OSError, subprocess.SubprocessError):
            pass
    return SLURM_DEFAULT_MAX_ARRAY_SIZE, "Slurm's default MaxArraySize (scontrol not available)"


def split_cap(cap: int, weights: list[float], bounds: list[int]) -> list[tuple[int, int | None]]:
    """The sweep-wide cap of `cap` jobs at once over arrays of the given weights (jobs x time
    limit), none given more than its bound (its number of jobs, or its own array_parallelism):
    [(array parallelism, index of the array it must wait for, or None)]. Shares go one at a time
    to the array furthest behind its weight (D'Hondt), so they add up to at most `cap` and the
    arrays finish about together. With more arrays than `cap`, each array gets 1 and waits for the
    one `cap` places before it (afterany), so at most `cap` run at once."""
    n = len(weights)
    if n > cap:
        return [(1, i - cap if i >= cap else None) for i in range(n)]
    shares = [1] * n
    for _ in range(cap - n):
        open_ = [i for i in range(n) if shares[i] < bounds[i]]
        if not open_:
            break
        best = max(open_, key=lambda i: weights[i] / shares[i])
        shares[best] += 1
    return [(s, None) for s in shares]
