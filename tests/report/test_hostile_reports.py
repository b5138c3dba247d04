"""Report directories from others: damaged or foreign files get one line naming them and exit 2,
nothing recorded in a report runs or opens anything, data reaches the terminal as text."""

import json
import math
import os
import random
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import run_cli, scan_args, write_shard
from vlmaudit.demo.build import synthetic_image
from vlmaudit.schema import META_KEY

SHARD = "00000"


def one_shard(reports):
    """REPORTS (a private copy of the demo scan) cut down to shard 00000."""
    for path in [*reports.glob("00001.*"), *reports.glob("00002.*")]:
        path.unlink()
    run = json.loads((reports / "run.json").read_text())
    (reports / "run.json").write_text(json.dumps({**run, "planned_shards": [SHARD]}))
    return reports


def parquet(d):
    return d / f"{SHARD}.parquet"


def rewrite(d, change_table=None, change_meta=None, name=SHARD, statistics=True):
    path = d / f"{name}.parquet"
    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[META_KEY])
    if change_meta:
        meta = change_meta(meta)
    if change_table:
        table = change_table(table)
    raw = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    pq.write_table(table.replace_schema_metadata({META_KEY: raw}), path, write_statistics=statistics)


def set_column(name, values, arrow_type=None):
    def change(table):
        column = pa.array(values(table.column(name).to_pylist()), type=arrow_type or table.schema.field(name).type)
        return table.set_column(table.schema.get_field_index(name), name, column)
    return change


def first_score(value):
    def scores(rows):
        rows = [list(r) if r is not None else None for r in rows]
        rows[0][0] = value
        return rows
    return set_column("image_scores", scores)


def category_score(value):
    """The first image_cat_* column, its first row set to VALUE."""
    def change(table):
        name = next(n for n in table.schema.names if n.startswith("image_cat_"))
        return set_column(name, lambda v: [value] + v[1:])(table)
    return change


def cut(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[:keep(len(data))])


