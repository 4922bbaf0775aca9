"""Statistics for a handful of seeds: means, spreads, confidence intervals and what they can resolve.

A stage-2 score is one draw from a noisy process: a different seed (initialisation, batch order,
augmentation) gives a different mIoU, often by a point or more. With 1–3 seeds per setting the question is
never just "which mean is higher?" but "is the difference larger than the noise?". This module answers it
with the textbook tools, written out so a student can follow them:

* :func:`mean_std`: the mean and *sample* standard deviation (ddof=1) of per-seed scores.
* :func:`ttest`: Welch's t-test p-value between two groups of per-seed scores.
* :func:`difference_ci`: the difference of two means with its Welch confidence interval.
* :func:`resolvable_difference`: how large a true difference must be before n seeds reliably show it.
* :func:`describe_difference` and :func:`format_score`: the same numbers as sentences for a notebook.

**A confidence interval**, at level 95 %, is a range computed from the data by a recipe that, over many
repetitions of the whole experiment, covers the true difference 95 % of the time. It is *not* a 95 %
probability that this particular interval holds the truth; it says how far the observed difference could
plausibly be from the true one. If the interval excludes 0, the sign of the difference is *resolved*: the
data are hard to explain by seed noise alone (equivalently, Welch's two-tailed p < 1 − level).

**Why three seeds resolve only large differences.** The interval's half-width is ``t · se``, with the
standard error ``se = sqrt(s_a²/n_a + s_b²/n_b)`` and ``t`` a quantile of Student's t distribution with few
degrees of freedom. With 3 seeds per side there are at most 4 degrees of freedom, so ``t`` is about 2.8
(not the 1.96 of large samples), and ``se`` is about 0.8 × the per-seed std. A per-seed std of 1 point
therefore gives a half-width of about 2.3 points: smaller differences are "not resolved", which means
*unknown*, not *absent*. :func:`resolvable_difference` turns this around into a planning number.

Non-finite values (None, NaN, ±inf: a failed or missing run) are skipped everywhere, as :func:`mean_std`
does, and every group size reported is the number of values actually used.

>>> mean_std([0.50, 0.52, 0.54])["std"]  # doctest: +ELLIPSIS
0.0200...
>>> describe_difference("ARML − baseline", [0.72, 0.70, 0.71], [0.70, 0.69, 0.69])
'ARML − baseline = +1.7 points, 95 % CI [−0.4, 3.7]: not resolved with 3 seeds'
>>> format_score(0.453, 0.012, 3), format_score(0.453, 0.0, 1)
('45.3 ± 1.2', '45.3 (single run)')
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np

__all__ = [
    "describe_difference",
    "difference_ci",
    "format_score",
    "mean_std",
    "resolvable_difference",
    "ttest",
]


def mean_std(values) -> dict[str, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value) of finite values."""
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if arr.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {
        "mean": float(arr.mean()),
        "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        "n": int(arr.size),
    }


def ttest(a, b) -> float:
    """Two-tailed Welch t-test p-value between two groups of per-seed scores (NaN if undefined)."""
    from scipy import stats

    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.size < 2 or b.size < 2:
        return float("nan")
    scale = max(np.abs(a).max(), np.abs(b).max(), 1.0)
    if np.ptp(a) <= 1e-9 * scale and np.ptp(b) <= 1e-9 * scale:
        return float("nan")  # no spread in either group: the t statistic is undefined
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def _finite(values, name: str) -> np.ndarray:
    """The finite values of a group of per-seed scores (None, NaN and ±inf skipped); a bare number is one
    seed."""
    if values is None or isinstance(values, Real):
        values = [values]
    try:
        kept = [float(v) for v in values if v is not None and math.isfinite(v)]
    except TypeError as err:
        raise TypeError(f"{name} must be a sequence of numbers (per-seed scores), got {values!r}") from err
    return np.asarray(kept, dtype=float)


def _check_fraction(value: float, name: str) -> None:
    if not 0 < value < 1:
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {value!r}")


def _no_spread(a: np.ndarray, b: np.ndarray) -> bool:
    """True when neither group varies (up to rounding): the same test as :func:`ttest`."""
    scale = max(np.abs(a).max(), np.abs(b).max(), 1.0)
    return bool(np.ptp(a) <= 1e-9 * scale and np.ptp(b) <= 1e-9 * scale)


