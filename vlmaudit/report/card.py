"""The audit card (`vlmaudit report DIR --format card`): Markdown + JSON for a dataset card saying
what was audited (the shard list's digest, samples, completeness), with what (vlmaudit version,
model, revision, weights digest, taxonomy, thresholds and policy digests), the results per
category (flagged; the estimate with its interval when labels were given; n/a where not scored),
known-content matches per bank, and the SHA-256 of every report file.

`vlmaudit verify-card` (commands.verify_card) rebuilds the same dict from the reports and names
every difference, so the numbers in the JSON are the ones to check; the Markdown shows them.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np

from vlmaudit.errors import UserError

CARD_VERSION = 1
MAX_FILES = 1_000_000
CHECKED = ("vlmaudit_version", "audited", "model", "taxonomy", "thresholds", "policy", "results",
           "known_matches", "files")  # the fields verify-card recomputes and compares


def build_card(report_dir, summary: dict, meta: dict, view, options: dict, skip: tuple = ()) -> dict:
    """The card dict. `options`: the report options that shaped the numbers (re-applied by
    verify-card); `skip`: paths of files not to digest (the card itself, written there)."""
    from vlmaudit import __version__
    from vlmaudit.report.reportset import listing_of, location_of

    listing = listing_of(report_dir)  # an opened ReportSet's: nothing listed or read again
    run = listing.run()
    return {
        "vlmaudit_card": CARD_VERSION,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "written_by": f"vlmaudit {__version__}",
        "vlmaudit_version": (run.get("packages") or {}).get("vlmaudit"),
        "audited": _audited(listing, summary, run),
        "model": _model(meta, run),
        "taxonomy": {"version": meta.get("taxonomy_version"), "fingerprint": run.get("taxonomy_fingerprint")},
        "thresholds": _thresholds(view, summary, run),
        "policy": None if view.policy is None else {"name": view.policy.name, "fingerprint": view.policy.fingerprint},
        "options": options,
        "results": _results(summary, run, meta),
        "estimate": _estimate_note(summary, options),
        "known_matches": known_match_counts(location_of(report_dir)),
        "files": file_digests(listing, skip),
    }


def _audited(listing, summary: dict, run: dict) -> dict:
    shards = sorted(listing.shard_names())
    planned = run.get("planned_shards")
    o = summary["overview"]
    return {"shards": len(shards), "shard_list_sha256": names_digest(shards),
            "planned_shards": len(planned) if planned else None,
            "planned_list_sha256": names_digest(sorted(planned)) if planned else None,
            "samples": o["samples"], "failed_samples": o["failed"], "complete": summary["complete"],
            "incomplete": summary["incomplete"]}


def names_digest(names: list[str]) -> str:
    return hashlib.sha256("".join(f"{n}\n" for n in names).encode()).hexdigest()


def _model(meta: dict, run: dict) -> dict:
    info = {**(meta.get("model") or {}), **(run.get("model_info") or {})}
    revision = info.get("revision")
    weights = info.get("weights_sha256") or info.get("weights_digest")
    if not weights and isinstance(revision, str) and revision.startswith(("local-", "head-")):
        weights = revision  # local and head revisions are digests of the weight files
    return {"backend": info.get("backend"), "model": info.get("model"), "revision": revision,
            "weights_digest": weights}


def _thresholds(view, summary: dict, run: dict) -> dict:
    image = np.asarray(view.thr_image, np.float32)
    caption = np.asarray(view.thr_caption, np.float32)
    return {"source": summary["overview"]["thresholds"]["source"],
            "sha256": hashlib.sha256(image.tobytes() + caption.tobytes()).hexdigest(),
            "scan_fingerprint": run.get("thresholds_fingerprint"),
            "image": [float(v) for v in image], "caption": [float(v) for v in caption]}


def _results(summary: dict, run: dict, meta: dict) -> list[dict]:
    estimates = {e["id"]: e for e in (summary.get("estimates") or {}).get("categories", [])}
    overall = (summary.get("estimates") or {}).get("overall")
    rows = []
    for c in summary["categories"]:
        scored = c.get("scored", True) is not False and category_scored(run, meta, c["id"])
        rows.append({"id": c["id"], "name": c["name"], "scored": scored,
                     "flagged": c["flagged"] if scored else None, "rate": c["rate"] if scored else None,
                     "estimate": _prevalence(estimates.get(c["id"])) if scored else None})
    o = summary["overview"]
    rows.append({"id": "any", "name": "any category", "scored": True, "flagged": o["flagged"],
                 "rate": o["flagged_rate"], "estimate": _prevalence(overall)})
    return rows


def category_scored(run: dict, meta: dict, category: str) -> bool:
    """Coverage (SHARED.md item 3) from run.json or the footer; none recorded: everything scored."""
    coverage = run.get("coverage") or meta.get("coverage")
    if not isinstance(coverage, dict):
        return True
    from vlmaudit.rulebook.coverage import Coverage

    cover = Coverage.from_json(coverage)
    return any(cover.scores(category, m) for m in ("image", "caption"))


def _prevalence(entry: dict | None) -> dict | None:
    if not entry:
        return None
    p = entry["prevalence"]
    return {k: p.get(k) for k in ("status", "estimate", "low", "high", "labels", "positives")}


def _estimate_note(summary: dict, options: dict) -> dict | None:
    est = summary.get("estimates")
    if not est:
        return None
    return {"method": est.get("method"), "labelled": est.get("labelled"), "population": est.get("population"),
            "labels_sha256": options.get("labels_sha256")}


def file_digests(report_dir, skip: tuple = ()) -> dict[str, str]:
    """{relative path: SHA-256} of every regular file under REPORT_DIR (a path, or an opened
    ReportSet or reading.ReportDir, whose listing is the top level), hidden files (claims, partial
    writes) and symlinks left out."""
    from vlmaudit.report.reportset import listing_of

    listing = listing_of(report_dir)
    if listing.remote:
        raise UserError(f"{listing}: the audit card digests local report directories only (copy them here first)")
    root = Path(listing.location)
    skipped = {os.path.abspath(p) for p in skip}
    out = {}
    for path in _regular_files(root, sorted(listing.entries)):
        if os.path.abspath(path) not in skipped:
            out[path.relative_to(root).as_posix()] = sha256_file(path)
            if len(out) > MAX_FILES:
                raise UserError(f"{listing}: over {MAX_FILES} files")
    return dict(sorted(out.items()))


def _regular_files(root: Path, top: list[str]):
    """The regular files under ROOT (top level: the names TOP listed), hidden names and symlinks
    left out; subdirectories walked without following links."""
    for name in top:
        path = root / name
        if name.startswith(".") or path.is_symlink():
            continue
        if path.is_file():
            yield path
        elif path.is_dir():
            for folder, dirs, names in os.walk(path, followlinks=False):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for inner in sorted(names):
                    found = Path(folder) / inner
                    if not inner.startswith(".") and not found.is_symlink() and found.is_file():
                        yield found


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return digest.hexdigest()


def known_match_counts(report_dir) -> dict | None:
    """{bank: {"matches": rows, "samples": distinct samples}} from REPORT_DIR/matches/matches.parquet
    (SHARED.md item 2); None when there is no such file."""
    from vlmaudit.match.known import read_matches

    table = read_matches(report_dir, ["bank", "shard", "key"])
    if table is None:
        return None
    out: dict = {}
    for bank, shard, key in zip(*(table.column(c).to_pylist() for c in ("bank", "shard", "key"))):
        entry = out.setdefault(str(bank), {"matches": 0, "samples": set()})
        entry["matches"] += 1
        entry["samples"].add((shard, key))
    return {bank: {"matches": e["matches"], "samples": len(e["samples"])} for bank, e in sorted(out.items())}


def card_paths(output: Path | None) -> tuple[Path, Path]:
    """(Markdown, JSON) paths: OUTPUT with .md and .json (default audit-card.md / .json here)."""
    base = Path(output) if output else Path("audit-card")
    if base.suffix in (".md", ".json"):
        base = base.with_suffix("")
    return base.with_name(base.name + ".md"), base.with_name(base.name + ".json")


def to_markdown(card: dict, json_name: str) -> str:
    from vlmaudit.report.completeness import lines
    from vlmaudit.report.dashboard import pct
    from vlmaudit.report.safetext import markdown_text as md

    a, m, t = card["audited"], card["model"], card["thresholds"]
    out = ["# Audit card (vlmaudit)", "",
           (f"Written {md(card['written_at'])} by {md(card['written_by'])}. Numbers and digests are in "
            f"{code(json_name)}; check them with {code(f'vlmaudit verify-card {json_name} REPORT_DIR')}."), "",
           "## What was audited", "",
           (f"- {a['shards']:,} shard reports, shard list SHA-256 `{a['shard_list_sha256']}`"
            + (f"; {a['planned_shards']:,} shards planned" if a["planned_shards"] else "")),
           f"- samples: {a['samples']:,}; failed samples: {a['failed_samples']:,}"]
    out += [f"- {line}" for line in lines({"complete": a["complete"], "incomplete": a["incomplete"]}, md)]
    out += ["", "## With what", "",
            f"- vlmaudit {md(card['vlmaudit_version'])} (scan)",
            (f"- model {md(m['model'])} ({md(m['backend'])}), revision {code(m['revision'])}, weights digest "
             f"{code(m['weights_digest']) if m['weights_digest'] else 'not recorded'}"),
            f"- taxonomy {md(card['taxonomy']['version'])}, fingerprint {code(card['taxonomy']['fingerprint'])}",
            f"- thresholds: {md(t['source'])}, SHA-256 `{t['sha256']}`"]
    limits = [f"--{k} {md(v)}" for k, v in card["options"].items() if k in ("category", "concept", "shard") and v]
    if limits:
        out.append(f"- counted with {', '.join(limits)} only (other categories, concepts or shards not counted)")
    if card["policy"]:
        out.append(f"- policy {md(card['policy']['name'])}, fingerprint {code(card['policy']['fingerprint'])}")
    out += ["", "## Results", "", "| category | flagged | flagged rate | estimated prevalence (95 % interval) |",
            "| --- | ---: | ---: | --- |"]
    for r in card["results"]:
        if not r["scored"]:
            na = f"n/a - not scored by {md(m['model'])}"
            out.append(f"| {md(r['name'])} | {na} | {na} | {na} |")
            continue
        out.append(f"| {md(r['name'])} | {r['flagged']:,} | {pct(r['rate'])} | {_interval(r['estimate'], pct)} |")
    if card["estimate"]:
        e = card["estimate"]
        out += ["", f"Estimates from {e['labelled']:,} labelled samples; method: {md(e['method'])}."]
    out += ["", "## Known-content matches", ""]
    matches = card["known_matches"]
    out += ([f"- {md(bank)}: {v['matches']:,} matches, {v['samples']:,} samples" for bank, v in matches.items()] or
            ["- none"]) if matches is not None else ["- not checked (no `matches/` in the report directory)"]
    out += ["", "## Report files (SHA-256)", "", "| file | SHA-256 |", "| --- | --- |"]
    out += [f"| {md(name)} | `{digest}` |" for name, digest in card["files"].items()]
    return "\n".join(out) + "\n"


def code(value) -> str:
    """Data text as a Markdown code span (backticks inside replaced)."""
    from vlmaudit.report.safetext import safe_text

    return "`" + safe_text(value).replace("`", "'") + "`"


def _interval(estimate: dict | None, pct) -> str:
    if not estimate:
        return "- (no labels)"
    if estimate["status"] != "ok":
        return f"{estimate['status']} ({estimate['labels']} labels)"
    return f"{pct(estimate['estimate'])} ({pct(estimate['low'])} - {pct(estimate['high'])}; {estimate['labels']} labels)"


def write_card(card: dict, md_path: Path, json_path: Path) -> None:
    from vlmaudit.report.safetext import json_text
    from vlmaudit.storage.localfiles import write_text_atomic

    # each file renamed into place: a symlink planted at either name is replaced, never written through
    for path, text in ((json_path, json_text(card) + "\n"), (md_path, to_markdown(card, json_path.name))):
        try:
            write_text_atomic(path, text)
        except OSError as exc:  # named by the card's path, not the temporary file it was written through
            raise UserError(f"{path}: cannot write the card ({exc.strerror or exc})") from None
