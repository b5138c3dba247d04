"""The prevalence statistics against known truth (simulated audits) and a hand-computed case;
the sampler's strata, allocation and draw; the package imports without torch."""

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest

from vlmaudit.estimate import design, simulate
from vlmaudit.estimate.stats import ratio_share, stratified, t_quantile, wilson


def test_hand_computed_stratified_estimate():
    # Two strata: N = 800, 200; 10 labels each; 1 and 5 positives.
    # W = 0.8, 0.2; p_h = 0.1, 0.5; p = 0.8 * 0.1 + 0.2 * 0.5 = 0.18
    # Cochran: v = 0.64 * (1 - 10/800) * 0.1 * 0.9 / 9 + 0.04 * (1 - 10/200) * 0.25 / 9
    #            = 0.00632 + 0.0010556 = 0.0073756; se = 0.085881
    # shrunk p~_h = 1.5/11, 5.5/11 = 0.136364, 0.5
    # v~ = 0.632 * 0.136364 * 0.863636 / 10 + 0.038 * 0.25 / 10 = 0.0074430 + 0.00095 = 0.0083930
    # p~ = 0.8 * 0.136364 + 0.2 * 0.5 = 0.209091; n_eff = 0.209091 * 0.790909 / 0.0083930 = 19.7035
    # t(0.975, df = 20 - 2) = 2.100922; Wilson at (0.18, 19.7035): centre 0.238565, half 0.174480
    r = stratified([800, 200], [10, 10], [1, 5])
    assert r["ok"] and r["labels"] == 20 and r["positives"] == 6
    assert r["estimate"] == pytest.approx(0.18)
    assert r["se"] == pytest.approx(0.085881, abs=2e-6)
    assert r["n_eff"] == pytest.approx(19.7035, abs=2e-4)
    assert r["low"] == pytest.approx(0.064085, abs=2e-6)
    assert r["high"] == pytest.approx(0.413045, abs=2e-6)


def test_one_stratum_is_wilsons_interval_with_the_finite_population_correction():
    low, high = wilson(0.1, 100 / (1 - 100 / 1000), t_quantile(99))
    r = stratified([1000], [100], [10])
    assert (r["low"], r["high"]) == pytest.approx((low, high))
    # Wilson (1927) by hand for 10 of 100 at z = 1.96: 0.0552 to 0.1744
    assert wilson(0.1, 100, 1.96) == pytest.approx((0.05522, 0.17436), abs=1e-4)


@pytest.mark.parametrize("df, table", [(1, 12.7062), (2, 4.3027), (3, 3.1824), (5, 2.5706), (10, 2.2281),
                                       (30, 2.0423), (120, 1.9799)])
def test_t_quantiles_match_the_tables(df, table):
    assert float(t_quantile(df)) == pytest.approx(table, rel=2e-3)


def test_a_stratum_without_labels_or_too_few_labels_gives_no_interval():
    assert not stratified([800, 200], [10, 0], [1, 0])["ok"]
    assert not stratified([800], [1], [0])["ok"]  # no degree of freedom
    assert stratified([800, 1], [10, 1], [0, 1])["ok"]  # a census stratum of one row is fine
    r = stratified([800, 200], [10, 10], [0, 0])
    assert r["estimate"] == 0 and r["high"] > 0.1  # zero positives still leaves doubt


def test_all_zero_low_stratum_widens_the_interval():
    """A big low-score stratum with no positives in its labels must keep the upper bound up."""
    r = stratified([9000, 100], [50, 50], [0, 25])
    assert r["estimate"] == pytest.approx(0.5 * 100 / 9100)
    assert r["high"] > 0.05  # 0 of 50 in 99 % of the data: up to ~7 % is plausible there