def corrupt_middle(path):
    data = bytearray(path.read_bytes())
    rng = random.Random(0)
    for i in range(len(data) // 4, len(data) // 2):
        data[i] = rng.randrange(256)
    path.write_bytes(bytes(data))


def stats_file(d):
    return d / f"{SHARD}.stats.json"


def edit_stats(change):
    def apply(d):
        stats_file(d).write_text(json.dumps(change(json.loads(stats_file(d).read_text()))))
    return apply


# (case name, damage(report_dir), text the error must contain)
DAMAGED = [
    ("truncated parquet", lambda d: cut(parquet(d), lambda n: n // 2), "not a readable Parquet"),
    ("empty parquet", lambda d: parquet(d).write_bytes(b""), "not a readable Parquet"),
    ("random bytes", lambda d: parquet(d).write_bytes(os.urandom(5000)), "not a readable Parquet"),
    ("footer only", lambda d: cut(parquet(d), lambda n: -n // 3), "not a readable Parquet"),
    ("data pages overwritten", lambda d: corrupt_middle(parquet(d)), SHARD),
    ("parquet of another tool", lambda d: pq.write_table(pa.table({"a": [1, 2], "b": ["x", "y"]}), parquet(d)),
     "not a vlmaudit report"),
    ("parquet is a directory", lambda d: (parquet(d).unlink(), parquet(d).mkdir()), "not a regular file"),
    ("parquet links to /dev/zero", lambda d: (parquet(d).unlink(), parquet(d).symlink_to("/dev/zero")),
     "not a regular file"),
    ("metadata not JSON", lambda d: rewrite(d, change_meta=lambda m: b"{nope"), "not valid JSON"),
    ("metadata a list", lambda d: rewrite(d, change_meta=lambda m: [1, 2]), "not a JSON object"),
    ("metadata 5 MB", lambda d: rewrite(d, change_meta=lambda m: {**m, "pad": "x" * (5 << 20)}), "byte limit"),
    ("concepts not strings", lambda d: rewrite(d, change_meta=lambda m: {**m, "concepts": list(range(len(m["concepts"])))}),
     "list of strings"),
    ("thresholds too short", lambda d: rewrite(d, change_meta=lambda m: {**m, "thresholds": {"image": [0.5], "caption": [0.5]}}),
     "thresholds.image"),
    ("threshold NaN", lambda d: rewrite(d, change_meta=lambda m: {**m, "thresholds": {
        "image": [math.nan] * len(m["concepts"]), "caption": m["thresholds"]["caption"]}}), "thresholds.image"),
    ("model not an object", lambda d: rewrite(d, change_meta=lambda m: {**m, "model": "a string"}), "model (an object)"),
    ("unknown category", lambda d: rewrite(d, change_meta=lambda m: {**m, "concept_categories": ["nope"] * len(m["concepts"])}),
     "unknown categories"),
    ("missing score column", lambda d: rewrite(d, change_table=lambda t: t.drop_columns(["image_scores"])),
     "'image_scores' is missing"),
    ("status is an int", lambda d: rewrite(d, change_table=set_column("status", lambda v: list(range(len(v))), pa.int64())),
     "'status' has type"),
    ("scores are strings", lambda d: rewrite(d, change_table=set_column(
        "image_scores", lambda v: [None if r is None else [str(x) for x in r] for r in v], pa.list_(pa.string()))),
     "'image_scores' has type"),
    ("top score strings", lambda d: rewrite(d, change_table=set_column(
        "image_top_score", lambda v: [None if x is None else str(x) for x in v], pa.string())),
     "'image_top_score' has type"),
    ("category score NaN", lambda d: rewrite(d, change_table=category_score(math.nan)), "holds scores that are NaN"),
    ("no statistics, category score above 1", lambda d: rewrite(d, change_table=category_score(1.5), statistics=False),
     "holds scores that are NaN, infinite or outside [0, 1]"),
    ("null status", lambda d: rewrite(d, change_table=set_column("status", lambda v: [None] + v[1:])), "no status"),
    ("NaN score", lambda d: rewrite(d, change_table=first_score(math.nan)), "NaN, infinite or outside"),
    ("infinite score", lambda d: rewrite(d, change_table=first_score(math.inf)), "outside [0, 1]"),
    ("score above 1", lambda d: rewrite(d, change_table=first_score(1.5)), "outside [0, 1]"),
    ("negative score", lambda d: rewrite(d, change_table=first_score(-0.5)), "outside [0, 1]"),
    ("score list too short", lambda d: rewrite(d, change_table=set_column(
        "image_scores", lambda v: [None if r is None else r[:-1] for r in v])), "entries"),
    ("rows of another shard", lambda d: rewrite(d, change_table=set_column("shard", lambda v: ["elsewhere"] * len(v))),
     "rows of shard 'elsewhere'"),
    ("no statistics, rows of another shard", lambda d: rewrite(d, change_table=set_column(
        "shard", lambda v: v[:-1] + ["elsewhere"]), statistics=False), "rows of shard 'elsewhere'"),
    ("no statistics, null status", lambda d: rewrite(d, change_table=set_column("status", lambda v: v[:-1] + [None]),
                                                     statistics=False), "no status"),
    ("no statistics, score above 1", lambda d: rewrite(d, change_table=first_score(1.5), statistics=False),
     f"{SHARD}.parquet: a report holds scores that are NaN, infinite or outside [0, 1]"),
    ("no statistics, NaN score", lambda d: rewrite(d, change_table=first_score(math.nan), statistics=False),
     f"{SHARD}.parquet: a report holds scores that are NaN"),
    ("stats not JSON", lambda d: stats_file(d).write_text("{"), "not valid JSON"),
    ("stats a list", lambda d: stats_file(d).write_text("[]"), "expected a JSON object"),
    ("stats status unknown", edit_stats(lambda s: {**s, "status": "rm -rf /"}), "is not one of"),
    ("stats time a string", edit_stats(lambda s: {**s, "started_at": "yesterday"}), "finite number"),
    ("stats url a number", edit_stats(lambda s: {**s, "url": 7}), "url must be a string"),
    ("stats 6 MB", lambda d: stats_file(d).write_text(json.dumps({"pad": "x" * (6 << 20)})), "byte limit"),
    ("stats missing", lambda d: stats_file(d).unlink(), "never finished"),
    ("run.json not JSON", lambda d: (d / "run.json").write_text("{{"), "run.json: not valid JSON"),
    ("run.json planned not a list", lambda d: (d / "run.json").write_text('{"planned_shards": 3}'), "planned_shards"),
    ("json nested 100000 deep", lambda d: stats_file(d).write_text("[" * 100000 + "]" * 100000), "not valid JSON"),
]


def commands(d, tmp_path):
    """Every command that reads a report directory."""
    return [
        ("report", d),
        ("report", d, "--json"),
        ("report", d, "--format", "markdown"),
        ("report", d, "--format", "html", "--output", tmp_path / "r.html"),
        ("report", d, "--compare", d),
        ("filter", d, "--out", tmp_path / "f"),
        ("filter", d, "--out", tmp_path / "f2", "--write-shards", tmp_path / "kept"),
    ]


@pytest.mark.parametrize("case, damage, message", DAMAGED, ids=[c[0] for c in DAMAGED])
def test_damaged_report_gives_one_line_and_exit_2(scanned_copy, tmp_path, case, damage, message):
    d = one_shard(scanned_copy)
    damage(d)
    for args in commands(d, tmp_path):
        result = run_cli(*args)  # an uncaught exception (a traceback) fails the test here
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2, (case, args, result.output)
        assert lines[-1].startswith("error: ") and message in lines[-1], (case, args, result.output)
        assert "Traceback" not in result.output
    assert not (tmp_path / "f" / "keep.parquet").exists() and not (tmp_path / "kept").exists()


def test_two_taxonomies_are_refused_even_with_allow_mixed(scanned_copy, tmp_path):
    d = scanned_copy
    rewrite(d, change_meta=lambda m: {**m, "concepts": [c + "-v2" for c in m["concepts"]]}, name="00001")
    for extra in ([], ["--allow-mixed"]):
        result = run_cli("report", d, *extra)
        assert result.exit_code == 2 and "00001.parquet: written with another taxonomy" in result.output


def test_two_models_are_refused_unless_allowed(scanned_copy, tmp_path):
    d = scanned_copy
    rewrite(d, change_meta=lambda m: {**m, "model": {**m["model"], "model": "someone/else"}}, name="00001")
    for args in (("report", d), ("filter", d, "--out", tmp_path / "f")):
        result = run_cli(*args)
        assert result.exit_code == 2 and "00001.parquet: another model" in result.output and "--allow-mixed" in result.output
    mixed = json.loads(run_cli("report", d, "--json", "--allow-mixed").output)
    assert mixed["overview"]["samples"] == 63
    assert run_cli("filter", d, "--out", tmp_path / "f", "--allow-mixed").exit_code == 0


def test_error_lines_show_hostile_file_names_as_text(scanned_copy, tmp_path):
    d = one_shard(scanned_copy)
    hostile = d / "\x1b]52;c;cm0gLXJmIH4=\x07\x1b[2J.parquet"
    hostile.write_bytes(b"PAR1 not really")
    result = run_cli("report", d)
    assert result.exit_code == 2 and "\x1b" not in result.output and "\x07" not in result.output
    assert "\ufffd]52;c;cm0gLXJmIH4=\ufffd\ufffd[2J.parquet: not a readable Parquet" in result.output


HOSTILE_CAPTIONS = ["closing tag [/] and [/url] and [bold red]markup[/]", "[link=https://evil.invalid]click[/link]",
                    "clipboard \x1b]52;c;cm0gLXJmIH4=\x07 write", "screen \x1b[2J\x1b[H clear", "carriage\rreturn",
                    "back\bspace", "bidi \u202egnp.exe", "C1 \x9b31m csi"]
RAW = ("\x1b", "\x07", "\r", "\b", "\u202e", "\x9b")


@pytest.fixture(scope="module")
def hostile_captions(tmp_path_factory, tiny_clip):
    root = tmp_path_factory.mktemp("captions")
    samples = [{"__key__": f"k{i}", "jpg": synthetic_image(random.Random(i)), "txt": caption.encode()}
               for i, caption in enumerate(HOSTILE_CAPTIONS)]
    shard = write_shard(root / "cap.tar", samples)
    assert run_cli(*scan_args([shard], root / "reports", tiny_clip)).exit_code == 0
    return root / "reports"


def test_captions_reach_the_terminal_as_text(hostile_captions):
    result = run_cli("report", hostile_captions, "--threshold", "0", "--examples", "8")
    assert result.exit_code == 0, result.output
    assert not any(ch in result.output for ch in RAW)
    assert "closing tag [/]" in result.output and "[link=https://evil.invalid]" in result.output
    assert "clipboard \ufffd]52;c;" in result.output


def test_json_escapes_controls_and_round_trips(hostile_captions):
    result = run_cli("report", hostile_captions, "--threshold", "0", "--examples", "8", "--json")
    assert result.exit_code == 0 and not any(ch in result.output for ch in RAW)
    captions = {item["caption"] for items in json.loads(result.output)["examples"].values() for item in items}
    assert captions == set(HOSTILE_CAPTIONS)


def test_markdown_escapes_pipes_and_controls(hostile_captions):
    from vlmaudit.report.exports import to_markdown

    summary = json.loads(run_cli("report", hostile_captions, "--json").output)
    summary["categories"][0]["name"] = "a|b `code` \x1b[31mred"
    summary["top_shards"][0]["shard"] = "x|y"
    text = to_markdown(summary)
    assert "| a\\|b \\`code\\` \ufffd\\[31mred |" in text and "| x\\|y |" in text and "\x1b" not in text


def test_html_keeps_escaping_captions(hostile_captions, tmp_path):
    out = tmp_path / "r.html"
    assert run_cli("report", hostile_captions, "--threshold", "0", "--examples", "8", "--format", "html",
                   "--output", out, "--no-blur").exit_code == 0
    page = out.read_text()
    assert "[link=https://evil.invalid]click[/link]" in page and "<script>" not in page.replace(
        "<script>document.querySelectorAll", "")


def test_recorded_pipe_source_is_never_run(scanned_copy, tmp_path):
    d = one_shard(scanned_copy)
    stats = json.loads(stats_file(d).read_text())
    real = stats["url"]
    marker = tmp_path / "pwned"
    stats_file(d).write_text(json.dumps({**stats, "url": f"pipe:touch {marker}; cat {real}"}))
    html = tmp_path / "r.html"
    result = run_cli("report", d, "--threshold", "0", "--format", "html", "--output", html)
    assert result.exit_code == 0 and "pipe:" in result.output and "(no image)" in html.read_text()
    result = run_cli("filter", d, "--out", tmp_path / "f", "--write-shards", tmp_path / "kept")
    assert result.exit_code == 2 and "never run from a report" in result.output
    assert not marker.exists()
    # the shards named on the command line are read, even through pipe: (the user typed it)
    assert run_cli("report", d, "--threshold", "0", "--format", "html", "--output", html,
                   "--shards", f"pipe:cat {real}").exit_code == 0
    assert "data:image/jpeg;base64," in html.read_text()
    result = run_cli("filter", d, "--policy", "permissive", "--out", tmp_path / "f", "--write-shards",
                     tmp_path / "kept", "--shards", real)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "kept" / f"{SHARD}.tar").is_file() and not marker.exists()


def test_recorded_url_opens_no_connection(scanned_copy, tmp_path):
    import socket

    d = one_shard(scanned_copy)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.settimeout(0.5)
    url = f"http://127.0.0.1:{server.getsockname()[1]}/{SHARD}.tar"
    edit_stats(lambda s: {**s, "url": url})(d)
    result = run_cli("report", d, "--threshold", "0", "--format", "html", "--output", tmp_path / "r.html")
    assert result.exit_code == 0 and "--allow-scheme http" in result.output
    result = run_cli("filter", d, "--out", tmp_path / "f", "--write-shards", tmp_path / "kept")
    assert result.exit_code == 2 and "--allow-scheme http" in result.output
    with pytest.raises(socket.timeout):
        server.accept()
    server.close()


def test_rereads_honour_max_member_bytes(scanned_copy, tmp_path):
    import tarfile

    d = one_shard(scanned_copy)
    real = json.loads(stats_file(d).read_text())["url"]
    result = run_cli("filter", d, "--policy", "permissive", "--out", tmp_path / "f", "--write-shards",
                     tmp_path / "kept", "--max-member-bytes", "200")
    assert result.exit_code == 0 and "over --max-member-bytes" in result.output, result.output
    with tarfile.open(tmp_path / "kept" / f"{SHARD}.tar") as tf:
        names = tf.getnames()
    with tarfile.open(real) as tf:
        small = [m.name for m in tf.getmembers() if m.size <= 200]
    assert names and all(n in small for n in names) and not any(n.endswith(".jpg") for n in names)
    html = tmp_path / "r.html"
    run_cli("report", d, "--threshold", "0", "--format", "html", "--output", html, "--max-member-bytes", "200")
    assert "data:image/jpeg" not in html.read_text()


def test_concept_names_from_user_rules_are_shown_as_text(tmp_path):
    import yaml

    from vlmaudit.rulebook.load import shipped_rules_dir

    rules = tmp_path / "rules"
    shutil.copytree(shipped_rules_dir(), rules)
    taxonomy = yaml.safe_load((rules / "taxonomy.yaml").read_text())
    taxonomy["concepts"][0]["name"] = "evil [/] \x1b]8;;https://x.invalid\x07link\x1b]8;;\x07 [link=https://x]y[/link]"
    (rules / "taxonomy.yaml").write_text(yaml.safe_dump(taxonomy))
    result = run_cli("concepts", "--rules", rules)
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output and "[/]" in result.output
    as_json = run_cli("concepts", "--rules", rules, "--json")
    assert "\x1b" not in as_json.output and json.loads(as_json.output)["concepts"][0]["name"].startswith("evil [/] \x1b")
