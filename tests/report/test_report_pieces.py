"""The report's small pieces on hand-made inputs with known answers: the details pass (per-concept
score sums and histograms), the highest scores when nothing was flagged, known-content matches taken
out of the examples, the gallery's thumbnails, the text-safety helpers and the dashboard's console."""

import io
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import image_bytes, write_tar


def test_details_query_names_each_concepts_scores():
    from vlmaudit.report.details import details_sql

    assert details_sql([0, 2], [], source="t") == (
        "SELECT image_scores[1] AS i0, caption_scores[1] AS c0, image_scores[3] AS i2, caption_scores[3] AS c2 FROM t")
    assert details_sql([1], [], source="t", damaged="x > 1") == (
        "SELECT image_scores[2] AS i1, caption_scores[2] AS c1, coalesce(x > 1, false) AS damaged FROM t")


def test_details_query_reads_the_files(tmp_path):
    import duckdb

    from vlmaudit.report import engine
    from vlmaudit.report.details import DetailAccumulator, details_sql

    kind = pa.list_(pa.float32())
    path = tmp_path / "r.parquet"
    pq.write_table(pa.table({"image_scores": pa.array([[0.25, 0.5], [0.75, None], None], kind),
                             "caption_scores": pa.array([[0.0, 1.0], None, [0.5, 0.5]], kind)}), path)
    con = duckdb.connect()
    table = con.sql(details_sql([1], [path], damaged="image_scores IS NULL")).arrow()
    if not isinstance(table, pa.Table):
        table = table.read_all()
    assert table.to_pydict() == {"i1": [0.5, None, None], "c1": [1.0, None, 0.5], "damaged": [False, False, True]}
    acc = DetailAccumulator([1])
    for batch in table.to_batches():
        acc.add(batch)
    detail = acc.details()[1]
    assert acc.damaged == 1 and (detail.mean_image, detail.mean_caption) == (0.5, 0.75)
    assert engine.source([path]) in details_sql([1], [path])


def test_detail_sums_over_batches_and_concepts():
    from vlmaudit.report.counts import BINS
    from vlmaudit.report.details import DetailAccumulator

    acc = DetailAccumulator([0, 4])
    assert acc.damaged == 0 and set(acc.sums) == {(0, "i"), (0, "c"), (4, "i"), (4, "c")}
    assert all(h.dtype == np.int64 and h.shape == (BINS,) and not h.any() for h in acc.hists.values())
    f = pa.float32()
    acc.add(pa.record_batch({"i0": pa.array([0.125, 0.25], f), "c0": pa.array([None, None], f),
                             "i4": pa.array([1.0, None], f), "c4": pa.array([0.5, 0.0], f)}))
    acc.add(pa.record_batch({"i0": pa.array([0.5], f), "c0": pa.array([0.75], f), "i4": pa.array([0.0], f),
                             "c4": pa.array([None], f), "damaged": pa.array([True])}))
    acc.add(pa.record_batch({"i0": pa.array([], f), "c0": pa.array([], f), "i4": pa.array([], f), "c4": pa.array([], f),
                             "damaged": pa.array([], pa.bool_())}))
    assert acc.damaged == 1
    assert acc.sums == {(0, "i"): [0.875, 3], (0, "c"): [0.75, 1], (4, "i"): [1.0, 2], (4, "c"): [0.5, 2]}
    details = acc.details()
    assert sorted(details) == [0, 4]
    assert (details[0].mean_image, details[0].mean_caption) == (round(0.875 / 3, 4), 0.75)
    assert (details[4].mean_image, details[4].mean_caption) == (0.5, 0.25)
    assert np.flatnonzero(details[0].hist_image).tolist() == [125, 250, 500]
    assert details[4].hist_image.tolist() == acc.hists[(4, "i")].tolist() and details[4].hist_image[[0, 999]].tolist() == [1, 1]
    assert details[4].hist_caption.sum() == 2 and details[0].hist_caption[750] == 1
    assert set(acc.hists) == set(acc.sums)
    tenths = DetailAccumulator([1])  # float32 scores summed in float64: no float32 rounding in the sums
    tenths.add(pa.record_batch({"i1": pa.array([0.1, 0.2, 0.3], f), "c1": pa.array([0.0, 0.0, 1.0], f)}))
    assert tenths.sums[(1, "i")] == [sum(float(np.float32(v)) for v in (0.1, 0.2, 0.3)), 3]
    assert tenths.details()[1].mean_caption == 0.3333  # means rounded to 4 decimals
    empty = DetailAccumulator([7]).details()[7]
    assert (empty.mean_image, empty.mean_caption) == (None, None) and empty.hist_image.sum() == 0


