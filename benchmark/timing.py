"""Timing tables (spec metric `inference_ms`, paper Table 3): per-batch test-time inference time.

For each dataset and dim(z) of the spec and each row: a freshly initialised model (seeded; timing
does not depend on trained weights) of the table's architecture, its x-independent test-time state
prepared (`prepare_inference`), then `infer` (q(z|x)'s parameters and one sample; for semi-amortized
methods this includes their test-time optimisation) on every test batch of `batch_size` images.
A pass over the batches is timed with torch.utils.benchmark.Timer (`repeats` passes, each its own
`timeit(1)` after its 2 warm-up passes; CUDA synchronised); the cell is the mean over the passes
of a pass's time divided by the number of batches. Raw figures go to
RESULTS/runs/PROFILE/TABLE/timings.json ("ms_per_batch": the cells; "ms_per_pass": each
pass's ms per batch, which benchmark.analyses.claims tests timing claims on), the table to
RESULTS/tables/TABLE.{md,tex,html} (written by benchmark.render, like every table). The sequence
(plan the cells, measure, record, render) is benchmark.pipeline's, as for every table.
"""

from __future__ import annotations

import logging
import platform
from datetime import UTC, datetime
from pathlib import Path

import torch

from . import datasets
from .factory import build_model
from .labels import DATASET_LABELS
from .render import timing_tables
from .specs import load_dataset_settings
from .store import write_json_atomic

log = logging.getLogger("gpvae_bench")
WARMUP_PASSES = 2  # what Timer.timeit(1) runs before its timed pass
SEED = 0


def test_batches(data, test_size: int | None, batch_size: int, device) -> list[torch.Tensor]:
    """The first `test_size` test images in batches of `batch_size`; a partial last batch is dropped
    when there is a full one, so every timed batch has the table's size."""
    images = data.test if test_size is None else data.test[:test_size]
    batches = list(torch.split(images, batch_size))
    if len(batches) > 1 and len(batches[-1]) < batch_size:
        batches.pop()
    return [data.to_float(b).to(device) for b in batches]


def time_inference(model, batches: list[torch.Tensor], repeats: int) -> list[float]:
    """Milliseconds per batch of model.infer in each of `repeats` timed passes over `batches`
    (each pass timed by its own Timer.timeit(1), which runs WARMUP_PASSES warm-up passes first)."""
    from torch.utils.benchmark import Timer  # here: importing it prints a CUDA warning at start-up

    model.eval()
    model.prepare_inference()

    def one_pass():
        with torch.no_grad():
            for x in batches:
                model.infer(x)

    timer = Timer("one_pass()", globals={"one_pass": one_pass}, num_threads=torch.get_num_threads())
    return [1e3 * timer.timeit(1).mean / len(batches) for _ in range(repeats)]


def measure(spec, profile, *, data_root, device, download, rows, datasets_, dims, requested):
    """{(dataset, dim): {row label: mean ms}}, {dataset: why missing}, {(dataset, dim): batches
    info}, {(dataset, dim): {row label: [ms per pass]}}."""
    times, sizes, passes = {}, {}, {}
    settings_of = {ds: load_dataset_settings(ds) for ds in datasets_}
    loaded, missing = datasets.load_columns({ds: settings_of[ds].loader(ds) for ds in datasets_},
                                            data_root, download, named=requested)
    for ds, data in loaded.items():
        settings = settings_of[ds]
        batches = test_batches(data, profile.test_size, spec.batch_size or profile.eval_batch_size,
                               device)
        for dim in dims:
            sizes[(ds, dim)] = (len(batches), len(batches[0]))
            cells = times.setdefault((ds, dim), {})
            per_pass = passes.setdefault((ds, dim), {})
            for row in rows:
                model, _ = build_model(row.method, row.param_dict, settings=settings,
                                       image_shape=data.image_shape, likelihood=data.likelihood,
                                       latent_dim=dim, num_train=len(data.train), seed=SEED)
                model = model.to(device)
                per_pass[row.label] = time_inference(model, batches, spec.repeats)
                cells[row.label] = sum(per_pass[row.label]) / len(per_pass[row.label])
                log.info("%s d=%d %s: %.2f ms per batch", ds, dim, row.label, cells[row.label])
                del model
    return times, missing, sizes, passes


def render(spec, rows, columns, times, missing, caption: str) -> dict[str, str]:
    """{'md', 'tex', 'html'}: the table's texts (benchmark.render writes them)."""
    return timing_tables(spec, rows, columns, times, missing, caption)


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name (captions; the speed study prints it too)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def caption(spec, profile, rows, sizes, device) -> str:
    """What the table's numbers are and how they were measured, on this machine."""
    dev = torch.device(device)
    shapes = ", ".join(f"{DATASET_LABELS.get(ds, ds)} {n} x {b}"
                       for ds, (n, b) in {ds: s for (ds, _), s in sizes.items()}.items())
    test_cap = (f"the profile caps the test set at its first {profile.test_size} images"
                if profile.test_size else "the full test set")
    threads = torch.get_num_threads()
    return (
        f"Profile '{profile.name}': per-batch time of inference (q(z|x)'s parameters and one "
        f"sample; for semi-amortized methods including their test-time SVI steps) in ms, averaged "
        f"over the test batches (batches x images: {shapes}; {test_cap}; a partial last batch is "
        f"not timed) and over {spec.repeats} passes, each after {WARMUP_PASSES} warm-up passes "
        f"(torch.utils.benchmark.Timer). Freshly initialised (seed {SEED}), untrained models of "
        f"the table's architecture: timing does not depend on trained weights; each model's "
        f"x-independent test-time state is prepared before timing. Device: {dev.type} "
        f"({device_name(dev)}), {threads} thread{'s' if threads > 1 else ''}, torch {torch.__version__}. "
        f"Ratios are to {rows[0].label if rows else 'the first row'}. "
        f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC."
    )


def save(path: Path, caption_text: str, times, missing, sizes, passes) -> Path:
    """The table's record: RESULTS/runs/PROFILE/TABLE/timings.json (see the module docstring)."""
    write_json_atomic(path, {
        "caption": caption_text, "missing": missing,
        "ms_per_batch": {f"{ds}/d{dim}": cells for (ds, dim), cells in times.items()},
        "ms_per_pass": {f"{ds}/d{dim}": cells for (ds, dim), cells in passes.items()},
        "batches": {f"{ds}/d{dim}": list(s) for (ds, dim), s in sizes.items()},
    })
    return path
