"""Stratified estimates of a proportion with a 95 % interval (numpy only, vectorised).

Estimator (Cochran, *Sampling Techniques*, 3rd ed. 1977, ch. 5, stratified random sampling, the
estimate of a proportion): p = sum_h W_h p_h with W_h = N_h / N, p_h = x_h / n_h, and its
textbook variance v = sum_h W_h^2 (1 - f_h) p_h q_h / (n_h - 1) (f_h = n_h / N_h).

Interval: Wilson's score interval (Wilson 1927) at the effective sample size
n_eff = p~ q~ / v~ (Korn & Graubard 1998, Survey Methodology 24:193-201), with Student's t at
n - H degrees of freedom in place of z. v~ and p~ use per-stratum proportions shrunk by half a
label, (x_h + 1/2) / (n_h + 1), so a stratum whose labels are all 0 (or all 1) still counts as
uncertain: without it, zero positives in the big low-score stratum would give a far too narrow
interval. With one stratum this is exactly Wilson's interval at n (times the finite-population
correction). Precision and recall: `ratio_share`. Every argument may carry leading axes (many
simulated data sets at once).
"""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile


def t_quantile(df, z: float = Z95):
    """Student's t quantile matching normal quantile z at df degrees of freedom: exact for 1 and
    2, else the Cornish-Fisher expansion (Abramowitz & Stegun 26.7.5; within 0.2 % for df >= 3)."""
    df = np.asarray(df, np.float64)
    a = 0.5 * (1 + math.erf(z / math.sqrt(2)))
    with np.errstate(divide="ignore", invalid="ignore"):
        g1 = (z ** 3 + z) / 4
        g2 = (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96
        g3 = (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384
        g4 = (79 * z ** 9 + 776 * z ** 7 + 1482 * z ** 5 - 1920 * z ** 3 - 945 * z) / 92160
        series = z + g1 / df + g2 / df ** 2 + g3 / df ** 3 + g4 / df ** 4
    exact = np.where(df <= 1, math.tan(math.pi * (a - 0.5)), (2 * a - 1) / math.sqrt(2 * a * (1 - a)))
    return np.where(df < 3, exact, series)


def wilson(p, n, z):
    """Wilson's score interval (low, high) for proportion p observed on n (possibly effective) trials."""
    p, n, z = (np.asarray(v, np.float64) for v in (p, n, z))
    with np.errstate(divide="ignore", invalid="ignore"):
        k = z * z / n
        centre = (p + k / 2) / (1 + k)
        half = z * np.sqrt(p * (1 - p) / n + k / (4 * n)) / (1 + k)
    return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)


def stratified(N, n, x, z: float = Z95) -> dict:
    """Stratified estimate of a proportion from N_h (stratum sizes), n_h (labelled rows) and
    x_h (positives among them), arrays [..., H]. Returns arrays [...]: estimate, low, high,
    se (Cochran's; nan where a stratum has one label), n_eff, labels, positives, and ok (False:
    too few labels, a stratum with rows but no labels or fewer than 1 degree of freedom)."""
    N, n, x = (np.asarray(v, np.float64) for v in (N, n, x))
    present = N > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        W = N / N.sum(-1, keepdims=True)
        f = np.where(present, n / N, 1.0)
        p_h = np.where(n > 0, x / n, 0.0)
        estimate = (W * p_h).sum(-1)
        textbook = np.where(present & (f < 1), W ** 2 * (1 - f) * p_h * (1 - p_h) / (n - 1), 0.0)
        shrunk = (x + 0.5) / (n + 1)
        var = np.where(present & (n > 0), W ** 2 * (1 - f) * shrunk * (1 - shrunk) / n, 0.0).sum(-1)
        p_s = (W * shrunk).sum(-1)
        n_eff = p_s * (1 - p_s) / var
    strata = present.sum(-1)
    df = n.sum(-1) - strata
    ok = (~present | (n > 0)).all(-1) & (df >= 1) & (N.sum(-1) > 0)
    low, high = wilson(estimate, n_eff, t_quantile(np.maximum(df, 1), z))
    se = np.sqrt(textbook.sum(-1))
    se = np.where((present & (n < 2) & (f < 1)).any(-1), np.nan, se)
    return {"estimate": np.where(ok, estimate, np.nan), "low": np.where(ok, low, np.nan),
            "high": np.where(ok, high, np.nan), "se": np.where(ok, se, np.nan), "n_eff": n_eff,
            "labels": n.sum(-1), "positives": x.sum(-1), "ok": ok}


def ratio_share(N, n, in_domain, hits, z: float = Z95) -> dict:
    """The share of a domain's rows that are hits, as the combined ratio estimate R = Y / X
    (Cochran 1977, 6.11): precision, where the domain is the flagged rows and a hit a true
    positive; recall, where the domain is the truly positive rows and a hit a flagged one.
    Per stratum: n_h labelled rows, d_h of them in the domain, h_h of those hits. Variance by
    linearisation, v = sum_h W_h^2 (1 - f_h) s2_h / n_h / X^2 with s2_h the sample variance of
    y - R x; as in `stratified`, the hit share within each stratum's domain is shrunk by half a
    label for the effective sample size, and df = domain labels - strata with domain labels."""
    N, n, d, b = (np.asarray(v, np.float64) for v in (N, n, in_domain, hits))
    with np.errstate(divide="ignore", invalid="ignore"):
        W = N / N.sum(-1, keepdims=True)
        f = np.where(N > 0, n / N, 1.0)
        share = lambda counts: (W * np.where(n > 0, counts / n, 0.0)).sum(-1)
        X = share(d)
        estimate = share(b) / X
        b_s = d * (b + 0.5) / (d + 1)  # shrunk hits
        r_s = share(b_s) / X
        total = b_s - r_s[..., None] * d  # sum of y - R x in the stratum
        squares = b_s * (1 - r_s[..., None]) ** 2 + (d - b_s) * r_s[..., None] ** 2
        s2 = (squares - total ** 2 / np.maximum(n, 1)) / np.maximum(n - 1, 1)
        var = np.where(n > 0, W ** 2 * (1 - f) * s2 / n, 0.0).sum(-1) / X ** 2
        n_eff = r_s * (1 - r_s) / var
    df = d.sum(-1) - (d > 0).sum(-1)
    ok = ((N == 0) | (n > 0)).all(-1) & (df >= 1) & (X > 0)
    low, high = wilson(estimate, n_eff, t_quantile(np.maximum(df, 1), z))
    return {"estimate": np.where(ok, estimate, np.nan), "low": np.where(ok, low, np.nan),
            "high": np.where(ok, high, np.nan), "se": np.where(ok, np.sqrt(var), np.nan), "n_eff": n_eff,
            "labels": d.sum(-1), "positives": b.sum(-1), "ok": ok}


def as_number(value) -> float | None:
    """A float for JSON, None for nan."""
    value = float(value)
    return None if math.isnan(value) else value
