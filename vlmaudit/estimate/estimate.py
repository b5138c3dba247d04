"""Prevalence, precision and recall per category from the labelled review sheet.

The draw is run again from the reports with the design's parameters: the strata and their sizes
must be the ones the sheet was drawn with (else the reports changed), and every labelled row
must be one of the drawn rows (else it is not in the reports, or not in this sample). Rows of
the sheet left unlabelled are ignored; the estimate treats the labelled rows of a stratum as its
random sample, which holds when reviewers label every row or skip rows for reasons unrelated to
their content.
"""

from __future__ import annotations

import numpy as np

from vlmaudit.errors import UserError
from vlmaudit.estimate import draw as drawing
from vlmaudit.estimate.stats import as_number, ratio_share, stratified

METHOD = ("stratified estimator (Cochran 1977, Sampling Techniques, ch. 5; precision and recall: combined ratio "
          "estimate, 6.11); 95 % Wilson interval at the effective sample size (Korn & Graubard 1998), t with n - H "
          "degrees of freedom")


def check_same_draw(design: dict, fresh: drawing.Draw) -> None:
    recorded = [(s.get("id"), s.get("rows"), s.get("drawn")) for s in design["strata"] if isinstance(s, dict)]
    now = [(s.id, s.rows, s.drawn) for s in fresh.strata]
    if recorded != now:
        diff = next(((a, b) for a, b in zip(recorded, now) if a != b), (recorded[len(now):] or [None], now[len(recorded):]))
        raise UserError(f"the reports are not the ones this sample was drawn from (strata then {diff[0]}, now {diff[1]}); "
                        "draw a new sample with `vlmaudit sample`")


def _version_note(design: dict) -> str:
    import duckdb

    drawn_with = design.get("duckdb")
    if isinstance(drawn_with, str) and drawn_with != duckdb.__version__:
        from vlmaudit.report.safetext import safe_text

        return (f"; the sample was drawn with DuckDB {safe_text(drawn_with)[:20]}, this is {duckdb.__version__}, whose "
                "hash may order rows differently: estimate with the DuckDB version that drew the sample")
    return ""


def labelled_rows(files: list, fresh: drawing.Draw, labels: dict, design: dict) -> list[tuple[int, dict, frozenset]]:
    """(stratum, report row, label set) of every labelled row; a label for a row that is not in
    the reports, or not in this sample, is an error naming it."""
    rows = drawing.fetch_rows(files, [(s, i) for s, i, _ in fresh.picks])
    stratum = {(s, i): h for s, i, h in fresh.picks}
    by_key = {(r["shard"], r["key"]): (stratum[pair], r) for pair, r in rows.items()}
    missing = [ident for ident in labels if ident not in by_key]
    if missing:
        known = drawing.find_keys(files, missing)
        ident = missing[0]
        from vlmaudit.report.safetext import safe_text

        shown = f"{safe_text(ident[0])[:80]}/{safe_text(ident[1])[:120]}"
        if ident in known:
            raise UserError(f"--labels: {shown} was not drawn in this sample; only the sheet's rows can be labelled "
                            f"({len(missing)} such label(s)){_version_note(design)}")
        raise UserError(f"--labels: {shown}: no such key in the reports ({len(missing)} label(s) for unknown keys)")
    return [(*by_key[ident], value) for ident, value in labels.items()]


def estimate(files: list, meta: dict, design: dict, labels: dict, thr_image, thr_caption) -> dict:
    """Every number of `vlmaudit estimate` as a JSON-ready dict."""
    fresh = drawing.draw(files, meta, drawing.Params(**{k: design["params"][k] for k in ("mode", "bands", "size", "seed")}))
    check_same_draw(design, fresh)
    labelled = labelled_rows(files, fresh, labels, design)
    cats = meta["categories"]
    H = len(fresh.strata)
    N = np.array([s.rows for s in fresh.strata], np.float64)
    strata = np.array([h for h, _, _ in labelled], np.int64)
    truth = np.array([[c in value for c in cats] for _, _, value in labelled], bool).reshape(-1, len(cats))
    flags = np.array([drawing.category_flags(row, meta, thr_image, thr_caption) for _, row, _ in labelled],
                     bool).reshape(-1, len(cats))
    names = meta.get("category_names") or cats
    out = {"method": METHOD, "population": fresh.population, "unscored": fresh.unscored, "drawn": len(fresh.picks),
           "labelled": len(labelled), "params": design["params"],
           "strata": [{"id": s.id, "rows": s.rows, "drawn": s.drawn, "labelled": int((strata == h).sum())}
                      for h, s in enumerate(fresh.strata)],
           "categories": [_numbers(N, strata, truth[:, k], flags[:, k], H) | {"id": c, "name": names[k]}
                          for k, c in enumerate(cats)]}
    out["overall"] = _numbers(N, strata, truth.any(1), flags.any(1), H) | {"id": "any", "name": "any category"}
    return out


def _numbers(N, strata, truth, flags, H: int) -> dict:
    count = lambda mask: np.bincount(strata[mask], minlength=H).astype(np.float64)
    every = np.ones(len(strata), bool)
    return {"prevalence": _entry(stratified(N, count(every), count(truth))),
            "precision": _entry(ratio_share(N, count(every), count(flags), count(truth & flags))),
            "recall": _entry(ratio_share(N, count(every), count(truth), count(truth & flags)))}


def _entry(result: dict) -> dict:
    ok = bool(result["ok"])
    entry = {"status": "ok" if ok else "too few labels", "labels": int(result["labels"]),
             "positives": int(result["positives"])}
    for name in ("estimate", "low", "high", "se"):
        entry[name] = as_number(result[name]) if ok else None
    return entry