def test_detail_files_are_sampled_above_two_million_rows():
    from vlmaudit.report.details import SAMPLE_ROWS, sample_files

    files = list(range(10))
    assert SAMPLE_ROWS == 2_000_000
    assert sample_files(files, 2 * SAMPLE_ROWS - 1, exact=False) == files
    assert sample_files(files, 2 * SAMPLE_ROWS, exact=False) == [0, 2, 4, 6, 8]
    assert sample_files(files, 3 * SAMPLE_ROWS, exact=False) == [0, 3, 6, 9]
    assert sample_files(files, 30 * SAMPLE_ROWS, exact=True) == files
    assert sample_files(files, 0, exact=False) == files


def top_file(path, rows):
    """A report file with the top-score columns only: (shard, key, image concept, image score, caption concept, score)."""
    names = ["shard", "key", "image_top_concept", "image_top_score", "caption_top_concept", "caption_top_score"]
    kinds = [pa.string(), pa.string(), pa.string(), pa.float32(), pa.string(), pa.float32()]
    pq.write_table(pa.table({n: pa.array([r[k] for r in rows], t) for k, (n, t) in enumerate(zip(names, kinds))}), path)
    return path


ROWS = [("s1", "k1", "gore", 0.5, "slur", 0.25), ("s1", "k2", None, None, "slur", 0.75),
        ("s0", "k3", "gore", 0.75, None, None), ("s1", "k0", "nude", 0.75, "hate", 0.75),
        ("s2", "k4", None, None, None, None), ("s0", "k5", "gore", 0.125, "x", 0.0), ("s0", "k6", None, None, "x", 0.0625)]


def test_highest_scores_best_first_ties_by_shard_and_key(tmp_path):
    from vlmaudit.report.highest import highest_order, highest_scores, merge_highest

    files = [top_file(tmp_path / "a.parquet", ROWS[:3]), top_file(tmp_path / "b.parquet", ROWS[3:])]
    best = [{"shard": "s0", "key": "k3", "concept": "gore", "modality": "image", "score": 0.75},
            {"shard": "s1", "key": "k0", "concept": "nude", "modality": "image", "score": 0.75},  # a tie: image wins
            {"shard": "s1", "key": "k2", "concept": "slur", "modality": "caption", "score": 0.75},
            {"shard": "s1", "key": "k1", "concept": "gore", "modality": "image", "score": 0.5},
            {"shard": "s0", "key": "k5", "concept": "gore", "modality": "image", "score": 0.125},
            {"shard": "s0", "key": "k6", "concept": "x", "modality": "caption", "score": 0.0625}]
    assert highest_scores(files, 6) == highest_scores(files, 9) == best and highest_scores(files) == best[:5]
    assert highest_scores(files, 2) == best[:2] and highest_scores(files, 1) == best[:1]
    assert highest_scores(files, 0) == highest_scores([], 5) == highest_scores(files, -1) == []
    assert merge_highest(list(ROWS), 6) == best and merge_highest(list(ROWS), 1) == best[:1]
    assert merge_highest(list(ROWS), -3) == [] and merge_highest([], 5) == []
    assert highest_order(ROWS[1]) == (-0.75, "s1", "k2") and highest_order(ROWS[4]) == (1.0, "s2", "k4")
    assert highest_order((None, None, None, None, "c", 0.5)) == (-0.5, "", "")
    scored = merge_highest([("s", "k", "a", 0.123456, None, None), ("s", "j", None, None, "b", 0.9)], 5)
    assert scored == [{"shard": "s", "key": "j", "concept": "b", "modality": "caption", "score": 0.9},
                      {"shard": "s", "key": "k", "concept": "a", "modality": "image", "score": 0.1235}]
    assert isinstance(scored[0]["score"], float)
    from vlmaudit.errors import UserError

    (tmp_path / "x.parquet").write_bytes(b"not parquet")
    with pytest.raises(UserError, match=r"^highest scores: cannot read the reports: "):
        highest_scores([tmp_path / "x.parquet"], 5)


def matches_dir(root, rows):
    (root / "matches").mkdir(parents=True)
    pq.write_table(pa.table({"bank": [r[0] for r in rows], "shard": [r[1] for r in rows], "key": [r[2] for r in rows]}),
                   root / "matches" / "matches.parquet")
    return root


