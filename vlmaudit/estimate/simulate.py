"""Coverage check of the estimator on simulated audits with known truth (`python -m
vlmaudit.estimate.simulate` prints the table README quotes; tests/estimate/test_estimate_stats.py asserts it).

Each simulated data set has N samples whose top score is drawn from a Beta distribution; the true
label of each sample is drawn from its score (informative scores: P(unsafe) = score) or from the
mean score (uninformative). The sample is drawn exactly as `vlmaudit sample` draws it (the same
binning, strata cuts and allocation; within a stratum the rows with the smallest random keys),
and the interval computed as `vlmaudit estimate` computes it. Simple random sampling of the same
size, with Wilson's interval, is the baseline. All data sets of a scenario are processed at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vlmaudit.estimate.design import BINS, allocate, bin_of, cut_bins
from vlmaudit.estimate.stats import ratio_share, stratified


@dataclass
class Scenario:
    name: str
    a: float  # Beta(a, b) scores
    b: float
    size: int = 400
    informative: bool = True
    population: int = 20_000
    datasets: int = 200
    bands: int = 5
    threshold: float = 0.2  # flags for precision / recall: score >= threshold


SCENARIOS = (
    Scenario("informative scores, ~6 % prevalence", 0.5, 8.0),
    Scenario("informative scores, ~0.5 % prevalence", 0.1, 20.0),
    Scenario("informative scores, n = 100", 0.5, 8.0, size=100),
    Scenario("uninformative scores, ~6 % prevalence", 0.5, 8.0, informative=False),
)


def _design(bins, scores, sc: Scenario):
    """Per data set: stratum of each bin, stratum sizes and draws (the sampler's own functions)."""
    D = len(bins)
    flat = bins + BINS * np.arange(D)[:, None]
    counts = np.bincount(flat.ravel(), minlength=D * BINS).reshape(D, BINS)
    sums = np.bincount(flat.ravel(), scores.ravel().astype(np.float64), D * BINS).reshape(D, BINS)
    of_bin = np.zeros((D, BINS), np.int64)
    N, n = np.zeros((D, sc.bands)), np.zeros((D, sc.bands), np.int64)
    for d in range(D):
        cuts = cut_bins(counts[d], sc.bands)
        for h, (lo, hi) in enumerate(cuts):
            of_bin[d, lo:hi] = h
        rows = np.array([counts[d, lo:hi].sum() for lo, hi in cuts])
        means = np.array([sums[d, lo:hi].sum() for lo, hi in cuts]) / rows
        N[d, :len(cuts)], n[d, :len(cuts)] = rows, allocate(rows, means, sc.size)
    return of_bin, N, n


def _draw(stratum, u, N, n):
    """Which rows are drawn: per data set and stratum, the n_h rows with the smallest u."""
    D, size = stratum.shape
    order = np.argsort(stratum + u, axis=1)
    ranked = np.take_along_axis(stratum, order, 1)
    start = np.concatenate([np.zeros((D, 1)), np.cumsum(N, 1)[:, :-1]], 1).astype(np.int64)
    rank = np.arange(size)[None, :] - np.take_along_axis(start, ranked, 1)
    chosen = np.zeros_like(stratum, bool)
    np.put_along_axis(chosen, order, rank < np.take_along_axis(n, ranked, 1), 1)
    return chosen


def run(sc: Scenario, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    D, P = sc.datasets, sc.population
    scores = rng.beta(sc.a, sc.b, (D, P)).astype(np.float32)
    chance = scores if sc.informative else np.broadcast_to(scores.mean(1, keepdims=True), scores.shape)
    truth = rng.random((D, P)) < chance
    bins = bin_of(scores)
    of_bin, N, n = _design(bins, scores, sc)
    stratum = np.take_along_axis(of_bin, bins, 1)
    u = rng.random((D, P))
    chosen = _draw(stratum, u, N, n)
    H = sc.bands
    flat = (stratum + H * np.arange(D)[:, None])[chosen & truth]
    x = np.bincount(flat, minlength=D * H).reshape(D, H)
    strat = stratified(N, n, x)
    srs_rows = np.argsort(u, 1)[:, : sc.size]
    srs = stratified(np.full((D, 1), P), np.full((D, 1), sc.size),
                     np.take_along_axis(truth, srs_rows, 1).sum(1, keepdims=True))
    prevalence = truth.mean(1)
    covered = lambda r, t=prevalence: float(np.mean((r["low"] <= t) & (t <= r["high"])))
    out = {"scenario": sc.name, "datasets": D, "size": sc.size, "prevalence": float(prevalence.mean()),
           "coverage": covered(strat), "coverage_srs": covered(srs),
           "width": float(np.nanmean(strat["high"] - strat["low"])), "width_srs": float(np.nanmean(srs["high"] - srs["low"])),
           "with_interval": float(np.mean(strat["ok"]))}
    return out | _precision_recall(scores >= sc.threshold, truth, stratum, chosen, N, n, H)


def _precision_recall(flags, truth, stratum, chosen, N, n, H: int) -> dict:
    """Coverage of the precision and recall intervals, among the data sets that get one."""
    D = len(flags)
    offset = stratum + H * np.arange(D)[:, None]
    count = lambda mask: np.bincount(offset[chosen & mask], minlength=D * H).reshape(D, H)
    hits = (flags & truth).sum(1)
    out = {}
    for name, domain in (("precision", flags), ("recall", truth)):
        r = ratio_share(N, n, count(domain), count(flags & truth))
        with np.errstate(invalid="ignore", divide="ignore"):
            true = hits / domain.sum(1)
        ok = r["ok"]
        out[f"{name}_coverage"] = float(np.mean((r["low"][ok] <= true[ok]) & (true[ok] <= r["high"][ok])))
        out[f"{name}_with_interval"] = float(ok.mean())
    return out


def main() -> None:
    print("| scenario | data sets | n | mean prevalence | coverage (stratified) | coverage (SRS) | mean width (stratified) "
          "| mean width (SRS) | precision coverage | recall coverage |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for sc in SCENARIOS:
        r = run(sc)
        print(f"| {r['scenario']} | {r['datasets']} | {r['size']} | {r['prevalence']:.2%} | {r['coverage']:.1%} | "
              f"{r['coverage_srs']:.1%} | {r['width']:.2%} | {r['width_srs']:.2%} | "
              f"{r['precision_coverage']:.1%} ({r['precision_with_interval']:.0%}) | "
              f"{r['recall_coverage']:.1%} ({r['recall_with_interval']:.0%}) |")


if __name__ == "__main__":
    main()
