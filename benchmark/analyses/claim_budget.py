"""A claims sweep planned to decide: which rows, columns and how many splits to train so that as
many of a table's claims as possible can be decided (reproduced or contradicted) within a budget of
wall time on this machine (`reproduce.py --table 1 --claims --budget 3h`).

The design is fixed: every comparison's number of splits n is chosen before anything trains, from
- the spread of its paired differences: the sample sd of the records that exist when they have at
  least MIN_PILOT shared splits, else the table's planning prior (benchmark/paper/claims.yaml,
  `planning: sd`: measured on earlier claims-profile sweeps) or, when it is larger, the largest
  spread measured between any two rows of the same column (so a comparison with no records of its
  own is not planned as if it spread less than the rows that have been run there);
- the effect to plan for: the paper's printed difference between the two rows in that column,
  or the table's tie tolerance when the paper's gap is smaller (a comparison is decided either by
  p <= alpha or by a tie shown with power: claims.py's rules), i.e. max(|paper gap|, tolerance);
- the cost model of `--dry-run` (benchmark.estimate) and the budget.
n is the smallest number of splits whose minimum detectable effect (two-sided paired t at alpha,
80% power: claims.min_detectable_effect) is within the effect planned for; with budget to spare,
claims already planned get more splits (up to `planning: max_splits`, the paper's 10) before
more columns, so a smaller true effect than the paper's is still found. The verdict is one test
per comparison at the planned n, after training: the data are looked at once, so alpha holds as
for any fixed-n t-test; using the records' sd (never their mean) to size n is an internal pilot
whose error rate tests/test_claim_budget.py simulates (2,000 sweeps with no true difference, and
the power at a true +7 nats). Why fixed rather than sequential (alpha spending over looks): on
2 cores a sweep is one session's work, a second look would need a second session of training to
pay for itself, and a fixed n per comparison keeps every claim's test the plain paired t-test that
the claims report already states. A rerun with a larger budget is a new design that includes the
old splits (a second look): the report's verdict is then still read at alpha, which this module
does not correct; docs/claims.md says so.

Which claims, columns and rows: columns are taken cheapest first (the cost model), a claim's rows
are its own (A and B; a family's rows that were selected); "best or tied" claims are judged among
the rows the plan trains anyway. Claims are added cheapest first while the estimated sweep (runs
longest first on min(--jobs, cores) slots, as the local launcher runs them) fits the budget.

This module plans; benchmark.pipeline trains the planned runs and benchmark.analyses.claims judges
them. It names no method: rows come from the table's spec and the claims file.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from ..estimate import duration, estimate_sweep
from ..yamlio import ConfigError
from .claims import KINDS, ClaimSet, key, min_detectable_effect, n_for_power, resolve_rows

MIN_PILOT = 3  # shared splits before the records' own sd replaces the planning prior
N_LIMIT = 200  # the largest n a "what budget would" answer looks at
SHOWN = 4  # comparisons listed per claim in the plan (the ones needing most splits first)


def parse_budget(text: str) -> float:
    """'45m', '3h', '1h30m', '90s' -> seconds (pandas.Timedelta reads them); UsageError if not a
    positive duration."""
    import pandas as pd

    try:
        seconds = pd.Timedelta(str(text).strip()).total_seconds()
    except (ValueError, TypeError):
        seconds = math.nan
    if not seconds > 0:  # NaN too
        raise UsageError(f"--budget {text}: expected a positive duration such as 45m, 3h or 1h30m")
    return seconds


@dataclass(frozen=True)
class Planning:
    """A table's planning settings (benchmark/paper/claims.yaml, `planning`)."""

    sd: float  # prior sd of a paired difference between two rows (nats)
    max_splits: int  # the most splits a comparison may get
    sd_note: str = ""  # where the prior comes from

    @classmethod
    def of(cls, claim_set: ClaimSet) -> Planning:
        raw = claim_set.planning
        if not raw:
            raise ConfigError(f"claims for {claim_set.name}: no `planning` settings (sd, "
                              "max_splits) in benchmark/paper/claims.yaml: --budget cannot plan")
        return cls(float(raw["sd"]), int(raw["max_splits"]), str(raw.get("note", "")))


@dataclass
class Need:
    """One comparison a claim rests on, and the n it needs."""

    column: tuple[str, int]
    a: object  # spec Row
    b: object  # spec Row
    have: int  # shared splits recorded now
    sd: float
    sd_from: str  # "records (n=5)" or "prior"
    target: float  # the effect planned for (nats)
    target_from: str
    needed: int | None  # smallest n with MDE <= target (None: more than N_LIMIT)
    gap: float | None = None  # the paper's printed difference A - B in this column

    def label(self) -> str:
        from .claims import _column_label

        return f"{_column_label(self.column)} {self.a.label} vs {self.b.label}"