def test_known_matches_are_taken_out_of_the_examples(tmp_path):
    from vlmaudit.report.known_content import apply_known_matches

    def item(shard, key):
        return {"shard": shard, "key": key, "score": 0.5}

    summary = {"examples": {"gore": [item("a", "k1"), item("a", "k2"), item("b", "k1")], "nude": [item("a", "k1")],
                            "none": []}}
    apply_known_matches(summary, matches_dir(tmp_path / "r", [("ncii", "a", "k1"), ("csam", "a", "k1"), ("ncii", "c", "k9")]))
    assert summary == {"examples": {"gore": [item("a", "k2"), item("b", "k1")], "nude": [], "none": []},
                       "known_matches": {"banks": {"ncii": 2, "csam": 1}, "samples": 2, "withheld_examples": 2}}
    unchecked = {"examples": {"gore": [item("a", "k1")]}}
    apply_known_matches(unchecked, tmp_path / "nothing-here")
    assert unchecked == {"examples": {"gore": [item("a", "k1")]}, "known_matches": None}
    none = {}
    apply_known_matches(none, matches_dir(tmp_path / "e", []))
    assert none == {"known_matches": {"banks": {}, "samples": 0, "withheld_examples": 0}}


def test_text_safety_helpers():
    from vlmaudit.report.safetext import PLACEHOLDER, json_text, markdown_text, rich_markup, rich_text, safe_text

    assert safe_text(None) == "" and safe_text(0) == "0" and safe_text(False) == "False"
    assert safe_text("a\tb\n\nc\x1b[2J\u202e") == "a b c" + PLACEHOLDER + "[2J" + PLACEHOLDER
    assert safe_text("a\tb\nc\r", single_line=False) == "a\tb\nc" + PLACEHOLDER  # tabs and newlines kept
    text = rich_text("[bold]x\x07")
    assert (text.plain, text.style) == ("[bold]x" + PLACEHOLDER, "")
    assert rich_text("x", "bold").style == "bold" and rich_text(None).plain == ""
    assert rich_markup("[b]x\x1b") == "\\[b]x" + PLACEHOLDER
    assert markdown_text("a|b*c_[d](e)<f>#!~`\\\x00") == "a\\|b\\*c\\_\\[d\\]\\(e\\)\\<f\\>\\#\\!\\~\\`\\\\" + PLACEHOLDER
    data = {"a": "\x7f\u202e\u200bé\x01", "b": [1, None], "p": os.sep}
    assert json_text(data) == '{\n  "a": "\\u007f\\u202e\\u200bé\\u0001",\n  "b": [\n    1,\n    null\n  ],\n  "p": "/"\n}'
    assert json_text(data, indent=None) == '{"a": "\\u007f\\u202e\\u200bé\\u0001", "b": [1, null], "p": "/"}'
    assert json.loads(json_text(data)) == data
    assert json_text({"when": np.float32(0.5).item(), "odd": {1, 2}.__class__}) == (
        '{\n  "when": 0.5,\n  "odd": "<class \'set\'>"\n}')


@pytest.mark.parametrize("terminal", [True, False])
def test_dashboard_console_is_plain_off_a_terminal_or_with_no_color(terminal, monkeypatch):
    from rich.console import Console

    from vlmaudit.report.dashboard import make_console

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    monkeypatch.setattr(Console, "is_terminal", property(lambda self: terminal))
    out = io.StringIO()
    console = make_console(77, out)
    assert console.width == 77 and console.file is out
    if terminal:
        assert not console.no_color and console.color_system is not None
        monkeypatch.setenv("NO_COLOR", "1")
        console = make_console(50, out)
    assert console.width in (50, 77) and console.no_color and console.color_system is None
    assert not console._highlight and not console._emoji
    console.print("[b]:smile: 1.0[/b]")
    assert out.getvalue().endswith(":smile: 1.0\n")


def noise() -> bytes:
    """A PNG of random pixels: over the 5,000-byte member budget of the thumbnail test."""
    from PIL import Image

    out = io.BytesIO()
    Image.frombytes("RGB", (60, 60), np.random.default_rng(0).integers(0, 256, 60 * 60 * 3, np.uint8).tobytes()).save(out, "PNG")
    return out.getvalue()


def tar_shard(path, members: dict[str, bytes]):
    return write_tar(path, list(members.items()))


