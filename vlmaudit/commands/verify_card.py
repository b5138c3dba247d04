"""`vlmaudit verify-card CARD REPORTS`: rebuild the audit card from the reports with the options the
card records and name every difference (digests, numbers, completeness, model, thresholds)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from vlmaudit.commands.options import VerifyCardRequest
from vlmaudit.errors import UserError
from vlmaudit.report.card import CARD_VERSION, CHECKED


def load_card(path: Path) -> tuple[dict, Path]:
    """(card, its JSON path): CARD is the JSON or the Markdown beside it."""
    from vlmaudit.report.reading import read_json_file

    path = Path(path)
    json_path = path.with_suffix(".json") if path.suffix == ".md" else path
    if not json_path.is_file():
        raise UserError(f"{json_path}: no such card file (pass the card's .json or .md)")
    card = read_json_file(json_path)
    if not isinstance(card, dict) or card.get("vlmaudit_card") != CARD_VERSION:
        raise UserError(f"{json_path}: not a vlmaudit audit card (version {CARD_VERSION})")
    missing = [k for k in (*CHECKED, "options") if k not in card]
    if missing or not isinstance(card["options"], dict) or not isinstance(card["thresholds"], dict):
        raise UserError(f"{json_path}: audit card without {', '.join(missing) or 'valid options / thresholds'}")
    return card, json_path


def recompute(card: dict, json_path: Path, report_dir, labels: Path | None) -> dict:
    """The card these reports give today, with the card's options and thresholds."""
    from vlmaudit.commands.report import ReportRequest, add_completeness, build_view
    from vlmaudit.report.card import build_card, sha256_file
    from vlmaudit.report.reading import naming_damage
    from vlmaudit.report.reportset import ReportSet
    from vlmaudit.report.summary import summarize

    opts = card["options"]
    text = lambda key: opts.get(key) if isinstance(opts.get(key), str) else None
    request = ReportRequest(report_dir=report_dir, examples=0, policy=text("policy"), category=text("category"),
                            concept=text("concept"), shard=text("shard"), rules=text("rules") and Path(text("rules")),
                            allow_mixed=opts.get("allow_mixed") is True)
    reports = ReportSet.open(report_dir, request.allow_mixed)  # listed, footers, stats and run.json read once
    meta = reports.meta
    view = build_view(request, meta)
    _apply_thresholds(view, card["thresholds"], len(meta["concepts"]))
    with naming_damage(reports.files, len(meta["concepts"])):
        summary = summarize(reports, 10, view, None)
    add_completeness(summary, request, reports)
    options = dict(opts)
    if labels is not None:
        from vlmaudit.commands.estimate import estimate_for
        from vlmaudit.estimate.sheet import locate

        options["labels_sha256"] = sha256_file(locate(labels)[0])
        summary["estimates"] = estimate_for(report_dir, labels, meta, reports.files, view.thr_image, view.thr_caption)
    return build_card(reports, summary, meta, view, options, skip=(json_path, json_path.with_suffix(".md")))


def _apply_thresholds(view, recorded: dict, n: int) -> None:
    """The card's effective thresholds (they may come from --threshold / --thresholds files that
    are gone); a malformed list keeps the reports' own, and the digest comparison names it."""
    image, caption = recorded.get("image"), recorded.get("caption")
    if all(isinstance(v, list) and len(v) == n and all(_number(x) for x in v) for v in (image, caption)):
        view.thr_image = np.asarray(image, np.float32)
        view.thr_caption = np.asarray(caption, np.float32)
    if isinstance(recorded.get("source"), str):
        view.source = recorded["source"]


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def differences(card: dict, fresh: dict, labels_given: bool) -> list[str]:
    out = []
    for key in CHECKED:
        old, new = card.get(key), fresh.get(key)
        if key == "results" and not labels_given:
            old, new = _without_estimates(old), _without_estimates(new)
        if key == "files" and isinstance(old, dict):
            out += _file_differences(old, new)
        else:
            out += list(_diff(old, new, key))
    return out


def _without_estimates(rows):
    return [{k: v for k, v in r.items() if k != "estimate"} if isinstance(r, dict) else r
            for r in rows] if isinstance(rows, list) else rows


def _file_differences(old: dict, new: dict) -> list[str]:
    out = []
    for name in sorted(set(old) | set(new), key=str):
        if name not in new:
            out.append(f"file {name}: listed in the card, not in the reports")
        elif name not in old:
            out.append(f"file {name}: in the reports, not listed in the card")
        elif old[name] != new[name]:
            out.append(f"file {name}: SHA-256 {str(old[name])[:16]}... in the card, {new[name][:16]}... now")
    return out


def _diff(old, new, path: str):
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            yield from _diff(old.get(key), new.get(key), f"{path}.{key}")
    elif isinstance(old, list) and isinstance(new, list) and _by_id(old) and _by_id(new):
        a, b = _by_id(old), _by_id(new)
        for ident in list(dict.fromkeys([*a, *b])):
            yield from _diff(a.get(ident), b.get(ident), f"{path}[{ident}]")
    elif _number(old) and _number(new):
        if not math.isclose(old, new, rel_tol=1e-9, abs_tol=1e-12):
            yield f"{path}: {old!r} in the card, {new!r} from the reports"
    elif old != new:
        yield f"{path}: {_short(old)} in the card, {_short(new)} from the reports"


def _by_id(rows: list) -> dict | None:
    if not all(isinstance(r, dict) and isinstance(r.get("id"), str) for r in rows):
        return None
    return {r["id"]: r for r in rows}


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def run_verify_card(request: VerifyCardRequest) -> int:
    from vlmaudit.report.safetext import safe_text

    card_path, report_dir, labels = request.card, request.report_dir, request.labels
    card, json_path = load_card(card_path)
    if card.get("estimate") and labels is None:
        print("note: the card's estimates are not re-checked (pass --labels with the review sheet)")
    fresh = recompute(card, json_path, report_dir, labels)
    found = differences(card, fresh, labels is not None)
    for line in found:
        print(f"DIFFERS: {safe_text(line)}")
    if found:
        print(f"verify-card: {len(found)} difference(s) between {safe_text(json_path)} and {safe_text(report_dir)}")
        return 1
    print(f"verify-card: {safe_text(json_path)} matches {safe_text(report_dir)} "
          f"({len(fresh['files'])} files, {len(fresh['results'])} result rows)")
    return 0
