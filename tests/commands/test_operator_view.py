"""Issue 23: what an operator sees around the work: progress (bar / log lines), refusals before
the model loads, offline hub errors, help at 80 columns, dashboard examples and plain output."""

import io
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROWS, png, run_cli, write_shard

LONG_KEY = "broken-00000/2000000000000000000000-with-a-long-tail"


@pytest.fixture(scope="module")
def long_keys(tmp_path_factory, tiny_clip):
    """Two shards whose keys are long (as LAION's can be), scanned with progress lines on (not -q)."""
    root = tmp_path_factory.mktemp("opview")
    shards = []
    for s in range(2):
        samples = [{"__key__": f"{LONG_KEY}-{s}{i}", "png": png(10 * s + i),
                    "txt": "a very long caption about a cat sleeping on a sofa in the afternoon sun " * 3}
                   for i in range(5)]
        shards.append(write_shard(root / f"part-{s:05d}.tar", samples))
    out = root / "reports"
    result = run_cli("scan", *map(str, shards), "--out", out, "--model", tiny_clip, "--workers", "0",
                     "--precision", "fp32", "--batch-size", "2", "--progress-every", "0")
    assert result.exit_code == 0, result.output
    return shards, out, result.output


# ---- 1. progress ---------------------------------------------------------------------------------

def test_scan_writes_plain_progress_lines_when_not_on_a_terminal(long_keys):
    _, _, output = long_keys
    lines = [line for line in output.splitlines() if line.startswith("scan: ")]
    assert lines, output
    assert "scan: shards 1/2, samples 5/10," in output  # a line at the first shard's end, totals from the tar index
    assert lines[-1].startswith("scan: shards 2/2, samples 10/10, ") and "samples/s, flagged " in lines[-1]
    assert all("ETA " in line for line in lines)
    assert any(re.search(r"samples [1-4]/10,", line) for line in lines)  # --progress-every 0: a line per batch too


def test_quiet_scan_prints_no_progress(tmp_path, tiny_clip, long_keys):
    shards, _, _ = long_keys
    result = run_cli("scan", shards[0], "--out", tmp_path / "q", "--model", tiny_clip, "--workers", "0", "-q",
                     "--progress-every", "0")
    assert result.exit_code == 0 and "scan: " not in result.output


def test_log_lines_come_every_n_seconds_and_at_each_shard_end():
    from vlmaudit.progress import LogLines, Tracker

    stream = io.StringIO()
    with LogLines(Tracker("scan", 2, 20), every=3600, stream=stream) as progress:
        for _ in range(5):
            progress.batch(2, 1)  # within the hour: no line
        assert stream.getvalue() == ""
        progress.shard_done("00000", "complete")
        progress.batch(4, 0)
        progress.shard_done("00001", "truncated")
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("scan: shards 1/2, samples 10/20, ") and "flagged 5," in lines[0]
    assert lines[1] == "scan: shard 00001: truncated"
    assert lines[2].startswith("scan: shards 2/2, samples 14/20, ")
    assert len(lines) == 3  # nothing new at the end: no repeated line


def test_unknown_totals_are_said_and_the_eta_comes_from_shards():
    from vlmaudit.progress import Tracker, format_seconds

    tracker = Tracker("scan", 4, None)
    assert "samples 0/unknown" in tracker.describe() and tracker.describe().endswith("ETA unknown")
    tracker.samples_done, tracker.shards_done = 100, 1
    tracker.started -= 10.0  # ten seconds for one shard of four: about thirty to go
    assert 29 <= tracker.eta() <= 31
    counted = Tracker("scan", 4, lambda: 400)  # a total counted in the background
    counted.samples_done = 100
    counted.started -= 10.0
    assert "samples 100/400" in counted.describe() and 29 <= counted.eta() <= 31
    assert format_seconds(3725) == "1:02:05" and format_seconds(None) == "unknown"


def test_a_terminal_gets_a_live_bar_counted_in_samples():
    from rich.console import Console

    from vlmaudit.progress import start_progress

    file = io.StringIO()
    console = Console(file=file, force_terminal=True, width=160, color_system=None)
    with start_progress("scan", shards=1, samples=10000, console=console) as progress:
        progress.batch(2500, 3)
    text = file.getvalue()
    assert "samples 2,500/10,000" in text and "shards 0/1" in text and "flagged 3" in text


