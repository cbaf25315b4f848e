"""Table specs are data: benchmark/specs/tableN.yaml lists rows, datasets, dims and the metric."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from methods.registry import (
    UnknownMethodError,
    UnknownParameterError,
    display_name,
    method_spec,
    method_specs,
    variant_name,
)

from .yamlio import ConfigError, build_dataclass, read_yaml_mapping

if TYPE_CHECKING:
    from methods.networks import NetConfig

SPEC_DIR = Path(__file__).with_name("specs")
# what a table may report: a run record's test log-likelihood (higher is better), or a timing
# table's inference time (benchmark/timing.py)
TIMING_METRICS = ("inference_ms",)
METRICS = ("test_iwae", "test_elbo", *TIMING_METRICS)


@dataclass(frozen=True)
class Row:
    """One table row: a method family and the parameters of one of its variants."""

    method: str
    params: tuple[tuple[str, object], ...] = ()

    @classmethod
    def of(cls, method: str, params: dict | None = None) -> Row:
        return cls(str(method), tuple(sorted((params or {}).items())))

    @property
    def param_dict(self) -> dict:
        return dict(self.params)

    @property
    def variant(self) -> str:
        return variant_name(self.param_dict)

    @property
    def id(self) -> str:
        """'sa-k4': the name --dry-run and the record paths give the row, and --methods takes."""
        return f"{self.method}-{self.variant}"

    def selected_by(self, methods: set[str] | None) -> bool:
        """Whether --methods (families such as 'sa', or row ids such as 'sa-k4') picks this row."""
        return methods is None or self.method in methods or self.id in methods

    @property
    def has_plugin(self) -> bool:
        return self.method in method_specs()

    @property
    def label(self) -> str:
        info = method_specs().get(self.method)
        return display_name(info.label if info else self.method.upper(), self.param_dict)


@dataclass(frozen=True)
class DatasetSettings:
    """One entry of specs/datasets.yaml: a table column's data and networks.

    `data` names the loader (benchmark.datasets) when the entry is a network variant of another
    dataset (binarized_mnist_fc: the binarized MNIST files with FC networks); by default the
    entry's own name. `network` is "cnn" (num_conv conv layers) or "fc" (num_conv unused).
    """

    hidden: int
    num_conv: int = 0
    sigma_x: float | None = None  # Gaussian decoder: sigma_x, or its initial value when learned
    learn_sigma_x: bool = False  # one global sigma_x trained with the decoder (paper footnote 2)
    data: str | None = None
    network: str = "cnn"

    def loader(self, column: str) -> str:
        """The benchmark.datasets loader of the table column `column` that has these settings."""
        return self.data or column

    def net_config(self, image_shape: tuple[int, ...]) -> NetConfig:
        from methods.networks import NetConfig  # torch: only where networks are built

        return NetConfig(image_shape, self.num_conv, self.hidden, self.network)

    def as_config(self) -> dict:
        """The settings that determine a run's result, for its config hash. `data`, `network` and
        `learn_sigma_x` are left out at their defaults so records made before they existed stay
        current (a learned sigma_x is a new configuration: new records beside the fixed one's)."""
        cfg = dataclasses.asdict(self)
        for name in ("data", "network", "learn_sigma_x"):
            if cfg[name] == DATASET_SETTINGS_DEFAULTS[name]:
                del cfg[name]
        return cfg


DATASET_SETTINGS_DEFAULTS = {f.name: f.default for f in dataclasses.fields(DatasetSettings)}


@dataclass(frozen=True)
class TableSpec:
    name: str
    title: str
    metric: str
    datasets: tuple[str, ...]
    dims: tuple[int, ...]
    rows: tuple[Row, ...]
    batch_size: int | None = None  # timing tables: images per timed batch
    repeats: int = 1  # timing tables: timed passes over the test batches, averaged

    @property
    def timing(self) -> bool:
        """A timing table (Table 3): its cells are inference times, not run records."""
        return self.metric in TIMING_METRICS


def _parse_row(item, source: Path) -> Row:
    if isinstance(item, str):
        return Row(item)
    if isinstance(item, dict) and len(item) == 1:
        (method, params), = item.items()
        if isinstance(params, dict):
            _check_params(str(method), params, source)
            return Row.of(method, params)
    raise ConfigError(f"{source}: a row must be 'method' or {{method: {{param: value}}}}, got {item!r}")


def _check_params(method: str, params: dict, source: Path) -> None:
    """A row's parameters against its plugin's signature, when the spec loads (an unknown method is
    reported by the plan, with the registered ones)."""
    try:
        method_spec(method).settings(params)
    except UnknownMethodError:
        return
    except UnknownParameterError as err:
        raise ConfigError(f"{source}: {err}") from None


def table_names() -> list[str]:
    return sorted(p.stem.removeprefix("table") for p in SPEC_DIR.glob("table*.yaml"))


def load_table_spec(table: str) -> TableSpec:
    """Table N (benchmark/specs/tableN.yaml), or a spec of one's own by path (name: the file's stem)."""
    path = Path(table)
    if path.suffix in (".yaml", ".yml"):
        name = path.stem
        if path.is_dir():
            raise ConfigError(f"table spec {table} is a folder, not a YAML file")
        if not path.is_file():
            raise ConfigError(f"table spec {table} does not exist")
    else:
        name, path = f"table{table}", SPEC_DIR / f"table{table}.yaml"
        if not path.exists():
            raise ConfigError(f"unknown table {table!r}; known tables: {', '.join(table_names())}")
    data = read_yaml_mapping(path)
    for key in ("title", "metric", "datasets", "dims", "rows"):
        if key not in data:
            raise ConfigError(f"{path}: missing key {key!r}")
    if data["metric"] not in METRICS:
        raise ConfigError(f"{path}: unknown metric {data['metric']!r}; known metrics: "
                          + ", ".join(METRICS))
    return TableSpec(
        name=name,
        title=str(data["title"]),
        metric=str(data["metric"]),
        datasets=_once(tuple(str(d) for d in _nonempty_list(data, "datasets", path)), "datasets",
                       path),
        dims=_once(tuple(_positive_int({"dims": d}, "dims", path, None)
                         for d in _nonempty_list(data, "dims", path)), "dims", path),
        rows=_once(tuple(_parse_row(r, path) for r in _nonempty_list(data, "rows", path)), "rows",
                   path),
        batch_size=_positive_int(data, "batch_size", path, None),
        repeats=_positive_int(data, "repeats", path, 1),
    )


def _once(items: tuple, key: str, source: Path) -> tuple:
    """`items` if none is listed twice (a row twice would train its runs twice over, under one name)."""
    names = [item.id if isinstance(item, Row) else item for item in items]
    twice = next((name for i, name in enumerate(names) if name in names[:i]), None)
    if twice is not None:
        raise ConfigError(f"{source}: {key} lists {twice} twice")
    return items


def _nonempty_list(data: dict, key: str, source: Path) -> list:
    value = data[key]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{source}: {key} must be a non-empty list, got {value!r}")
    return value


def _positive_int(data: dict, key: str, source: Path, default):
    value = data.get(key, default)
    if value is not default and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"{source}: {key} must be positive integers, got {value!r}" if key == "dims"
                          else f"{source}: {key} must be a positive integer, got {value!r}")
    return value


def load_dataset_settings(dataset: str) -> DatasetSettings:
    path = SPEC_DIR / "datasets.yaml"
    data = read_yaml_mapping(path)
    if dataset not in data:
        raise ConfigError(f"{path}: no network settings for dataset {dataset!r}")
    entry = data[dataset]
    if not isinstance(entry, dict):
        raise ConfigError(f"{path}: {dataset}: expected a mapping of keys to values")
    settings = build_dataclass(DatasetSettings, entry, f"{path}: {dataset}")
    from methods.metadata import NETWORKS  # the networks a column can name (no torch)

    if settings.network not in NETWORKS:
        raise ConfigError(f"{path}: {dataset}: network must be one of {', '.join(NETWORKS)}, "
                          f"got {settings.network!r}")
    if (settings.network == "cnn") != (settings.num_conv >= 1):
        raise ConfigError(f"{path}: {dataset}: num_conv must be >= 1 for a cnn network and "
                          "absent for an fc one")
    return settings
