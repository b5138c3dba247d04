"""`vlmaudit sample`: draw a stratified random review sample from the reports and write the review
sheet (CSV + Parquet), its design file and the reviewers' HTML page."""

from __future__ import annotations

import sys
from pathlib import Path

from vlmaudit.commands.options import SampleRequest
from vlmaudit.errors import UserError

MAX_SIZE = 20_000  # DuckDB keeps strata x largest n_h candidates while drawing


def run_sample(request: SampleRequest) -> dict:
    from vlmaudit.estimate import draw as drawing
    from vlmaudit.estimate.sheet import SHEET
    from vlmaudit.report.reportset import ReportSet

    _check(request)
    if (request.out / SHEET).exists() and not request.overwrite:
        raise UserError(f"--out {request.out}: already holds a review sheet (labels would be lost); "
                        "choose another folder or pass --overwrite")
    reports = ReportSet.open(request.report_dir, request.allow_mixed)  # listed, footers and stats read once
    files, meta = reports.files, reports.meta
    params = drawing.Params(request.strata, request.bands, request.size, request.seed)
    try:
        result = drawing.draw(files, meta, params)
    except ValueError as exc:
        raise UserError(f"--size {request.size}: too small for the strata ({exc}); use fewer --bands") from None
    if not result.strata:
        raise UserError(f"{request.report_dir}: no scored samples to draw from")
    rows = sheet_rows(files, meta, result)
    _write(request, meta, result, rows, reports)
    return design_dict(meta, result)


def _check(request: SampleRequest) -> None:
    if request.strata not in ("top", "category"):
        raise UserError(f"--strata {request.strata}: expected top or category")
    if not 1 <= request.size <= MAX_SIZE:
        raise UserError(f"--size {request.size}: expected 1 to {MAX_SIZE:,}")
    if not 1 <= request.bands <= 20:
        raise UserError(f"--bands {request.bands}: expected 1 to 20")


def sheet_rows(files: list, meta: dict, result) -> list[dict]:
    """One dict per drawn row, in hash order (a random order: no score band is reviewed in a block)."""
    from vlmaudit.estimate.draw import category_scores, fetch_rows, top_group

    found = fetch_rows(files, [(s, i) for s, i, _ in result.picks])
    order = sorted(result.picks, key=lambda p: _order_key(result.params.seed, p))
    rows = []
    for number, (shard, index, h) in enumerate(order, start=1):
        row, stratum = found[(shard, index)], result.strata[h]
        scores = category_scores(row, meta)
        top = top_group(row, meta)
        rows.append({"row": number, "shard": shard, "key": row["key"], "sample_index": index, "url": row["url"],
                     "caption": row["caption"], "stratum": stratum.id,
                     "inclusion_probability": stratum.drawn / stratum.rows, "weight": stratum.rows / stratum.drawn,
                     "top_category": meta["categories"][top], "top_score": float(scores[top])}
                    | {f"score_{c}": float(v) for c, v in zip(meta["categories"], scores)}
                    | {"labels": None, "note": None})
    return rows


def _order_key(seed: int, pick) -> str:
    import hashlib

    return hashlib.sha256(f"{seed}\0{pick[0]}\0{pick[1]}".encode()).hexdigest()


def design_dict(meta: dict, result) -> dict:
    from dataclasses import asdict

    import duckdb

    from vlmaudit.estimate.sheet import FORMAT

    return {"format": FORMAT, "version": 1, "params": asdict(result.params), "duckdb": duckdb.__version__,
            "population": result.population,
            "unscored": result.unscored, "drawn": len(result.picks), "categories": meta["categories"],
            "model": meta.get("model"), "taxonomy_version": meta.get("taxonomy_version"),
            "strata": [asdict(s) | {"inclusion_probability": s.drawn / s.rows} for s in result.strata]}


def _write(request: SampleRequest, meta: dict, result, rows: list[dict], reports=None) -> None:
    from vlmaudit.estimate import review_page
    from vlmaudit.estimate.sheet import PAGE, write_sheet
    from vlmaudit.report.safetext import safe_text

    request.out.mkdir(parents=True, exist_ok=True)
    write_sheet(request.out, [{k: v for k, v in r.items() if k != "caption"} for r in rows], design_dict(meta, result))
    thumbs, refused = review_page.thumbnails(reports or request.report_dir, rows, request.reread())
    for name, why in list(refused.items())[:5]:
        print(f"note: the review page shows no images of {safe_text(name)}: {why}", file=sys.stderr)
    page = review_page.page(rows, meta["categories"], thumbs, request.blur, request.redact)
    from vlmaudit.storage.localfiles import write_text_atomic

    write_text_atomic(request.out / PAGE, page)


def print_design(design: dict, out: Path) -> None:
    from vlmaudit.estimate.render import console_and_table
    from vlmaudit.report.safetext import rich_text

    console, table = console_and_table(f"Review sample: {design['drawn']:,} of {design['population']:,} scored samples")
    for name in ("stratum", "rows", "drawn", "inclusion probability"):
        table.add_column(name, justify="left" if name == "stratum" else "right")
    for s in design["strata"]:
        table.add_row(rich_text(s["id"]), f"{s['rows']:,}", f"{s['drawn']:,}", f"{s['inclusion_probability']:.4g}")
    console.print(table)
    console.print(rich_text(f"wrote {out}/review.csv, review.parquet, review.html, design.json; fill the labels "
                            f"column, then: vlmaudit estimate REPORTS --labels {out}"))