def difference_ci(a, b, level: float = 0.95) -> dict:
    """The difference of means ``mean(a) − mean(b)`` of per-seed scores, with Welch's confidence interval.

    Welch's interval does not assume both groups share one variance (two methods often differ in how much
    they vary across seeds). With sample variances ``s²`` and sizes ``n``::

        se = sqrt(s_a²/n_a + s_b²/n_b)                                   standard error of the difference
        df = se⁴ / ((s_a²/n_a)²/(n_a−1) + (s_b²/n_b)²/(n_b−1))           Welch–Satterthwaite
        [low, high] = diff ∓ t_{(1+level)/2, df} · se

    ``df`` is usually not an integer and lies between ``min(n_a, n_b) − 1`` and ``n_a + n_b − 2``: the
    fewer the seeds, the smaller ``df`` and the wider the interval, on top of the larger ``se``.

    Args:
        a, b: per-seed scores of the two settings (any unit; None and non-finite values are skipped).
        level: the confidence level, strictly between 0 and 1.

    Returns:
        ``diff``, ``low``, ``high``, ``p`` (Welch's two-tailed p-value, as :func:`ttest`), ``df``, ``n_a``,
        ``n_b``, ``level`` and ``resolved`` (True iff the interval excludes 0, i.e. ``p < 1 − level``).

        **Undefined cases** do not raise: with fewer than 2 values in either group (a single run has no
        spread to estimate the noise from), or with no spread in both groups (se = 0), ``low``, ``high``,
        ``p`` and ``df`` are NaN and ``resolved`` is False; ``diff`` is still the difference of the means
        (NaN if a group has no finite value at all).

    >>> r = difference_ci([1, 2, 3], [1, 2, 3])
    >>> r["diff"], r["low"] == -r["high"], r["resolved"]
    (0.0, True, False)
    """
    _check_fraction(level, "level")
    a, b = _finite(a, "a"), _finite(b, "b")
    nan = float("nan")
    diff = float(a.mean() - b.mean()) if a.size and b.size else nan
    out = {"diff": diff, "low": nan, "high": nan, "p": nan, "df": nan}
    out |= {"n_a": int(a.size), "n_b": int(b.size), "level": float(level), "resolved": False}
    if a.size < 2 or b.size < 2 or _no_spread(a, b):
        return out
    from scipy import stats

    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size  # squared standard errors of each mean
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    half = float(stats.t.ppf((1 + level) / 2, df)) * se
    out |= {"low": diff - half, "high": diff + half, "p": ttest(a, b), "df": float(df)}
    out["resolved"] = bool(out["low"] > 0 or out["high"] < 0)
    return out


def resolvable_difference(std: float, n: int, level: float = 0.95, power: float = 0.8) -> float:
    """The smallest true difference that two groups of ``n`` seeds each reliably detect.

    "Reliably" means: if the two settings truly differ by this much, a two-sided test at confidence
    ``level`` finds the difference (its interval excludes 0) in a fraction ``power`` of repeated
    experiments. Smaller true differences are missed more often than that, so a "not resolved" verdict on
    them says little: it means *unknown*, not *absent*.

    Computed with the usual normal approximation to the power of a two-sample t-test, with the normal
    quantiles replaced by Student's t quantiles on ``df = 2n − 2`` (equal std in both groups)::

        (t_{1−α/2, df} + t_{power, df}) · std · sqrt(2/n),    α = 1 − level

    It is a planning number, slightly optimistic for very small ``n``: with a per-seed std of 1 point,
    3 seeds resolve about 3.0 points, 5 seeds about 2.0, 10 seeds about 1.3: the width shrinks only like
    ``1/sqrt(n)`` once ``t`` settles near its large-sample value.

    Args:
        std: the per-seed standard deviation (e.g. :func:`mean_std`'s ``std``; same unit as the result).
        n: seeds per group.
        level, power: strictly between 0 and 1.

    Returns:
        The difference in the unit of ``std``; ``inf`` for ``n < 2`` (one seed cannot estimate the noise),
        NaN for a NaN std.

    >>> round(resolvable_difference(1.0, 3), 2), resolvable_difference(1.0, 1)
    (3.04, inf)
    """
    _check_fraction(level, "level")
    _check_fraction(power, "power")
    if std is None or math.isnan(std):
        return float("nan")
    if std < 0:
        raise ValueError(f"std must be non-negative, got {std!r}")
    if n < 2:
        return math.inf
    from scipy import stats

    df = 2 * n - 2
    t = stats.t.ppf(1 - (1 - level) / 2, df) + stats.t.ppf(power, df)
    return float(t * std * math.sqrt(2 / n))


