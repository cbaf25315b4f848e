"""How long runs take, estimated before a sweep is submitted (`--dry-run --launcher slurm`).

Per run: epochs x training images x seconds per image-epoch, plus evaluation (validation and test
images x IWAE samples x seconds per image-sample). The per-image costs come from, in this order:

1. measured: the records under the results folder of the same method and variant on the same
   dataset (same latent size when there are any, else any), preferring records made on the device
   type the jobs will use: each record's `history` holds every epoch's seconds and `sizes` its
   training images, `metrics.eval_seconds` its evaluation time;
2. for a GPU job without such records: the paper's Table 3 (ms per test batch of 128 at dim 50, on
   an RTX 2080 Ti), a training step taken as 3 forward passes (forward + backward), evaluation as
   K forward passes per image; rows the paper did not time take a stand-in (hf = iaf of the same
   k, me/rme with m components = m x vae);
3. measured records made on the other device type (said so: a CPU time is no GPU time).

Every figure is an upper bound in epochs (early stopping, `patience`, may end a run sooner).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from .keys import RunTask

# images a full-data run trains on (the official training set less its validation share) and
# evaluates on (validation + test), per dataset: benchmark/datasets.py's docstring
FULL_SIZES = {"mnist": (54000, 16000), "binarized_mnist": (50000, 20000),
              "omniglot": (21911, 10504), "svhn": (65932, 33357), "cifar10": (45000, 15000),
              "celeba": (162080, 40519)}
TABLE3_BATCH = 128
TRAIN_STEP_FORWARDS = 3  # a training step: forward + backward, about 3 forward passes


@dataclass(frozen=True)
class RunEstimate:
    seconds: float | None
    source: str  # how: "3 records on cpu", "paper Table 3 (RTX 2080 Ti)", "no measurement"


def _sizes(task: RunTask) -> tuple[int, int]:
    prof = task.profile
    train, evaluated = FULL_SIZES.get(task.key.dataset, (50000, 15000))
    val_test = (prof.val_size or evaluated // 2) + (prof.test_size or evaluated - evaluated // 2)
    return prof.train_size or train, val_test if (prof.val_size or prof.test_size) else evaluated


@dataclass(frozen=True)
class _Measured:
    method: str
    variant: str
    dataset: str
    dim: int
    device: str  # cpu or cuda
    train_s_per_image_epoch: float
    eval_s_per_image_sample: float | None


def measured_costs(results_dir: str | Path) -> list[_Measured]:
    """Per-image costs of every finished record under `results_dir` that has a history."""
    out = []
    for path in sorted((Path(results_dir) / "runs").rglob("*.json")):
        try:
            rec = json.loads(path.read_text())
            if rec.get("status") != "ok":
                continue
            key, sizes, hist = rec["key"], rec["sizes"], rec["history"]
            epochs = [h["seconds"] for h in hist if isinstance(h.get("seconds"), int | float)]
            if not epochs or not sizes.get("train"):
                continue
            k = rec["config"]["profile"]["iwae_k"]
            ev = rec["metrics"].get("eval_seconds")
            n_eval = (sizes.get("val") or 0) + (sizes.get("test") or 0)
            out.append(_Measured(
                key["method"], key["variant"], key["dataset"], int(key["dim"]),
                str(rec.get("provenance", {}).get("device", "cpu")).split(":")[0],
                statistics.mean(epochs) / sizes["train"],
                ev / (n_eval * k) if ev and n_eval and k else None))
        except (OSError, ValueError, KeyError, TypeError, AttributeError, ZeroDivisionError):
            continue
    return out


def _table3_ms(method: str, variant: str, dataset: str) -> tuple[float, str] | None:
    from .paper_tables import load_paper_table

    try:
        cells = load_paper_table("table3").cells
    except Exception:  # noqa: BLE001 - no paper numbers: no estimate from them
        return None
    column = cells.get((dataset, 50)) or cells.get(("mnist", 50)) or {}
    if (method, variant) in column:
        return column[(method, variant)].mean, ""
    if method == "hf" and ("iaf", variant) in column:
        return column[("iaf", variant)].mean, f" (hf-{variant} taken as iaf-{variant})"
    if method in ("me", "rme") and variant.startswith("m") and ("vae", "default") in column:
        m = int(variant[1:]) if variant[1:].isdigit() else 1
        return m * column[("vae", "default")].mean, f" ({method}-{variant} taken as {m} x vae)"
    return None


def estimate_run(task: RunTask, gpu: bool, costs: list[_Measured]) -> RunEstimate:
    """Seconds one run of `task` takes on a job with (`gpu`) or without a GPU, and how estimated."""
    key, prof = task.key, task.profile
    n_train, n_eval = _sizes(task)
    want = "cuda" if gpu else "cpu"
    same = [c for c in costs if (c.method, c.variant, c.dataset) == (key.method, key.variant, key.dataset)]
    same = [c for c in same if c.dim == key.dim] or same
    for device in (want, None):
        if device is None and gpu and (t3 := _table3_ms(key.method, key.variant, key.dataset)):
            ms, note = t3
            step_s = TRAIN_STEP_FORWARDS * ms / 1000
            seconds = (prof.epochs * n_train / TABLE3_BATCH * step_s
                       + n_eval * prof.iwae_k / TABLE3_BATCH * ms / 1000)
            return RunEstimate(seconds, f"paper Table 3 on an RTX 2080 Ti{note}")
        pool = [c for c in same if device is None or c.device == device]
        if not pool:
            continue
        train = statistics.median(c.train_s_per_image_epoch for c in pool)
        evals = [c.eval_s_per_image_sample for c in pool if c.eval_s_per_image_sample]
        ev = statistics.median(evals) * n_eval * prof.iwae_k if evals else 0.0
        devices = "/".join(sorted({c.device for c in pool}))
        caveat = (" (measured without a GPU: an upper bound for a GPU)"
                  if gpu and "cuda" not in devices else "")
        return RunEstimate(prof.epochs * n_train * train + ev,
                           f"{len(pool)} record{'s' if len(pool) > 1 else ''} on {devices}{caveat}")
    return RunEstimate(None, "no measurement (no record of this method on this dataset)")
