"""
The statistics behind every verdict of the lab: a claim "A beats B" is judged on the paired
per-seed differences A - B of one metric on the held-out test split.

For each claim: the per-seed differences, their mean, the one-sided 95% t lower bound (and upper
bound), the one-sided paired t p-value (H1: mean > 0) and the exact one-sided sign-test p-value
(ties dropped). Across the claims of one study, Holm's step-down correction of the t p-values.

Verdicts:

- "supported": Holm's correction rejects "mean <= 0" at ``ALPHA``;
- "contradicted": the one-sided 95% upper bound is below 0;
- "inconclusive": neither;
- None (no verdict): fewer than ``MIN_SEEDS`` paired seeds, or a smoke run.

A claim may carry a goal (an effect size the project aims at, e.g. +3 box AP): the mean is reported
against it beside the test; the test itself is against 0.
"""
import math
import statistics
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence

__all__ = ["ALPHA", "MIN_SEEDS", "PairedTest", "holm", "judge", "paired_test", "verdict"]

ALPHA = 0.05
MIN_SEEDS = 5


@dataclass(frozen=True)
class PairedTest:
    """One-sided paired test of ``mean(differences) > 0``."""

    n: int
    mean: float
    sd: float
    lower: float  # one-sided (1 - alpha) lower confidence bound of the mean
    upper: float  # one-sided (1 - alpha) upper confidence bound of the mean
    p_t: float  # one-sided paired t p-value
    p_sign: float  # exact one-sided sign-test p-value, ties dropped


def paired_test(differences: Sequence[float], alpha: float = ALPHA) -> PairedTest:
    """The one-sided paired t test and sign test of ``differences`` (n >= 2)."""
    from scipy import stats

    values = [float(d) for d in differences]
    n = len(values)
    if n < 2:
        raise ValueError(f"paired_test: needs at least 2 paired differences, got {n}")
    mean = statistics.mean(values)
    sd = statistics.stdev(values)
    se = sd / math.sqrt(n)
    quantile = float(stats.t.ppf(1 - alpha, n - 1))
    if se == 0:  # every difference equal: the bound is the mean itself
        p_t = 0.0 if mean > 0 else 1.0
    else:
        p_t = float(stats.t.sf(mean / se, n - 1))
    positive = sum(d > 0 for d in values)
    nonzero = sum(d != 0 for d in values)
    p_sign = float(stats.binomtest(positive, nonzero, 0.5, alternative="greater").pvalue) \
        if nonzero else 1.0
    return PairedTest(n, mean, sd, mean - quantile * se, mean + quantile * se, p_t, p_sign)


def holm(p_values: Mapping[str, float]) -> Dict[str, float]:
    """Holm's step-down adjusted p-values (monotone, capped at 1), by claim name."""
    order = sorted(p_values, key=lambda name: p_values[name])
    m = len(order)
    adjusted, running = {}, 0.0
    for rank, name in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[name]))
        adjusted[name] = running
    return adjusted


def verdict(test: Optional[PairedTest], p_holm: Optional[float], alpha: float = ALPHA,
            min_seeds: int = MIN_SEEDS) -> Optional[str]:
    """"supported", "contradicted", "inconclusive", or None below ``min_seeds`` seeds."""
    if test is None or p_holm is None or test.n < min_seeds:
        return None
    if p_holm < alpha:
        return "supported"
    if test.upper < 0:
        return "contradicted"
    return "inconclusive"


def judge(differences: Mapping[str, Sequence[float]], smoke: bool = False,
          alpha: float = ALPHA, min_seeds: int = MIN_SEEDS) -> Dict[str, Dict]:
    """
    Every claim of one study judged together: ``differences`` maps a claim's name to its paired
    per-seed differences. Returns, per claim, the test's numbers, the Holm-adjusted p-value and
    the verdict (None for a smoke run or fewer than ``min_seeds`` seeds, with ``why``).
    """
    tests = {name: paired_test(d, alpha) for name, d in differences.items() if len(d) >= 2}
    adjusted = holm({name: t.p_t for name, t in tests.items()})
    out = {}
    for name, d in differences.items():
        test = tests.get(name)
        said = None if smoke else verdict(test, adjusted.get(name), alpha, min_seeds)
        why = None
        if said is None:
            why = "smoke run" if smoke else f"{len(d)} seed(s); a verdict needs at least {min_seeds}"
        out[name] = {"n": len(d), "differences": [float(x) for x in d],
                     **({} if test is None else {
                         "mean": test.mean, "sd": test.sd, "lower_95": test.lower,
                         "upper_95": test.upper, "p_t": test.p_t, "p_sign": test.p_sign,
                         "p_holm": adjusted[name]}),
                     "verdict": said, "no_verdict_because": why}
    return out


def describe(outcome: Dict) -> str:
    """The verdict cell of a table: the verdict, or why there is none."""
    return outcome["verdict"] or f"no verdict ({outcome['no_verdict_because']})"


def format_p(p: Optional[float]) -> str:
    if p is None:
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def claim_cells(outcome: Dict, digits: int = 1) -> List[str]:
    """Table cells of one judged claim: per-seed differences, mean, lower bound, t p-value,
    Holm p-value, sign-test p-value, verdict."""
    per_seed = ", ".join(f"{d:+.{digits}f}" for d in outcome["differences"])
    if "mean" not in outcome:
        mean = f"{outcome['differences'][0]:+.{digits}f}" if outcome["differences"] else "n/a"
        return [per_seed, mean, "n/a", "n/a", "n/a", "n/a", describe(outcome)]
    return [per_seed, f"{outcome['mean']:+.{digits}f}", f"{outcome['lower_95']:+.{digits}f}",
            format_p(outcome["p_t"]), format_p(outcome["p_holm"]), format_p(outcome["p_sign"]),
            describe(outcome)]


CLAIM_COLUMNS = ("per seed", "mean", "95% lower bound", "p (t)", "p (Holm)", "p (sign)", "verdict")