def _num(x: float, digits: int = 1, sign: bool = False) -> str:
    """A number for text: fixed digits, a real minus sign (−), no "-0.0"."""
    x = round(float(x), digits) + 0.0  # + 0.0 turns -0.0 into 0.0
    text = f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"
    return text.replace("-", "−")


def describe_difference(label: str, a, b, unit: float = 100, paper: float | None = None) -> str:
    """One sentence on ``mean(a) − mean(b)``, generated from :func:`difference_ci` at 95 %.

    Args:
        label: what is compared, e.g. ``"ARML − baseline"``.
        a, b: per-seed scores (fractions, like ``results/*.json``); None and non-finite values skipped.
        unit: factor to the printed unit; the default 100 turns fractions into (percentage) points, and only
            then is the word "points" written.
        paper: the paper's difference for the same comparison, already in the printed unit (the paper's
            tables print percent, e.g. ``TABLE2["full"]["miou"][0] - TABLE2["baseline"]["miou"][0]``).

    >>> describe_difference("ARML − baseline", [0.723], [0.700], paper=1.9)
    'ARML − baseline = +2.3 points (single runs: no interval) (paper: +1.9)'
    """
    r = difference_ci(a, b)
    words = " points" if unit == 100 else ""
    tail = f" (paper: {_num(paper, sign=True)})" if paper is not None else ""
    if math.isnan(r["diff"]):
        side = "either side" if r["n_a"] == r["n_b"] == 0 else ("a" if r["n_a"] == 0 else "b")
        return f"{label}: no finite score for {side}, nothing to compare{tail}"
    head = f"{label} = {_num(unit * r['diff'], sign=True)}{words}"
    if r["n_a"] < 2 or r["n_b"] < 2:
        why = "single runs" if r["n_a"] == r["n_b"] == 1 else f"{r['n_a']} and {r['n_b']} seeds"
        return f"{head} ({why}: no interval){tail}"
    seeds = f"{r['n_a']} seeds" if r["n_a"] == r["n_b"] else f"{r['n_a']} and {r['n_b']} seeds"
    if math.isnan(r["low"]):
        return f"{head} (no spread across {seeds}: no interval){tail}"
    ci = f"[{_num(unit * r['low'])}, {_num(unit * r['high'])}]"
    verdict = "resolved" if r["resolved"] else "not resolved"
    return f"{head}, {round(100 * r['level'])} % CI {ci}: {verdict} with {seeds}{tail}"


def format_score(mean: float, std: float, n: int, unit: float = 100, digits: int = 1) -> str:
    """A score for a table or a title: ``"45.3 ± 1.2"``; ``"45.3 (single run)"`` when ``n == 1``.

    Never prints "± 0.0", which would claim a measured spread of zero: one run has no spread to measure, a
    spread that rounds away is printed as ``"± <0.1"``, and several identical runs as ``"(3 runs, no
    spread)"``. A missing score (no runs, NaN mean) is ``"n/a"``.

    Args:
        mean, std: as :func:`mean_std` returns them (fractions by default).
        n: the number of runs behind the mean.
        unit: factor to the printed unit (100: fractions to percent).
        digits: decimals printed.
    """
    if n < 1 or mean is None or not math.isfinite(mean):
        return "n/a"
    text = _num(unit * mean, digits)
    if n == 1:
        return f"{text} (single run)"
    if std is None or not math.isfinite(std):
        return f"{text} ({n} runs, spread unknown)"
    if std == 0:
        return f"{text} ({n} runs, no spread)"
    spread = _num(unit * std, digits)
    if float(spread) == 0:
        return f"{text} ± <{10.0**-digits:.{digits}f}"
    return f"{text} ± {spread}"