@dataclass
class ClaimPlan:
    claim: object
    needs: list[Need] = field(default_factory=list)
    columns: list = field(default_factory=list)  # columns planned
    n: int = 0  # splits planned per comparison
    added: int = 0  # runs this claim adds (beyond the records and earlier claims)
    seconds: float = 0.0  # sweep time this claim adds
    status: str = ""  # planned | recorded | cannot decide | not in this sweep | not planned
    why: str = ""
    budget_needed: float | None = None  # seconds: what budget would decide it (alone)
    pooled: int | None = None  # no_better_on_average: the (column, split) pairs it needs
    columns_tried: list = field(default_factory=list)  # not planned: the columns it would take

    @property
    def needed(self) -> int | None:
        ns = [nd.needed for nd in self.needs if nd.column in self.columns]
        return None if not ns or None in ns else max(ns)

    def mde(self, n: int | None = None) -> float | None:
        """The weakest detectable effect over the planned comparisons at n splits."""
        n = n or self.n
        sds = [nd.sd for nd in self.needs if nd.column in self.columns]
        return min_detectable_effect(max(sds), n) if sds and n >= 2 else None


@dataclass
class BudgetPlan:
    budget: float
    workers: int
    planning: Planning
    claims: list[ClaimPlan]
    tasks: list  # RunTask: the runs to train
    seconds: float  # the sweep's estimated wall time
    scope: str  # what the request allowed
    priced: str = ""  # how the runs' times were estimated (estimate.SweepEstimate.how)

    def text(self) -> str:
        lines = [f"claims plan: budget {duration(self.budget)}, {self.workers} runs at once; "
                 f"{self.scope}",
                 *([f"  priced: {self.priced}"] if self.priced else []),
                 "  fixed design: each comparison's n is set now from the cost model, the spread of "
                 "its paired differences (records with >= 3 shared splits, else the prior sd "
                 f"{self.planning.sd:g} nats or the largest spread measured in that column, "
                 "whichever is larger) and the paper's gap (at least the tie tolerance); one "
                 "paired t-test at alpha 0.01 after training (benchmark/analyses/claim_budget.py)"]
        for cp in self.claims:
            head = f"  {cp.claim.id}: " + ("planned, every run recorded already"
                                            if cp.status == "recorded" else cp.status)
            if cp.status in ("planned", "recorded"):
                mde = cp.mde()
                cols = ", ".join(_col(c) for c in cp.columns)
                lines.append(f"{head}: {cols}; n = {cp.n} splits; +{cp.added} runs, "
                             f"+{duration(cp.seconds)}; detects >= {mde:.1f} nats (80% power)")
            else:
                extra = (f"; a budget of about {duration(cp.budget_needed)} would"
                         if cp.budget_needed else "")
                lines.append(f"{head}: {cp.why}{extra}")
            cols = cp.columns or cp.columns_tried
            shown = [nd for nd in cp.needs if nd.column in cols] if cols else \
                sorted(cp.needs, key=lambda nd: -(nd.needed or N_LIMIT + 1))
            for nd in shown[:SHOWN]:
                need = "more than " + str(N_LIMIT) if nd.needed is None else str(nd.needed)
                lines.append(f"    {nd.label()}: {nd.have} splits recorded; sd {nd.sd:.1f} "
                             f"({nd.sd_from}); plans for {nd.target:.1f} nats "
                             f"({nd.target_from}): needs n = {need}")
            if len(shown) > SHOWN:
                lines.append(f"    ... and {len(shown) - SHOWN} more comparisons")
        lines.append(f"sweep: {len(self.tasks)} runs, about {duration(self.seconds)} on this "
                     f"machine (budget {duration(self.budget)})")
        return "\n".join(lines)


def _col(column) -> str:
    from .claims import _column_label

    return _column_label(column)


def _pairs(claim, spec, rows, columns) -> list[tuple]:
    """(column, A row, B row) of a claim within the selected rows and columns; for best_or_tied B
    is every other selected row."""
    where = f"claims for {spec.name}, {claim.id}"
    a_rows = [r for r in resolve_rows(claim.a, spec.rows, where) if r in rows]
    if claim.kind == "best_or_tied":
        b_rows = [r for r in rows if r not in a_rows]
    else:
        b_rows = [r for r in resolve_rows(claim.b, spec.rows, where) if r in rows]
    return [(c, a, b) for c in columns for a in a_rows for b in b_rows]


