"""A verdict on each claim the paper makes about a table: reproduced, contradicted or underpowered.

The claims are data (benchmark/paper/claims.yaml); this module is an analysis: it reads the run
records (through benchmark.aggregate: the best restart per split), the timing file of a timing
table (RESULTS/runs/PROFILE/TABLE/timings.json) or a figure's JSON, never a plugin, and it
imports no torch.

Tests (alpha = 0.01, the paper's):
- between two rows of a log-likelihood table: a paired t-test (scipy.stats.ttest_rel) over the
  splits both rows have (every method sees the same splits, so the pairs are real); n = shared
  splits. `no_better_on_average` pools: per (column, split) the mean of A's variants minus B,
  one paired t-test over those (column, split) pairs; n = pairs.
- between two rows of a timing table: per column both rows were timed in, Welch's t-test
  (scipy.stats.ttest_ind, equal_var=False) on log(ms) over the timed passes (timings.json's
  "ms_per_pass": each pass's ms per batch); n = passes per row; the effect is the ratio of the
  mean times A / B (the table's cells). A timings.json without per-pass times (written before
  they were stored), or with fewer than 2 passes in some cell of the claim's rows, falls back to
  pairing the columns (datasets): a paired t-test on log(ms per batch) over the columns both rows
  have, one test per pair of rows; n = columns; the effect is the geometric mean of the ratios
  A / B. The test line says which.
- a correlation (Figure 1): the Spearman rho and its two-sided p as benchmark.analyses.figures wrote them.

Each comparison of A with B (A - B: nats, or log ms) is one of
- above / below: p <= alpha, A's mean higher / lower than B's;
- tie: p > alpha and the test had the power to see a gap of the table's `tie_tolerance` (its
  minimum detectable effect, below, is at most the tolerance): a non-significant difference at
  low power is not evidence of a tie;
- unclear: p > alpha at low power, or n < 2 (no test);
- best (best_or_tied only): A has the column's highest mean and is above (p <= alpha) the next
  row; a lead that is not significant is a tie (with power) or unclear, like any other comparison.
Minimum detectable effect (two-sided, alpha, 80% power) of a paired test over n pairs:
(t_{1-alpha/2, n-1} + t_{0.8, n-1}) * sd_diff / sqrt(n); of Welch's test, the same with
sqrt(s_A^2 / n_A + s_B^2 / n_B) for sd_diff / sqrt(n) and the Welch-Satterthwaite df for n - 1;
for a correlation, the rho whose Fisher z is (z_{1-alpha/2} + z_{0.8}) * sqrt(1.06 / (n - 3))
(Fieller's variance for Spearman's rho).

Verdicts per kind (A, B: the claim's rows; a family means each of its rows in the table; every
comparison is per column unless said otherwise):
- best_or_tied (A is the best or tied with the best in every column): A against the column's best
  row. Reproduced: best or tie in every column; contradicted: below the best in some column;
  otherwise underpowered.
- better_than (A > B in every column): reproduced: above in every comparison; contradicted: below
  or tie in some (a tie shown at full power is not "better"); otherwise underpowered.
- mixed_sign (A's gain over B is not consistent: "sometimes ... improvement, but not
  consistently"): reproduced: at least one above and at least one below or tie; contradicted:
  every comparison above (consistent gain), or every one below or tie (never a gain); otherwise
  underpowered.
- no_better_on_average (A, pooled over columns and its variants, no better than B): one pooled
  test. Reproduced: below or tie; contradicted: above; otherwise underpowered.
- tied_in_some_behind_in_others (A ties B in some comparisons and is behind in the others):
  reproduced: at least one tie, at least one below, none above; contradicted: some above, or
  every comparison below (never tied), or every one a tie (never behind); otherwise underpowered.
- faster_than (timing: A takes less time than each B): reproduced: below (faster) against every
  B; contradicted: above or tie against some B; otherwise underpowered.
- not_faster_than (timing: A on par with or slower than each B): reproduced: above or tie
  against every B; contradicted: below against some B; otherwise underpowered.
- correlation_positive: reproduced: rho > 0 with p <= alpha; contradicted: rho < 0 with
  p <= alpha; otherwise underpowered (n <= 3: no test).
A claim whose rows or data are missing is "not run", saying what is missing.

A verdict is evidence (the rules every kind above obeys):
- "reproduced" and "contradicted" rest only on tests at alpha with n >= 2: a comparison with one
  split (or one timed pass, or n <= 3 for a correlation) is "unclear" (no test), never "best" or
  a tie, so one split of two rows can never turn a claim green;
- a claim is judged on what was run, and a decided verdict says what that covers: "reproduced on
  1 of 6 columns (MNIST d10)"; a claim about the best row of a column is judged among the rows that
  ran and says so ("among 2 of 22 rows"); a family claim with some of its rows run says how many
  ("3 of the claim's 5 rows"). `ClaimResult.coverage` holds it, `complete` says whether it is all;
- the report's headline counts claims decided on the columns run and, separately, those decided on
  all the claim's columns and rows, so a partial run never reads as a reproduction of the paper.
How many splits a budgeted sweep gives each comparison, and why its error rate holds: claim_budget.py.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from ..aggregate import ALPHA, best_restarts, records_frame
from ..labels import DATASET_LABELS
from ..render import Block, Marked, document_html, document_markdown
from ..store import ResultsStore, write_text_atomic
from ..yamlio import ConfigError, read_yaml_mapping

CLAIMS_PATH = Path(__file__).parent.parent / "paper" / "claims.yaml"  # benchmark/paper (package data)
POWER = 0.8
SPEARMAN_VARIANCE = 1.06  # Fieller, Hartley & Pearson (1957): var(atanh rho_s) ~ 1.06 / (n - 3)
KINDS = {
    "best_or_tied": "loglik", "better_than": "loglik", "mixed_sign": "loglik",
    "no_better_on_average": "loglik", "tied_in_some_behind_in_others": "loglik",
    "faster_than": "timing", "not_faster_than": "timing", "correlation_positive": "figure",
}
NEEDS_B = {"better_than", "mixed_sign", "no_better_on_average", "tied_in_some_behind_in_others",
           "faster_than", "not_faster_than"}
VERDICT_COLOUR = {"reproduced": "green", "contradicted": "red", "underpowered": "#b36b00",
                  "not run": "#999"}


# ---------------------------------------------------------------- the claims file


@dataclass(frozen=True)
class Claim:
    id: str
    text: str
    quote: str
    where: str
    kind: str
    a: tuple[str, ...] = ()
    b: tuple[str, ...] = ()
    source: str | None = None


@dataclass(frozen=True)
class ClaimSet:
    name: str  # table1, table3, figure1
    claims: tuple[Claim, ...]
    tie_tolerance: float | None = None
    with_: tuple[str, ...] = ()
    planning: dict | None = None  # --budget's settings: sd (prior), max_splits (claim_budget.py)


def _selectors(value, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        raise ConfigError(f"{where}: rows must be a row id, a family or a list of them")
    return tuple(items)


def claim_names(path: Path = CLAIMS_PATH) -> list[str]:
    return sorted(read_yaml_mapping(path))


def load_claims(name: str, path: Path = CLAIMS_PATH) -> ClaimSet:
    """The claims recorded for `name` (a spec name such as 'table1', or 'figure1')."""
    data = read_yaml_mapping(path)
    if name not in data:
        raise ConfigError(f"no claims recorded for {name} in {path}; recorded for: "
                          + ", ".join(sorted(data)))
    entry = data[name]
    if not isinstance(entry, dict) or not isinstance(entry.get("claims"), list):
        raise ConfigError(f"{path}: {name}: expected a mapping with a list of claims")
    claims = []
    for i, item in enumerate(entry["claims"]):
        where = f"{path}: {name}, claim {i + 1}"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: expected a mapping")
        missing = [k for k in ("id", "claim", "quote", "where", "kind") if k not in item]
        if missing:
            raise ConfigError(f"{where}: missing key {missing[0]!r}")
        kind = item["kind"]
        if kind not in KINDS:
            raise ConfigError(f"{where}: unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
        claim = Claim(str(item["id"]), str(item["claim"]), str(item["quote"]),
                      str(item["where"]), kind, _selectors(item.get("a"), where),
                      _selectors(item.get("b"), where), item.get("source"))
        if KINDS[kind] != "figure" and not claim.a:
            raise ConfigError(f"{where}: kind {kind} needs rows `a`")
        if kind in NEEDS_B and not claim.b:
            raise ConfigError(f"{where}: kind {kind} needs rows `b`")
        if kind == "correlation_positive" and not claim.source:
            raise ConfigError(f"{where}: kind {kind} needs a `source` file")
        claims.append(claim)
    tol = entry.get("tie_tolerance")
    if tol is not None and (isinstance(tol, bool) or not isinstance(tol, int | float) or tol <= 0):
        raise ConfigError(f"{path}: {name}: tie_tolerance must be a positive number, got {tol!r}")
    also = entry.get("with", [])
    for other in also:
        if other not in data:
            raise ConfigError(f"{path}: {name}: `with` names {other!r}, which has no entry")
    planning = entry.get("planning")
    if planning is not None:
        ok = isinstance(planning, dict) and all(
            isinstance(planning.get(k), int | float) and not isinstance(planning.get(k), bool)
            and planning[k] > 0 for k in ("sd", "max_splits"))
        if not ok or int(planning["max_splits"]) < 2:
            raise ConfigError(f"{path}: {name}: planning must give sd > 0 (nats) and max_splits "
                              f">= 2, got {planning!r}")
    return ClaimSet(name, tuple(claims), None if tol is None else float(tol), tuple(also),
                    planning)


def resolve_rows(selectors: tuple[str, ...], rows, where: str) -> list:
    """Spec rows picked by row ids ('sa-k4') or families ('sa'), in the spec's order."""
    out = []
    for sel in selectors:
        picked = [r for r in rows if r.id == sel or r.method == sel]
        if not picked:
            raise ConfigError(f"{where}: {sel!r} is neither a row id nor a method family of the "
                              "table; its rows: " + ", ".join(r.id for r in rows))
        out += [r for r in picked if r not in out]
    return out