def test_gallery_thumbnails_from_a_tar_shard(tmp_path):
    import base64

    from PIL import Image

    from vlmaudit.report.exports import load_thumbnails
    from vlmaudit.report.reread import ReReadOptions
    from vlmaudit.scan.folder_source import folder_shard_url, list_folder

    shard = tar_shard(tmp_path / "s1.tar", {
        "k1.jpg": image_bytes((300, 150)), "k1.txt": b"a caption", "k2.png": image_bytes((40, 40), "PNG"),
        "k3.txt": b"caption only", "k4.txt": b"no image", "k5.jpg": b"not an image", "k6.json": b"{}",
        "k6.png": image_bytes((50, 100), "PNG"), "k6.jpg": image_bytes((10, 10)), "k7.jpg": noise(),
        "k8.jpg": image_bytes((20, 20))})
    table = tmp_path / "t.parquet"  # a Parquet shard: image structs as the hub writes them
    pq.write_table(pa.table({"key": ["p1", "p2"], "image": [{"bytes": image_bytes((20, 10), "PNG"), "path": None},
                                                              {"bytes": noise(), "path": None}]}), table)
    folder = tmp_path / "imgs"  # a loose image folder
    folder.mkdir()
    (folder / "a.png").write_bytes(image_bytes((30, 60), "PNG"))
    (folder / "b.png").write_bytes(noise())
    folder_url = folder_shard_url(str(folder), 0, 10, [e.key for e in list_folder(str(folder))])
    reports = tmp_path / "r"
    reports.mkdir()
    for name, url in (("s1", str(shard)), ("s2", "pipe:cat x.tar"), ("s3", str(tmp_path / "gone.tar")), ("s4", str(shard)),
                      ("s0", "http://127.0.0.1:9/s0.tar"), ("s5", str(tmp_path / "bad.parquet")), ("t1", str(table)),
                      ("f1", folder_url)):
        (reports / f"{name}.stats.json").write_text(json.dumps({"status": "complete", "url": url}))
    matches_dir(reports, [("ncii", "s1", "k2")])
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 damaged")  # unreadable: no thumbnails from it, no error

    def item(shard, key, **more):
        return {"shard": shard, "key": key, "score": 0.5, **more}

    summary = {"examples": {"gore": [item("s1", "k1"), item("s1", "k2"), item("s1", "k3", fired="caption"),
                                     item("s1", "k4"), item("s1", "k5"), item("s1", "k6", fired="both"),
                                     item("s1", "k8", fired="caption")],  # fired on its caption: shown as text, not read
                            "nude": [item("s1", "k1"), item("s2", "x"), item("s1", "k7"), item("s3", "y"), item("s0", "z"), item("s5", "z"),
                                     item("t1", "p1"), item("t1", "p2"), item("f1", "a"), item("f1", "b")]}}
    # s0 is allowed but unreachable (nothing listens on port 9): no thumbnails from it, and the shards after it still read
    thumbs, refused = load_thumbnails(reports, summary, ReReadOptions(max_member_bytes=5000, allow_schemes=["http"]), size=64)
    assert refused == {"s2": "recorded source is a pipe: command; never run from a report (name the shards with --shards)",
                       "s3": "recorded source is not a regular local file (name the shards with --shards)"}
    # k2 matched, k3 caption, k4 no image, k5 undecodable, k7, p2 and b too big, s5 damaged
    assert sorted(thumbs) == [("f1", "a"), ("s1", "k1"), ("s1", "k6"), ("t1", "p1")]
    sizes = {k: Image.open(io.BytesIO(base64.b64decode(v))) for k, v in thumbs.items()}
    assert {k: (im.format, im.size) for k, im in sizes.items()} == {
        ("s1", "k1"): ("JPEG", (64, 32)), ("s1", "k6"): ("JPEG", (32, 64)),  # k6: its first image member
        ("t1", "p1"): ("JPEG", (20, 10)), ("f1", "a"): ("JPEG", (30, 60))}  # never enlarged
    reference = Image.open(io.BytesIO(image_bytes((64, 32), quality=80)))
    assert sizes[("s1", "k1")].quantization == reference.quantization  # JPEG quality 80
    red = sizes[("s1", "k1")].convert("RGB").getpixel((30, 15))
    assert abs(red[0] - 200) < 12 and red[1] < 50  # quality 80 keeps the colour
    assert load_thumbnails(reports, {"examples": {}}, ReReadOptions()) == load_thumbnails(reports, {}, ReReadOptions()) == ({}, {})
    default, _ = load_thumbnails(reports, {"examples": {"g": [item("s4", "k1")]}}, ReReadOptions())
    assert Image.open(io.BytesIO(base64.b64decode(default[("s4", "k1")]))).size == (128, 64)  # default size 128