def splits_needed(sd: float, target: float, alpha: float = 0.01) -> int | None:
    """The smallest n >= 2 whose paired t-test detects `target` at `alpha` with 80% power when the
    paired differences have this sd; None above N_LIMIT."""
    return next((n for n in range(2, N_LIMIT + 1)
                 if min_detectable_effect(sd, n, alpha) <= target), None)


def _paired_sd(cells: dict, ka, kb) -> tuple[int, float | None]:
    """(shared splits, sd of the paired differences A - B, None below MIN_PILOT splits)."""
    if ka not in cells or kb not in cells:
        return 0, None
    common = cells[ka].index.intersection(cells[kb].index)
    if len(common) < MIN_PILOT:
        return len(common), None
    return len(common), max(float((cells[ka].loc[common] - cells[kb].loc[common]).std(ddof=1)),
                            1e-6)


def _column_spread(cells: dict) -> tuple[float, str] | None:
    """The largest paired sd measured between any two rows of a column (>= MIN_PILOT shared
    splits), and which: the spread a comparison without records of its own is planned with when
    it exceeds the prior (models of one column that differ by 25 nats from split to split at
    d=50 do not differ by 5 for another pair of rows)."""
    found = []
    names = sorted(cells)
    for i, ka in enumerate(names):
        for kb in names[i + 1:]:
            n, sd = _paired_sd(cells, ka, kb)
            if sd is not None:
                found.append((sd, f"measured in this column: {'-'.join(ka)} vs {'-'.join(kb)}, n={n}"))
    return max(found) if found else None


def _need(column, a, b, series, spreads, paper, tolerance, planning, alpha) -> Need:
    """The n one comparison needs; `spreads`: _column_spread of each column of `series`."""
    cells = series.get(column, {})
    sd, sd_from = planning.sd, "prior"
    have, own = _paired_sd(cells, key(a), key(b))
    if own is not None:
        sd, sd_from = own, f"records, n={have}"
    elif (spread := spreads.get(column)) is not None and spread[0] > planning.sd:
        sd, sd_from = spread
    gap, target_from = None, f"tie tolerance {tolerance:g}"
    pcells = paper.column(*column) if paper is not None else {}
    if key(a) in pcells and key(b) in pcells:
        gap = pcells[key(a)].mean - pcells[key(b)].mean
    target = max(abs(gap) if gap is not None else 0.0, tolerance)
    if gap is not None and abs(gap) >= tolerance:
        target_from = f"paper's gap {gap:+.1f}"
    elif gap is not None:
        target_from = f"paper's gap {gap:+.1f} < tie tolerance {tolerance:g}"
    needed = splits_needed(sd, target, alpha)
    return Need(column, a, b, have, sd, sd_from, target, target_from, needed, gap)


def _pooled_need(needs: list[Need], tolerance: float, alpha: float) -> int | None:
    """(column, split) pairs the pooled test of a no_better_on_average claim needs: the largest
    spread of its comparisons, the mean of the paper's gaps (at least the tie tolerance)."""
    sd = max(nd.sd for nd in needs)
    gaps = [nd.gap for nd in needs if nd.gap is not None]
    target = max(abs(sum(gaps) / len(gaps)) if gaps else 0.0, tolerance)
    return splits_needed(sd, target, alpha)


def _figure_need(claim, results_dir, workers: int, alpha: float) -> tuple[str, float | None]:
    """What a correlation claim's own runs (a figure's models) say about deciding it: from its
    result file, the models so far, their combined test and how many models would decide it at
    their mean and spread (claims.n_for_power), and the time they take at the file's measured
    seconds a model: the extra models' training, `workers` at once, then the analysis of all of
    them (figures.py analyses every model of --seeds in one process)."""
    from .claims import read_json

    why = f"decided by the figure's own runs ({claim.source}; reproduce.py --figures)"
    res = read_json(Path(results_dir) / claim.source) or {}
    combined = (res.get("combined") or {}).get(res.get("primary") or "") or {}
    n, p, rho = combined.get("n"), combined.get("p_two_sided"), combined.get("mean_rho")
    if not n or p is None or rho is None:
        return why + ": no result of them yet", None
    got = f"{n} models so far, mean rho {rho:+.3f}, p {p:.2g}"
    if p <= alpha:
        return f"{why}: {got}: decided", None
    need = n_for_power(combined.get("mean_z") or 0.0, combined.get("sd_z") or 0.0, alpha)
    if need is None:
        return f"{why}: {got}: at their mean and spread no number of models would decide it", None
    seeds = res.get("per_seed") or []
    train = [s["training"]["train_seconds"] for s in seeds
             if (s.get("training") or {}).get("train_seconds")]
    if not train:
        return f"{why}: {got}: about {need} models would decide it at their mean and spread", None
    training = statistics.median(train)
    analysis = float(res.get("seconds") or 0.0) / max(len(seeds), 1)  # the run analyses every model
    extra = need - n
    return (f"{why}: {got}: about {need} models would decide it at their mean and spread "
            f"({extra} more trained at {duration(training)} a model here, {workers} at once, then "
            f"all {need} analysed at {duration(analysis)} a model: "
            f"python -m benchmark.analyses.figures --seeds {need})",
            math.ceil(extra / max(workers, 1)) * training + need * analysis)