# ---------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Comparison:
    label: str  # "MNIST d10 vs VAE"
    n: int
    effect: float  # mean of A - B over the pairs (nats, or log ms)
    p: float | None  # None: n < 2, no test
    mde: float | None  # minimum detectable |effect| (same units); None: no test
    status: str  # above | below | tie | unclear | best


def _mde_t(se: float, df: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest true difference a two-sided t-test with standard error `se` and `df` degrees of
    freedom detects at `alpha` with probability `power`."""
    return float((stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)) * se)


def min_detectable_effect(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest mean paired difference a two-sided paired t-test over n pairs detects at `alpha`
    with probability `power`: (t_{1-alpha/2, n-1} + t_{power, n-1}) * sd / sqrt(n)."""
    return _mde_t(sd / math.sqrt(n), n - 1, alpha, power)


MOST_SAMPLES = 10_000  # n_for_power's search limit


def n_for_power(mean: float, sd: float, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """The fewest samples at which a two-sided one-sample t-test at `alpha` rejects with
    probability `power` when the samples are normal with this mean and sd (the noncentral t's
    power, exact for normal samples); None when mean is 0 or more than MOST_SAMPLES are needed.
    Used for Figure 1's combined test, whose samples are the models' Fisher z."""
    if not sd > 0 or mean == 0 or not math.isfinite(mean / sd):
        return None
    n = np.arange(2, MOST_SAMPLES + 1)
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)
    nc = abs(mean) / sd * np.sqrt(n)
    reached = stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc) >= power
    return int(n[np.argmax(reached)]) if reached.any() else None