def test_sample_totals_are_counted_cheaply_or_unknown(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from conftest import write_tar
    from vlmaudit.scan.counting import SampleTotal, count_samples

    tar = write_shard(tmp_path / "a.tar", [{"__key__": f"k{i}", "png": png(i), "txt": "x"} for i in range(7)])
    assert count_samples(str(tar)) == 7
    gz = write_tar(tmp_path / "b.tar.gz", [("k.png", png(0))], gz=True)
    assert count_samples(str(gz)) is None  # would mean decompressing it all
    pq.write_table(pa.table({"caption": ["x"] * 12}), tmp_path / "c.parquet", row_group_size=5)
    assert count_samples(str(tmp_path / "c.parquet")) == 12
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    assert count_samples(str(tmp_path / "bad.parquet")) is None
    assert count_samples("s3://bucket/x.tar") is None and count_samples("pipe:cat x.tar") is None
    assert SampleTotal([str(tar), str(tmp_path / "c.parquet")]).wait(30) == 19
    assert SampleTotal([str(tar), str(gz)]).wait(30) is None


def test_filter_write_shards_reports_progress(tmp_path, long_keys):
    _, reports, _ = long_keys
    result = run_cli("filter", reports, "--out", tmp_path / "f", "--write-shards", tmp_path / "w",
                     "--progress-every", "0")
    assert result.exit_code == 0, result.output
    assert "write-shards: shards 2/2, samples 10/10, " in result.output
    quiet = run_cli("filter", reports, "--out", tmp_path / "g", "--write-shards", tmp_path / "x", "-q")
    assert quiet.exit_code == 0 and "write-shards:" not in quiet.output


def test_eval_reports_progress_in_samples(hf_layout, tiny_clip):
    result = run_cli("eval", "--data", hf_layout, "--model", tiny_clip, "--format", "json", "--precision", "fp32",
                     "--batch-size", "2", "--progress-every", "0")
    assert result.exit_code == 0, result.output
    assert f"eval: samples 2/{len(ROWS)}, " in result.output and f"eval: samples {len(ROWS)}/{len(ROWS)}, " in result.output


def test_bench_reports_each_phase():
    result = run_cli("bench", "--size", "tiny", "--shards", "1", "--per-shard", "4", "--batch-size", "2",
                     "--workers", "0", "--device", "cpu", "--progress-every", "0", "--json")
    assert result.exit_code == 0, result.output
    for phase in ("bench: writing 1 demo shards", "bench: building the random model", "bench: counting FLOPs",
                  "bench: bare forward: samples 4/4", "bench: end-to-end scan: shards 1/1, samples 4/4"):
        assert phase in result.output, phase


# ---- 2. refusals before the model loads -----------------------------------------------------------

@pytest.fixture
def no_model(monkeypatch):
    """Any attempt to build a backend or a vision tower fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the refusal")

    monkeypatch.setattr("vlmaudit.backends.build_backend", refuse)
    monkeypatch.setattr("vlmaudit.backends.vision.VisionTower", refuse)


def test_scan_resume_mismatch_is_refused_before_the_model_loads(tmp_path, long_keys, tiny_clip, no_model):
    shards, reports, _ = long_keys
    out = tmp_path / "out"
    out.mkdir()
    record = json.loads((reports / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**record, "model": "another/model"}))
    result = run_cli("scan", shards[0], "--out", out, "--model", tiny_clip, "-q")
    assert result.exit_code == 2 and "holds a run with a different model" in result.output


@pytest.mark.parametrize("case", ["out is a file", "no shards", "thresholds", "engine", "decode"])
def test_scan_refusals_come_before_the_model_loads(tmp_path, long_keys, tiny_clip, no_model, case):
    shards, _, _ = long_keys
    (tmp_path / "file").write_text("x")
    (tmp_path / "thr.yaml").write_text("thresholds: [")
    args = {"out is a file": ["--out", tmp_path / "file"], "no shards": ["--out", tmp_path / "o"],
            "thresholds": ["--out", tmp_path / "o", "--thresholds", tmp_path / "thr.yaml"],
            "engine": ["--out", tmp_path / "o", "--engine", "spark"],
            "decode": ["--out", tmp_path / "o", "--decode", "fpga"]}[case]
    spec = str(tmp_path / "none-*.tar") if case == "no shards" else shards[0]
    result = run_cli("scan", spec, "--model", tiny_clip, "-q", *args)
    assert result.exit_code == 2 and result.output.startswith("error: "), result.output


def test_eval_train_head_and_distill_refuse_a_bad_output_before_loading(tmp_path, long_keys, no_model):
    shards, reports, _ = long_keys
    (tmp_path / "file").write_text("x")
    distill = run_cli("distill", reports, "--shards", shards[0], "--out", tmp_path / "file",
                      "--vision-model", "x", "-q")
    assert distill.exit_code == 2 and "--out" in distill.output and "not a directory" in distill.output
    data = tmp_path / "data.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"image": [png(1)], "category": ["Hate"], "unsafe_concept": ["Swastika"]}), data)
    train = run_cli("train-head", "--data", data, "--vision-model", "x", "--out", tmp_path / "file", "-q")
    assert train.exit_code == 2 and "--out" in train.output, train.output
    evaluation = run_cli("eval", "--data", data, "--model", "x", "--output", tmp_path / "missing" / "r.json", "-q")
    assert evaluation.exit_code == 2 and "--output" in evaluation.output, evaluation.output


# ---- 3. offline / air-gapped ------------------------------------------------------------------------

def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def offline_env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}", HF_HOME=str(tmp_path / "hf-home"),
               PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    return env


@pytest.mark.parametrize("extra, flag", [([], "--model"), (["--backend", "cascade", "--model", "opennsfw",
                                                             "--judge-model", "org/judge", "--escalate-top", "5"],
                                                            "--judge-model")])
def test_an_unreachable_hub_is_one_line_naming_what_works_offline(tmp_path, long_keys, extra, flag):
    shards, _, _ = long_keys
    model = [] if extra else ["--model", "org/not-in-the-cache"]
    process = subprocess.run([sys.executable, "-m", "vlmaudit", "scan", str(shards[0]), "--out", str(tmp_path / "o"),
                              *model, *extra], capture_output=True, text=True, timeout=120, env=offline_env(tmp_path))
    assert process.returncode == 2, process.stderr
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), process.stderr
    assert "Retrying" not in process.stderr and "Traceback" not in process.stderr
    assert "HF_HUB_OFFLINE=1" in lines[0] and f"{flag} DIR" in lines[0]
    assert ("--model opennsfw" in lines[0]) == (flag == "--model")


def test_a_cached_model_is_used_when_the_hub_cannot_be_reached(tmp_path, long_keys, tiny_clip):
    shards, _, _ = long_keys
    env = offline_env(tmp_path)
    snapshot = Path(env["HF_HOME"]) / "hub" / "models--org--tiny-clip" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for file in Path(tiny_clip).iterdir():
        (snapshot / file.name).write_bytes(file.read_bytes())
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    process = subprocess.run([sys.executable, "-m", "vlmaudit", "scan", str(shards[0]), "--out", str(tmp_path / "o"),
                              "--model", "org/tiny-clip", "--workers", "0", "-q"], capture_output=True, text=True,
                             timeout=300, env=env)
    assert process.returncode == 0, process.stderr
    assert "using the cached copy of org/tiny-clip" in process.stderr and "Retrying" not in process.stderr


# ---- 4. help at 80 columns ----------------------------------------------------------------------------

def commands():
    import typer

    from vlmaudit.cli import app

    group = typer.main.get_command(app)
    return group, sorted(group.commands)


def help_text(*args) -> str:
    from typer.testing import CliRunner

    from vlmaudit.cli import app

    result = CliRunner().invoke(app, [*args, "--help"], terminal_width=80, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    return result.output


def unwrapped(text: str) -> str:
    return " ".join(re.sub(r"-\n\s+", "-", text).split())


@pytest.mark.parametrize("name", commands()[1])
def test_every_command_help_reads_at_80_columns(name):
    group, _ = commands()
    text = help_text(name)
    assert max(map(len, text.splitlines())) <= 80
    assert not re.search(r"<[a-z]", text) and "list[" not in text  # no <bool> / <list[str]> type labels
    flat = unwrapped(text)
    for param in group.commands[name].params:
        for flag in param.opts if param.param_type_name == "option" else []:
            assert re.search(rf"(^|[\s,/]){re.escape(flag)}([\s,]|$)", text, re.M), flag  # never cut
        for bracketed in re.findall(r"\[[^\]]*\]", param.help or ""):
            assert " ".join(bracketed.split()) in flat, bracketed  # e.g. 'vlmaudit[ray]' is not eaten as markup
    assert "-h, --help" in text


def test_dash_h_and_version():
    from vlmaudit import __version__

    assert "[OPTIONS] COMMAND" in run_cli("-h").output and "--version" in help_text()
    assert "scan [OPTIONS] SHARDS..." in run_cli("scan", "-h").output
    version = run_cli("--version")
    assert version.exit_code == 0 and version.output.strip() == f"vlmaudit {__version__}"
    scan_help = unwrapped(help_text("scan"))
    assert "pip install 'vlmaudit[ray]'" in scan_help and "opennsfw" in scan_help


# ---- 5. dashboard and plain output ---------------------------------------------------------------------

def column(section: str, index: int) -> str:
    """The cells of one column of an ASCII table, joined: a folded key reads whole again."""
    cells = [line.split("|")[index].strip() for line in section.splitlines() if line.count("|") > index]
    return "".join(cells)


def test_examples_show_full_keys_the_shard_and_which_modality_fired(long_keys):
    from rich.console import Console

    from vlmaudit.report.dashboard import examples
    from vlmaudit.report.summary import summarize

    _, reports, _ = long_keys
    result = run_cli("report", reports, "--threshold", "0.0", "--top", "2", "--examples", "2")
    assert result.exit_code == 0, result.output
    text = result.output
    section = text[text.index("examples"):]
    assert max(map(len, text.splitlines())) <= 80
    assert re.search(rf"{re.escape(LONG_KEY)}-\d\d", column(section, 4)), section  # folded, never cut
    assert "part-0000" in section and "a very long caption" in section
    assert re.search(r"\|\s*both\s*\|", section)  # threshold 0: both modalities fired
    console = Console(record=True, width=140, color_system=None)
    console.print(examples(summarize(reports, top=2), 140, True, False))
    wide = console.export_text()
    assert re.search(rf"\| {re.escape(LONG_KEY)}-\d\d +\|", wide), wide  # on one line when it fits
    assert re.search(r"\| part-0000\d: a very long caption about .*\.\.\. *\|", wide), wide  # the caption is shortened
    summary = json.loads(run_cli("report", reports, "--threshold", "0.0", "--json").output)
    first = next(iter(summary["examples"].values()))[0]
    assert first["fired"] == "both" and first["key"].startswith(LONG_KEY)


def test_which_modality_fired_follows_the_thresholds():
    import numpy as np

    from vlmaudit.report.counts import View
    from vlmaudit.report.summary_dict import fired

    view = View(np.array([0.5, 0.9], np.float32), np.array([0.7, 0.2], np.float32), np.ones(2, bool))
    assert fired(0, 0.6, 0.1, view) == "image" and fired(0, 0.1, 0.8, view) == "caption"
    assert fired(0, 0.6, 0.7, view) == "both" and fired(1, 0.3, 0.25, view) == "caption"
    assert fired(1, 0.3, None, view) == "image"  # a policy flagged below the thresholds: the higher one


def test_empty_states_say_nothing_reached_the_thresholds_and_show_the_highest_scores(long_keys):
    _, reports, _ = long_keys
    text = run_cli("report", reports, "--threshold", "1.0").output
    assert "top concepts: nothing reached the thresholds" in text
    assert "highest scores (nothing reached the thresholds)" in text
    highest = text[text.index("highest scores"):text.index("modality gap")]
    assert LONG_KEY in column(highest, 1) and re.search(r"0\.\d{3}", highest)
    summary = json.loads(run_cli("report", reports, "--threshold", "1.0", "--json").output)
    assert summary["highest_scores"] and summary["highest_scores"][0]["key"].startswith(LONG_KEY)


def test_piped_dashboard_is_plain_ascii_without_colour(long_keys):
    _, reports, _ = long_keys
    text = run_cli("report", reports, "--threshold", "0.5").output
    assert text.isascii() and "\x1b" not in text


def test_no_color_on_a_terminal_is_plain_ascii(long_keys, monkeypatch):
    from vlmaudit.report.dashboard import make_console, render
    from vlmaudit.report.summary import summarize

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    _, reports, _ = long_keys
    summary = summarize(reports, top=3)
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("TERM", raising=False)
    coloured = Terminal()
    render(summary, make_console(100, coloured))
    assert not coloured.getvalue().isascii()  # on a terminal: box drawing and bars
    monkeypatch.setenv("NO_COLOR", "1")
    plain = Terminal()
    render(summary, make_console(100, plain))
    assert plain.getvalue().isascii() and "\x1b" not in plain.getvalue()


def test_concepts_never_split_an_id_when_piped():
    from vlmaudit.rulebook.load import load_rules

    text = run_cli("concepts").output
    assert text.isascii() and max(map(len, text.splitlines())) <= 80
    words = set(re.findall(r"[a-z0-9:-]+", text))
    for concept in load_rules().taxonomy.concepts:
        assert concept.id in words, concept.id
        assert f"{concept.category}:" in words


def test_every_flag_named_in_the_code_is_a_real_option():
    """Hints and errors name flags ('pass --judge-model DIR'): each must exist on some command."""
    group, names = commands()
    real = {"--help", "--version"}
    for name in names:
        for param in group.commands[name].params:
            real.update(param.opts)
            real.update(getattr(param, "secondary_opts", []))
    import vlmaudit

    package = Path(vlmaudit.__file__).resolve().parent  # the installed package in CI, the checkout here
    named = {flag for path in package.rglob("*.py") for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*", path.read_text())}
    assert named - real == {"--local-dir"}  # the one other: `hf download ... --local-dir DIR` in the offline hint