def plan_budget(spec, claim_set: ClaimSet, tasks: list, records: list, *, budget: float,
                results_dir, jobs: int, gpu: bool = False, paper=None, alpha: float = 0.01,
                scope: str = "") -> BudgetPlan:
    """The runs to train (of `tasks`: every run the request selects, over planning.max_splits
    splits, those with a current record included) so that as many claims of `claim_set` as
    possible are decided within `budget` seconds."""
    from ..aggregate import best_restarts, records_frame
    from ..estimate import measured_costs
    from .claims import _series

    planning = Planning.of(claim_set)
    tolerance = claim_set.tie_tolerance or 0.0
    from ..store import Record

    records = [Record.of(r) for r in records]  # validated once
    series = _series(best_restarts(records_frame(records, getattr(spec, "metric", "test_iwae"))))
    spreads = {column: _column_spread(cells) for column, cells in series.items()}  # once per column
    done = {r.key for r in records if r.ok}
    costs = measured_costs(results_dir)
    est_all = estimate_sweep(tasks, results_dir, jobs=jobs, gpu=gpu, costs=costs,
                             probe=not gpu)  # from an empty folder: this CPU's speed, timed
    workers = est_all.workers
    by_cell: dict = {}  # (column, row key) -> {split: task} (restart 0.. all kept)
    for t in tasks:
        by_cell.setdefault(((t.key.dataset, t.key.dim), (t.key.method, t.key.variant)), []).append(t)
    rows = [r for r in spec.rows if any(k[1] == key(r) for k in by_cell)]
    all_columns = [(ds, dim) for ds in spec.datasets for dim in spec.dims]
    columns = [c for c in all_columns if any(k[0] == c for k in by_cell)]

    def runs_for(column, row, n) -> list:
        return [t for t in by_cell.get((column, key(row)), []) if t.key.split < n]

    def cost(col) -> float:
        return sum(est_all.runs[t.key].seconds or 0.0 for k, ts in by_cell.items() if k[0] == col
                   for t in ts)

    columns.sort(key=cost)  # cheapest columns first
    chosen: dict = {}  # RunKey -> task

    def wall(extra: list) -> float:
        """The sweep's wall time with `extra` runs added: est_all's per-run estimates, not made again."""
        todo = {t.key for t in list(chosen.values()) + extra if t.key not in done}
        return dataclasses.replace(est_all, runs={k: est_all.runs[k] for k in todo}).wall_seconds \
            if todo else 0.0

    from .claims import load_claims

    plans = []
    together = list(claim_set.claims) + [c for other in claim_set.with_
                                         for c in load_claims(other).claims]
    for claim in together:
        cp = ClaimPlan(claim)
        if KINDS[claim.kind] != "loglik":
            if KINDS[claim.kind] == "timing":
                cp.status, cp.why = "not in this sweep", "a timing claim: run its timing table"
            else:
                cp.status = "not in this sweep"
                cp.why, cp.budget_needed = _figure_need(claim, results_dir, workers, alpha)
            plans.append(cp)
            continue
        pairs = _pairs(claim, spec, rows, columns)
        if not pairs:
            cp.status, cp.why = "not in this sweep", "its rows or columns are not selected"
        cp.needs = [_need(c, a, b, series, spreads, paper, tolerance, planning, alpha)
                    for c, a, b in pairs]
        plans.append(cp)
    # best_or_tied last: it is judged among the rows the other claims train
    order = [cp for cp in plans if cp.needs and cp.claim.kind != "best_or_tied"] + \
            [cp for cp in plans if cp.needs and cp.claim.kind == "best_or_tied"]

    def claim_runs(cp, cols, n) -> list:
        rws = {r for nd in cp.needs if nd.column in cols for r in (nd.a, nd.b)}
        return [t for c in cols for r in rws for t in runs_for(c, r, n)]

    # pass 1: each claim on its cheapest column where it can be decided within max_splits
    for cp in sorted(order, key=lambda cp: cp.claim.kind == "best_or_tied"):
        if cp.claim.kind == "best_or_tied" and chosen:  # among the rows the plan trains anyway
            trained = {(t.key.dataset, t.key.dim, t.key.method, t.key.variant)
                       for t in chosen.values()}
            cp.needs = [nd for nd in cp.needs if (*nd.column, *key(nd.b)) in trained] or cp.needs
        before = wall([])
        options = []
        if cp.claim.kind == "no_better_on_average":  # one test over (column, split) pairs
            cols = [c for c in columns if any(nd.column == c for nd in cp.needs)]
            cp.pooled = _pooled_need(cp.needs, tolerance, alpha)
            if cp.pooled is not None:
                n = max(2, math.ceil(cp.pooled / len(cols)))
                if n <= planning.max_splits:
                    runs = claim_runs(cp, cols, n)
                    options.append((wall(runs) - before, cols, n, runs))
        else:
            for col in columns:
                needs = [nd for nd in cp.needs if nd.column == col]
                if not needs:
                    continue
                ns = [nd.needed for nd in needs]
                n = None if None in ns else max(ns)
                if n is not None and n <= planning.max_splits:
                    runs = claim_runs(cp, [col], n)
                    options.append((wall(runs) - before, [col], n, runs))
        if not options and cp.claim.kind == "no_better_on_average":
            cp.status = "cannot decide"
            cp.why = (f"the pooled test needs {cp.pooled} (column, split) pairs, more than "
                      f"{len(cols)} columns x planning.max_splits = {planning.max_splits}"
                      if cp.pooled else f"needs more than {N_LIMIT} pairs at this spread")
            continue
        if not options:
            cp.status = "cannot decide"
            per_col = {}
            for nd in cp.needs:
                per_col.setdefault(nd.column, []).append(nd.needed)
            finite = [(max(ns), c) for c, ns in per_col.items() if None not in ns]
            if finite:
                n, col = min(finite)
                at_max = wall(claim_runs(cp, [col], planning.max_splits)) - before
                cp.budget_needed = before + at_max * n / planning.max_splits
                cp.why = (f"needs n = {n} splits on {_col(col)}, more than planning.max_splits "
                          f"= {planning.max_splits} (raise it in benchmark/paper/claims.yaml)")
            else:
                cp.why = f"needs more than {N_LIMIT} splits at this spread"
            continue
        extra, cols, n, runs = min(options, key=lambda o: o[0])
        if before + extra > budget:
            cp.status, cp.columns_tried = "not planned", list(cols)
            cp.why = f"its {len([r for r in runs if r.key not in done])} runs do not fit"
            cp.budget_needed = wall(runs)
            continue
        cp.added = sum(t.key not in done and t.key not in chosen for t in runs)
        for t in runs:
            chosen[t.key] = t
        cp.columns, cp.n, cp.status = list(cols), n, "planned"
        cp.seconds = extra
    # pass 2: more splits (up to max_splits) for the planned claims, one split at a time
    planned = [cp for cp in plans if cp.status == "planned"]
    grown = True
    while grown:
        grown = False
        for cp in planned:
            if cp.n >= planning.max_splits:
                continue
            before = wall([])
            runs = claim_runs(cp, cp.columns, cp.n + 1)
            if wall(runs) <= budget:
                for t in runs:
                    cp.added += t.key not in chosen and t.key not in done
                    chosen[t.key] = t
                cp.n += 1
                cp.seconds += wall([]) - before
                grown = True
    # pass 3: more columns for the planned claims, at their n, cheapest first; only columns whose
    # comparisons that n can decide (one it cannot would leave an "in every column" claim
    # underpowered where the columns planned so far decide it)
    for cp in planned:
        for col in columns:
            col_needs = [nd.needed for nd in cp.needs if nd.column == col]
            if col in cp.columns or not col_needs or None in col_needs or max(col_needs) > cp.n:
                continue
            before = wall([])
            runs = claim_runs(cp, [col], cp.n)
            if wall(runs) <= budget:
                for t in runs:
                    cp.added += t.key not in chosen and t.key not in done
                    chosen[t.key] = t
                cp.columns.append(col)
                cp.seconds += wall([]) - before
    for cp in planned:
        if all(t.key in done for t in claim_runs(cp, cp.columns, cp.n)):
            cp.status = "recorded"
    tasks_out = [t for t in tasks if t.key in chosen and t.key not in done]
    return BudgetPlan(budget, workers, planning, plans, tasks_out, wall([]), scope,
                      est_all.how())