def test_hand_computed_ratio_estimate_for_precision():
    # Same strata; flagged labelled rows d = 4, 10, of which truly positive 3, 5.
    # X = 0.8 * 0.4 + 0.2 * 1.0 = 0.52; Y = 0.8 * 0.3 + 0.2 * 0.5 = 0.34; R = 0.34 / 0.52 = 0.653846
    # shrunk hits d (b + 1/2) / (d + 1) = 2.8, 5.0; R~ = (0.8 * 0.28 + 0.2 * 0.5) / 0.52 = 0.623077
    # stratum 1: sum(y - R~x) = 2.8 - 4 R~ = 0.307692; sum of squares = 2.8 (1 - R~)^2 + 1.2 R~^2 = 0.863669
    #            s2 = (0.863669 - 0.307692^2 / 10) / 9 = 0.094911
    # stratum 2: sum = 5 - 10 R~ = -1.230769; squares = 5 (1 - R~)^2 + 5 R~^2 = 2.651479; s2 = 2.5 / 9
    # v = (0.632 * 0.094911 / 10 + 0.038 * 0.277778 / 10) / 0.52^2 = 0.0260871
    # n_eff = R~ (1 - R~) / v = 9.00263; t(0.975, 14 - 2) = 2.178813; Wilson at (0.653846, 9.00263)
    r = ratio_share([800, 200], [10, 10], [4, 10], [3, 5])
    assert r["ok"] and r["labels"] == 14 and r["positives"] == 8
    assert r["estimate"] == pytest.approx(0.653846, abs=1e-6)
    assert r["n_eff"] == pytest.approx(9.00263, abs=1e-4)
    assert r["se"] == pytest.approx(0.0260871 ** 0.5, abs=1e-6)
    assert r["low"] == pytest.approx(0.316187, abs=1e-5)
    assert r["high"] == pytest.approx(0.885271, abs=1e-5)
    assert not ratio_share([800, 200], [10, 10], [0, 0], [0, 0])["ok"]  # nothing flagged among the labels
    assert not ratio_share([800, 200], [10, 10], [1, 0], [1, 0])["ok"]  # one flagged label: no degree of freedom


def test_strata_cut_covers_every_filled_bin_once():
    counts = np.zeros(design.BINS, np.int64)
    counts[[0, 1, 2, 50, 51, 120, 199]] = [5000, 3000, 800, 40, 30, 5, 1]
    cuts = design.cut_bins(counts, 4)
    assert 1 < len(cuts) <= 4 and cuts[0][0] == 0 and cuts[-1][1] == 200
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(cuts))
    assert sum(counts[lo:hi].sum() for lo, hi in cuts) == counts.sum()
    assert all(counts[lo:hi].sum() > 0 for lo, hi in cuts)
    assert design.cut_bins(np.zeros(design.BINS), 4) == []


def test_allocation_is_neyman_with_floor_and_cap():
    n = design.allocate([10_000, 1000, 3], [0.01, 0.3, 0.9], 200)
    assert n.sum() == 200 and n[2] == 2  # the floor: two labels give a variance
    assert n[1] > n[0] * 1000 / 10_000 * 2  # the high-score stratum is sampled more densely
    assert (design.allocate([5, 5], [0.5, 0.5], 50) == [5, 5]).all()
    assert design.allocate([1000, 1000, 1000], [0.0, 0.0, 0.0], 9).tolist() == [3, 3, 3]
    with pytest.raises(ValueError):
        design.allocate([100] * 6, [0.5] * 6, 10)


def test_coverage_and_width_on_simulated_audits(capsys):
    """At least 200 simulated data sets per scenario with labels drawn from the scores: the 95 %
    interval covers the true prevalence at least 93 % of the time, and is narrower than simple
    random sampling of the same size when the scores are informative."""
    results = [simulate.run(sc) for sc in simulate.SCENARIOS]
    with capsys.disabled():
        for r in results:
            print(f"\n{r['scenario']}: coverage {r['coverage']:.1%} (SRS {r['coverage_srs']:.1%}), mean width "
                  f"{r['width']:.2%} (SRS {r['width_srs']:.2%}), prevalence {r['prevalence']:.2%}; precision "
                  f"{r['precision_coverage']:.1%}, recall {r['recall_coverage']:.1%}", end="")
    for sc, r in zip(simulate.SCENARIOS, results):
        assert r["datasets"] >= 200 and r["with_interval"] == 1
        assert r["coverage"] >= 0.93, r
        if sc.informative:
            assert r["width"] < r["width_srs"], r
            assert r["precision_coverage"] >= 0.9 and r["recall_coverage"] >= 0.9, r


def test_a_broken_interval_fails_the_coverage_check(monkeypatch):
    """The simulation catches a wrong interval (the textbook Wald interval of a zero stratum)."""
    from vlmaudit.estimate import stats

    def wald(N, n, x, z=stats.Z95):
        r = stats.stratified(N, n, x, z)
        half = z * np.nan_to_num(r["se"])
        return r | {"low": r["estimate"] - half, "high": r["estimate"] + half}

    monkeypatch.setattr(simulate, "stratified", wald)
    assert simulate.run(simulate.SCENARIOS[1])["coverage"] < 0.93


def test_the_statistics_import_without_torch():
    code = ("import sys; import vlmaudit.estimate.stats, vlmaudit.estimate.design, vlmaudit.estimate.draw, "
            "vlmaudit.estimate.estimate, vlmaudit.estimate.sheet, vlmaudit.estimate.render; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.replace("'", '"')) == []