def min_detectable_rho(n: int, alpha: float = ALPHA, power: float = POWER) -> float | None:
    if n <= 3:
        return None
    z = (stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * math.sqrt(SPEARMAN_VARIANCE / (n - 3))
    return float(math.tanh(z))


def _status(p: float, diff: float, mde: float, tolerance: float | None, alpha: float) -> str:
    """A comparison's status (module docstring): above / below when significant (the sign of the
    tested difference), a tie when not significant at the power to see the tolerance, else unclear."""
    if p <= alpha:
        return "above" if diff > 0 else "below"
    if tolerance is not None and mde <= tolerance:
        return "tie"
    return "unclear"


def paired(x, y, label: str, tolerance: float | None, alpha: float = ALPHA) -> Comparison:
    """Paired t-test of x against y (equal-length arrays, pair by pair)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    n = len(x)
    d = x - y
    effect = float(d.mean()) if n else math.nan
    if n < 2:
        return Comparison(label, n, effect, None, None, "unclear")
    sd = float(d.std(ddof=1))
    if sd == 0:  # ttest_rel is undefined: the difference is exactly known
        p = 1.0 if effect == 0 else 0.0
    else:
        p = float(stats.ttest_rel(x, y).pvalue)
    mde = min_detectable_effect(sd, n, alpha)
    return Comparison(label, n, effect, p, mde, _status(p, effect, mde, tolerance, alpha))


def welch(x, y, label: str, tolerance: float | None, alpha: float = ALPHA,
          effect: float | None = None) -> Comparison:
    """Welch's t-test (scipy.stats.ttest_ind, equal_var=False) of sample x against sample y
    (independent draws, e.g. timed passes). n = the smaller sample; the status's direction is that
    of mean(x) - mean(y), the tested difference; `effect` is what is reported (default: that
    difference)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    n = min(len(x), len(y))
    diff = float(x.mean() - y.mean()) if n else math.nan
    effect = diff if effect is None else float(effect)
    if n < 2:
        return Comparison(label, n, effect, None, None, "unclear")
    vx, vy = float(x.var(ddof=1)) / len(x), float(y.var(ddof=1)) / len(y)
    se = math.sqrt(vx + vy)
    if se == 0:  # ttest_ind is undefined: the difference is exactly known
        p, df = (1.0 if diff == 0 else 0.0), len(x) + len(y) - 2
    else:
        p = float(stats.ttest_ind(x, y, equal_var=False).pvalue)
        df = (vx + vy) ** 2 / (vx ** 2 / (len(x) - 1) + vy ** 2 / (len(y) - 1))
    mde = _mde_t(se, df, alpha)
    return Comparison(label, n, effect, p, mde, _status(p, diff, mde, tolerance, alpha))


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class Coverage:
    """The part of a claim a verdict rests on: the columns judged of those the claim is about and,
    for a claim about the best row of a column, the rows that ran of the table's."""

    columns: tuple[str, ...]  # labels of the columns judged ("MNIST d10")
    of_columns: int  # columns the claim is about (the table's)
    rows: int  # rows judged: best_or_tied, the rows that ran in those columns; else the claim's
    of_rows: int  # rows that could be: best_or_tied, the table's; else the claim's (A and B)
    among: bool = False  # best_or_tied: "among r of R rows" (the best of the rows that ran)

    @property
    def complete(self) -> bool:
        return len(self.columns) == self.of_columns and self.rows == self.of_rows

    @property
    def text(self) -> str:
        cols = f"on {len(self.columns)} of {self.of_columns} columns ({', '.join(self.columns)})"
        if self.among:
            return cols + f", among {self.rows} of {self.of_rows} rows"
        if self.rows < self.of_rows:
            return cols + f", {self.rows} of the claim's {self.of_rows} rows"
        return cols


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    verdict: str  # reproduced | contradicted | underpowered | not run
    test: str = ""
    n: int | None = None  # of the deciding comparison
    effect: float | None = None  # of the deciding comparison (nats, a ratio or rho)
    p: float | None = None
    mde: float | None = None  # underpowered: the smallest effect this n could detect (log ratio for times)
    detail: str = ""
    comparisons: tuple[Comparison, ...] = ()
    unit: str = "nats"  # nats | ratio | rho
    n_text: str = ""
    effect_text: str = ""
    p_text: str = ""
    coverage: Coverage | None = None  # what part of the claim the data cover; None: all of it

    @property
    def decided(self) -> bool:
        return self.verdict in ("reproduced", "contradicted")

    @property
    def complete(self) -> bool:
        """Whether the verdict covers every column and row the claim is about."""
        return self.coverage is None or self.coverage.complete

    @property
    def verdict_text(self) -> str:
        if self.verdict in ("reproduced", "contradicted"):
            return self.verdict + ("" if self.coverage is None else f" {self.coverage.text}")
        if self.verdict != "underpowered":
            return self.verdict
        if self.mde is None:
            return "underpowered (no test: n < 2)" if self.unit != "rho" else \
                "underpowered (no test: n <= 3)"
        return f"underpowered (could detect {_fmt_mde(self.mde, self.unit)})"


def _not_run(claim: Claim, why: str, test: str = "") -> ClaimResult:
    return ClaimResult(claim, "not run", test=test, detail=f"not run: {why}")


def _fmt_p(p: float | None) -> str:
    if p is None:
        return "-"
    return f"{p:.2g}" if p < 1e-3 else f"{p:.3f}"


def _fmt_effect(effect: float, unit: str) -> str:
    if unit == "ratio":
        return f"x{math.exp(effect):.2f}"
    if unit == "rho":
        return f"{effect:+.3f}"
    return f"{effect:+.1f}"


def _fmt_mde(mde: float, unit: str) -> str:
    if unit == "ratio":
        return f"a ratio of x{math.exp(-mde):.2f} or x{math.exp(mde):.2f}"
    if unit == "rho":
        return f"rho beyond ±{mde:.2f}"  # no "|": the text sits in Markdown table cells
    return f">= {mde:.1f} nats"


def _comparison_text(c: Comparison, unit: str) -> str:
    p = "no test" if c.p is None else f"p={_fmt_p(c.p)}"
    return f"{c.label}: {_fmt_effect(c.effect, unit)} ({p}, n={c.n}, {c.status})"


def _n_text(comps) -> str:
    ns = sorted({c.n for c in comps})
    return str(ns[0]) if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"


def _verdict(kind: str, comps: list[Comparison]) -> str:
    s = [c.status for c in comps]
    above, below, tie, unclear = (s.count(k) for k in ("above", "below", "tie", "unclear"))
    if kind == "best_or_tied":
        if below:
            return "contradicted"
        return "underpowered" if unclear else "reproduced"
    if kind in ("better_than", "faster_than"):
        good, bad = ("above", ("below", "tie")) if kind == "better_than" else \
            ("below", ("above", "tie"))
        if any(x in bad for x in s):
            return "contradicted"
        return "reproduced" if all(x == good for x in s) else "underpowered"
    if kind == "not_faster_than":
        if below:
            return "contradicted"
        return "underpowered" if unclear else "reproduced"
    if kind == "no_better_on_average":
        if above:
            return "contradicted"
        return "underpowered" if unclear else "reproduced"
    if kind == "mixed_sign":
        if above and (below or tie):
            return "reproduced"
        if above == len(s) or (below + tie) == len(s):
            return "contradicted"
        return "underpowered"
    if kind == "tied_in_some_behind_in_others":
        if above or below == len(s) or tie == len(s):
            return "contradicted"
        return "reproduced" if tie and below else "underpowered"
    raise ValueError(kind)


def _deciding(kind: str, verdict: str, comps: list[Comparison]) -> Comparison:
    """The comparison a claim's verdict hangs on: the strongest one against it when contradicted,
    the least powered one when underpowered (its MDE is reported), else the weakest supporting one
    (for 'in every column' claims, its p bounds the claim's: an intersection-union test)."""
    def p_of(c):
        return 1.0 if c.p is None else c.p

    if verdict == "contradicted":
        against = {"best_or_tied": {"below"}, "better_than": {"below", "tie"},
                   "faster_than": {"above", "tie"}, "not_faster_than": {"below"},
                   "no_better_on_average": {"above"},
                   "tied_in_some_behind_in_others": {"above"}}.get(kind)
        pool = [c for c in comps if against and c.status in against] or comps
        if kind in ("mixed_sign", "tied_in_some_behind_in_others") and pool is comps:
            return max(comps, key=p_of)  # all of one kind: the weakest of them
        return min(pool, key=lambda c: (p_of(c), c.mde or 0))
    if verdict == "underpowered":
        unclear = [c for c in comps if c.status == "unclear"]
        return max(unclear, key=lambda c: math.inf if c.mde is None else c.mde)
    return max(comps, key=p_of)


def _judge(claim: Claim, comps: list[Comparison], test: str, unit: str, note: str = "",
           pooled: bool = False, coverage: Coverage | None = None) -> ClaimResult:
    verdict = _verdict(claim.kind, comps)
    c = _deciding(claim.kind, verdict, comps)
    counts = {k: sum(x.status == k for x in comps) for k in ("best", "above", "below", "tie",
                                                              "unclear")}
    summary = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
    parts = [f"{len(comps)} comparison{'s' * (len(comps) != 1)}: {summary}"] if not pooled else []
    if note:
        parts.append(note)
    parts.append("; ".join(_comparison_text(x, unit) for x in comps))
    effects = [x.effect for x in comps]
    if claim.kind in ("mixed_sign", "tied_in_some_behind_in_others") and len(comps) > 1:
        effect_text = f"{_fmt_effect(min(effects), unit)} to {_fmt_effect(max(effects), unit)}"
        ps = [x.p for x in comps if x.p is not None]
        p_text = f"{_fmt_p(min(ps))} to {_fmt_p(max(ps))}" if ps else "-"
    else:
        effect_text, p_text = _fmt_effect(c.effect, unit), _fmt_p(c.p)
    return ClaimResult(
        claim, verdict, test=test, n=c.n, effect=math.exp(c.effect) if unit == "ratio" else c.effect,
        p=c.p, mde=c.mde if verdict == "underpowered" else None, detail=". ".join(parts),
        comparisons=tuple(comps), unit=unit, n_text=_n_text(comps) if not pooled else str(c.n),
        effect_text=effect_text, p_text=p_text, coverage=coverage)


# ---------------------------------------------------------------- log-likelihood tables


def _column_label(column) -> str:
    ds, dim = column
    return f"{DATASET_LABELS.get(ds, ds)} d{dim}"


def _series(best: pd.DataFrame) -> dict:
    """{(dataset, dim): {(method, variant): Series over splits}}."""
    out: dict = {}
    for (ds, dim, method, variant), g in best.groupby(["dataset", "dim", "method", "variant"]):
        out.setdefault((ds, int(dim)), {})[(method, variant)] = g.set_index("split")["value"]
    return out


def _pair(a: pd.Series, b: pd.Series):
    common = a.index.intersection(b.index).sort_values()
    return a.loc[common].to_numpy(), b.loc[common].to_numpy()


def key(row) -> tuple[str, str]:
    return row.method, row.variant


def evaluate_loglik(claim: Claim, spec, best: pd.DataFrame, tolerance: float | None,
                    alpha: float = ALPHA) -> ClaimResult:
    where = f"claims for {spec.name}, {claim.id}"
    a_rows = resolve_rows(claim.a, spec.rows, where)
    b_rows = resolve_rows(claim.b, spec.rows, where)
    series = _series(best)
    all_columns = [(ds, dim) for ds in spec.datasets for dim in spec.dims]
    columns = [c for c in all_columns if c in series]
    present = {k for c in columns for k in series[c]}
    lacking = [r for r in a_rows + b_rows if key(r) not in present]
    if not columns:
        return _not_run(claim, "no records for any row of the table")
    for side in (a_rows, b_rows):
        if side and not any(key(r) in present for r in side):
            return _not_run(claim, "no records for " + ", ".join(r.label for r in side))
    note = f"{len(columns)} of {len(all_columns)} columns run"
    if lacking:
        note += "; no records for " + ", ".join(r.label for r in lacking)
    claim_rows = list(dict.fromkeys(a_rows + b_rows))
    judged: list = []  # the columns a verdict rests on

    def coverage(among: bool = False) -> Coverage:
        labels = tuple(_column_label(c) for c in dict.fromkeys(judged))
        ran = {k for c in judged for k in series[c]}  # rows with records in the judged columns
        rows = spec.rows if among else claim_rows  # of the table's rows, or of the claim's
        return Coverage(labels, len(all_columns), sum(key(r) in ran for r in rows), len(rows),
                        among=among)

    if claim.kind == "no_better_on_average":
        diffs_a, diffs_b = [], []
        for col in columns:
            cells = series[col]
            bs = [cells[key(r)] for r in b_rows if key(r) in cells]
            as_ = [cells[key(r)] for r in a_rows if key(r) in cells]
            if not as_ or not bs:
                continue
            a_mean = pd.concat(as_, axis=1).mean(axis=1)  # over A's variants, per split
            b_mean = pd.concat(bs, axis=1).mean(axis=1)
            x, y = _pair(a_mean, b_mean)
            diffs_a += list(x)
            diffs_b += list(y)
            judged.append(col) if len(x) else None
        if not diffs_a:
            return _not_run(claim, "no column has both " + ", ".join(claim.a) + " and "
                            + ", ".join(claim.b))
        label = f"{'/'.join(claim.a)} (mean of variants) - {'/'.join(r.label for r in b_rows)}"
        comp = paired(diffs_a, diffs_b, label, tolerance, alpha)
        test = (f"pooled paired t over {comp.n} (column, split) pairs, A = mean of its variants "
                f"({note})")
        return _judge(claim, [comp], test, "nats", pooled=True, coverage=coverage())
    comps = []
    if claim.kind == "best_or_tied":
        for col in columns:
            cells = series[col]
            for ra in a_rows:
                if key(ra) not in cells or len(cells) < 2:
                    continue
                mine = cells[key(ra)]
                others = {k: v for k, v in cells.items() if k != key(ra)}
                top = max(others, key=lambda k: others[k].mean())
                top_label = next((r.label for r in spec.rows if key(r) == top), "-".join(top))
                x, y = _pair(mine, others[top])
                comp = paired(x, y, f"{_column_label(col)} vs {top_label}", tolerance, alpha)
                # "best" is evidence too: ahead of the runner-up at alpha; a lead the test cannot
                # tell from noise is a tie only with power, else unclear (n = 1: no test)
                if comp.status == "above" and mine.mean() >= others[top].mean():
                    comp = Comparison(f"{_column_label(col)}: best, ahead of {top_label}", comp.n,
                                      comp.effect, comp.p, comp.mde, "best")
                comps.append(comp)
                judged.append(col)
        if not comps:
            return _not_run(claim, "no column has " + ", ".join(r.label for r in a_rows)
                            + " and another row")
        test = (f"paired t against the best of the rows run, over shared splits, per column "
                f"({note})")
        return _judge(claim, comps, test, "nats", coverage=coverage(among=True))
    for col in columns:
        cells = series[col]
        for ra in a_rows:
            for rb in b_rows:
                if key(ra) in cells and key(rb) in cells:
                    x, y = _pair(cells[key(ra)], cells[key(rb)])
                    label = _column_label(col) + (f" {ra.label}" if len(a_rows) > 1 else "") + \
                        f" vs {rb.label}"
                    comps.append(paired(x, y, label, tolerance, alpha))
                    judged.append(col)
    if not comps:
        return _not_run(claim, "no column has both " + ", ".join(claim.a) + " and "
                        + ", ".join(claim.b))
    per = "per column" + (f" and row pair ({len(a_rows)} x {len(b_rows)} rows)"
                          if len(a_rows) * len(b_rows) > 1 else "")
    test = f"paired t over shared splits, {per} ({note})"
    return _judge(claim, comps, test, "nats", coverage=coverage())


# ---------------------------------------------------------------- timing tables


def timings_path(results_dir, profile: str, table: str) -> Path:
    return ResultsStore(results_dir).timings_path(profile, table)


def read_timings(path: Path) -> dict | None:
    """{(dataset, dim): {row label: ms per pass (a list), or the mean ms when the file has no
    per-pass times}} from a timing table's timings.json ("ms_per_pass", else "ms_per_batch"), or
    None."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        raw = data["ms_per_batch"]
        per_pass = data.get("ms_per_pass") or {}
        out = {}
        for key in list(raw) + [k for k in per_pass if k not in raw]:
            ds, _, dim = key.rpartition("/d")
            cells = {label: float(ms) for label, ms in raw.get(key, {}).items()}
            for label, passes in per_pass.get(key, {}).items():
                if isinstance(passes, list) and passes:
                    cells[label] = [float(ms) for ms in passes]
            out[(ds, int(dim))] = cells
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError,
            UnicodeDecodeError):
        return None
    return out


def _passes(cell) -> list[float] | None:
    return [float(v) for v in cell] if isinstance(cell, list | tuple) else None


def _mean_ms(cell) -> float:
    passes = _passes(cell)
    return float(np.mean(passes)) if passes is not None else float(cell)


def evaluate_timing(claim: Claim, spec, timings: dict | None, tolerance: float | None,
                    alpha: float = ALPHA, source: str = "timings.json") -> ClaimResult:
    where = f"claims for {spec.name}, {claim.id}"
    a_rows = resolve_rows(claim.a, spec.rows, where)
    b_rows = resolve_rows(claim.b, spec.rows, where)
    if not timings:
        return _not_run(claim, f"no timings ({source} is missing or unreadable)")
    all_columns = [(ds, dim) for ds in spec.datasets for dim in spec.dims]
    columns = [c for c in all_columns if c in timings]
    log_tol = None if tolerance is None else math.log(tolerance)
    pairs, lacking = [], []
    for ra in a_rows:
        for rb in b_rows:
            cols = [c for c in columns if ra.label in timings[c] and rb.label in timings[c]]
            if cols:
                pairs.append((ra, rb, cols))
            else:
                lacking.append(f"{ra.label} vs {rb.label}")
    if not pairs:
        return _not_run(claim, "no column timed " + ", ".join(lacking))
    cells = [timings[c][r.label] for ra, rb, cols in pairs for c in cols for r in (ra, rb)]
    counts = [len(p) if p is not None else 0 for p in map(_passes, cells)]
    timed_cols = [c for c in all_columns if any(c in cols for _, _, cols in pairs)]
    timed_rows = {r for ra, rb, _ in pairs for r in (ra, rb)}
    coverage = Coverage(tuple(_column_label(c) for c in timed_cols), len(all_columns),
                        len(timed_rows), len(set(a_rows + b_rows)))
    note = f"{len(columns)} of {len(all_columns)} columns timed"
    if lacking:
        note += "; not timed: " + ", ".join(lacking)
    comps = []
    if min(counts) >= 2:  # per-pass times: one Welch test per column and pair of rows
        for ra, rb, cols in pairs:
            for c in cols:
                a, b = _passes(timings[c][ra.label]), _passes(timings[c][rb.label])
                label = _column_label(c) + (f" {ra.label}" if len(a_rows) > 1 else "") + \
                    f" vs {rb.label}"
                comps.append(welch(np.log(a), np.log(b), label, log_tol, alpha,
                                   effect=math.log(np.mean(a) / np.mean(b))))
        lo, hi = min(counts), max(counts)
        test = (f"Welch t (scipy ttest_ind, equal_var=False) on log(ms) over the timed passes, "
                f"per column and row of B; n = passes per row ({lo if lo == hi else f'{lo}-{hi}'})"
                f"; effect = ratio of mean times A/B ({note})")
        return _judge(claim, comps, test, "ratio", coverage=coverage)
    for ra, rb, cols in pairs:  # fallback: the columns are the pairs
        x = [math.log(_mean_ms(timings[c][ra.label])) for c in cols]
        y = [math.log(_mean_ms(timings[c][rb.label])) for c in cols]
        label = (f"{ra.label} / " if len(a_rows) > 1 else "") + f"vs {rb.label}"
        comps.append(paired(x, y, label, log_tol, alpha))
    why = ("timings.json holds no per-pass times" if not max(counts)
           else "some cell has fewer than 2 timed passes")
    test = (f"paired t on log(ms) over the columns ({why}: one mean per cell), per row of B; "
            f"n = columns ({_n_text(comps)}); effect = geometric-mean time ratio A/B ({note})")
    return _judge(claim, comps, test, "ratio", coverage=coverage)


# ---------------------------------------------------------------- figures


def evaluate_correlation(claim: Claim, figure: dict | None, alpha: float = ALPHA,
                         source: str = "") -> ClaimResult:
    test = "Spearman rank correlation, two-sided p (as benchmark.analyses.figures computed it)"
    try:
        rho, p, n = float(figure["spearman_rho"]), float(figure["p_value"]), int(figure["n"])
    except (TypeError, KeyError, ValueError):
        return _not_run(claim, f"no figure result ({source or claim.source} is missing or "
                        "unreadable; run reproduce.py --figures)", test)
    # a figure that combines several trained models states its own test (n = models) and the
    # smallest mean rho it detects; an older single-model file is a test over its images
    test = str(figure.get("test") or test)
    mde = figure.get("mde_rho")
    mde = float(mde) if isinstance(mde, int | float) and not isinstance(mde, bool) \
        else min_detectable_rho(n, alpha)
    if n < 2:
        mde = None
    if mde is None or math.isnan(p):
        verdict = "underpowered"
    elif p <= alpha:
        verdict = "reproduced" if rho > 0 else "contradicted"
    else:
        verdict = "underpowered"
    what = figure.get("what", "")
    return ClaimResult(claim, verdict, test=test, n=n, effect=rho, p=p,
                       mde=mde if verdict == "underpowered" else None,
                       detail=f"rho = {rho:.3f} over n = {n}. {what}".strip(), unit="rho",
                       n_text=str(n), effect_text=f"rho = {rho:.3f}", p_text=_fmt_p(p))


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


# ---------------------------------------------------------------- the report


@dataclass
class Section:
    name: str  # table1, figure1
    title: str
    claim_set: ClaimSet
    results: list[ClaimResult] = field(default_factory=list)


@dataclass
class Report:
    name: str  # the spec's name: the files are tables/<name>_claims.{md,html}
    title: str
    caption: str
    sections: list[Section]


def evaluate(claim_set: ClaimSet, spec=None, *, records: list[dict] | None = None,
             timings: dict | None = None, results_dir=".", alpha: float = ALPHA,
             timing_source: str = "timings.json") -> list[ClaimResult]:
    """A result per claim of `claim_set`: log-likelihood claims from `records` (run records),
    timing claims from `timings` ({(dataset, dim): {row label: ms, or the list of per-pass ms}}:
    read_timings), correlations from their `source` file under `results_dir`."""
    best = None
    out = []
    for claim in claim_set.claims:
        family = KINDS[claim.kind]
        if family == "figure":
            out.append(evaluate_correlation(claim, read_json(Path(results_dir) / claim.source),
                                            alpha, source=claim.source))
        elif family == "timing":
            out.append(evaluate_timing(claim, spec, timings, claim_set.tie_tolerance, alpha,
                                       timing_source))
        else:
            if best is None:
                best = best_restarts(records_frame(records or [], getattr(spec, "metric",
                                                                          "test_iwae")))
            out.append(evaluate_loglik(claim, spec, best, claim_set.tie_tolerance, alpha))
    return out


def build_report(spec, claim_set: ClaimSet, *, results_dir, caption: str = "",
                 records: list[dict] | None = None, timings: dict | None = None,
                 timing_source: str = "timings.json", path: Path = CLAIMS_PATH) -> Report:
    """The claims of `claim_set` (for `spec`) and of the entries it names in `with`."""
    sections = [Section(spec.name, spec.title, claim_set,
                        evaluate(claim_set, spec, records=records, timings=timings,
                                 results_dir=results_dir, timing_source=timing_source))]
    for other in claim_set.with_:
        extra = load_claims(other, path)
        title = re.sub(r"^([a-z]+)(\w+)$", lambda m: f"{m[1].title()} {m[2]}", other)
        sections.append(Section(other, title, extra,
                                evaluate(extra, spec, results_dir=results_dir)))
    return Report(spec.name, spec.title, caption, sections)


RULES = (
    "Verdicts at alpha = {alpha}: reproduced = the tests say so at alpha; contradicted = a "
    "test significant at alpha (or a tie shown with enough power, for a claim of strict "
    "superiority) goes against the claim; underpowered = neither, with the smallest effect this "
    "n could detect (two-sided, 80% power). A non-significant difference is a tie only when "
    "that smallest detectable effect is within the tie tolerance ({tol}). Tests between rows of "
    "a log-likelihood table are paired over the splits both rows share; between rows of a timing "
    "table, per column a Welch t-test over the timed passes (for a timings file without "
    "per-pass times, paired over the columns both were timed in; the test column says which). "
    "The rules per kind are in benchmark/analyses/claims.py."
)
HEADERS = ["claim", "test", "n", "effect", "p", "verdict", "detail"]


def _tol_text(sections: list[Section]) -> str:
    parts = []
    for s in sections:
        tol = s.claim_set.tie_tolerance
        if tol is None:
            continue
        kinds = {KINDS[c.kind] for c in s.claim_set.claims}
        parts.append(f"{s.name}: " + (f"a time ratio within x{tol:g}" if "timing" in kinds
                                      else f"{tol:g} nats"))
    return "; ".join(parts) or "none"


def _rows(section: Section) -> tuple[tuple, ...]:
    return tuple((f"{r.claim.text} ({r.claim.id})", r.test, r.n_text or "-", r.effect_text or "-",
                  r.p_text or "-", Marked(r.verdict_text, VERDICT_COLOUR[r.verdict]), r.detail)
                 for r in section.results)


def _sources(section: Section) -> list[str]:
    return [f"{c.id}: \"{c.quote}\" ({c.where})" for c in section.claim_set.claims]


def _intro(report: Report) -> str:
    tol = _tol_text(report.sections)
    return (f"The paper's claims about {report.title.split('.')[0]}"
            + "".join(f" and {s.title}" for s in report.sections[1:])
            + ", each tested on our runs. " + RULES.format(alpha=ALPHA, tol=tol))


def _counts(report: Report) -> str:
    """The headline: how many claims are decided and on what part of the paper's table, then the
    verdicts. A claim decided on some of its columns (or rows) counts as decided only there."""
    results = [r for s in report.sections for r in s.results]
    decided = [r for r in results if r.decided]
    whole = sum(r.complete for r in decided)
    columns = sorted({c for r in decided if r.coverage for c in r.coverage.columns})
    where = f" ({', '.join(columns)})" if columns else ""
    head = (f"{len(results)} claims: {len(decided)} decided on the columns run{where}, "
            f"{whole} on all the claim's columns and rows")
    parts = [f"{sum(r.verdict == v for r in results)} {v}" for v in VERDICT_COLOUR
             if any(r.verdict == v for r in results)]
    return head + "; " + ", ".join(parts)


def blocks(report: Report) -> list[Block]:
    """The report as a document (benchmark.render writes it as Markdown and HTML)."""
    out = [Block("p", _intro(report))]
    if report.caption:
        out.append(Block("p", report.caption))
    out.append(Block("strong", _counts(report)))
    for i, s in enumerate(report.sections):
        if i:
            out.append(Block("heading", s.title))
        out += [Block("table", headers=tuple(HEADERS), rows=_rows(s)),
                Block("p", "The paper's words:"), Block("list", items=tuple(_sources(s)))]
    return out


def to_markdown(report: Report) -> str:
    return document_markdown(f"{report.title}: the paper's claims", blocks(report))


def to_html(report: Report) -> str:
    return document_html(f"{report.title}: the paper's claims", blocks(report))


def write_report(report: Report, tables_dir) -> list[Path]:
    """tables/<name>_claims.{md,html}."""
    paths = []
    for suffix, write in (("md", to_markdown), ("html", to_html)):
        path = Path(tables_dir) / f"{report.name}_claims.{suffix}"
        write_text_atomic(path, write(report))
        paths.append(path)
    return paths
