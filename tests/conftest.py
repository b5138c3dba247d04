import csv
import io
import os
import signal
import subprocess
import sys
import tarfile
import time
import typing
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    """A tiny random CLIP saved with save_pretrained; loaded through the real from_pretrained path."""
    from vlmaudit.demo.checkpoints import build_random_clip

    return build_random_clip(tmp_path_factory.mktemp("models") / "tiny-clip", size="tiny")


class NoInputs:
    """A preprocessor stand-in for tests of the shard reader: no model inputs at all."""

    draft_size = None

    def prepare(self, images, captions):
        return {}


def write_tar(path: Path, members: list[tuple[str, bytes]], gz: bool = False) -> Path:
    """Write members in exactly this order (for layouts TarWriter would not produce); PAX headers hold
    names of any length."""
    with tarfile.open(path, "w:gz" if gz else "w", format=tarfile.PAX_FORMAT) as tf:
        _add_members(tf, members)
    return path


def tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    """write_tar's tar, in memory."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tf:
        _add_members(tf, members)
    return buffer.getvalue()


def _add_members(tf, members: list[tuple[str, bytes]]) -> None:
    for name, data in members:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))


def touch_files(root: Path, *names: str, data: bytes = b"") -> Path:
    """Files named NAMES (subdirectories made) under ROOT, each holding DATA; ROOT back."""
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def write_shard(path: Path, samples: list[dict]) -> Path:
    import webdataset as wds

    with wds.TarWriter(str(path)) as sink:
        for sample in samples:
            sink.write(sample)
    return path


@pytest.fixture
def demo_shards(tmp_path) -> list[Path]:
    from vlmaudit.demo.build import build_demo_shards

    return build_demo_shards(tmp_path / "shards", shards=3, per_shard=7)


def run_cli(*args: str):
    from typer.testing import CliRunner

    from vlmaudit.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def scan_args(shards, out, model, *extra) -> list[str]:
    """fp32 pinned: tests compare scores exactly, and auto picks bf16 on CPUs with native bf16. The local
    engine decodes in-process (--workers 0); under --engine ray the test names --actors itself."""
    decode = [] if "ray" in extra else ["--workers", "0"]
    base = ["scan", *map(str, shards), "--out", str(out), "--model", str(model), *decode, "-q"]
    return base + ([] if "--precision" in extra else ["--precision", "fp32"]) + list(extra)


# ---- the scanned demo: scanned once per session, read-only for every test ----

class ReadOnlyTree:
    """A directory tests must not change: the digest of every file (and the list of folders) is
    taken once, with a pristine copy beside it; changes() names what differs, restore() undoes it."""

    def __init__(self, root: Path, pristine: Path):
        import shutil

        self.root, self.pristine = root, pristine
        shutil.copytree(root, pristine, symlinks=True)
        self.digests = tree_digests(root)

    def changes(self) -> list[str]:
        now = tree_digests(self.root)
        return sorted(name for name in self.digests.keys() | now.keys() if self.digests.get(name) != now.get(name))

    def restore(self) -> None:
        import shutil

        shutil.rmtree(self.root)
        shutil.copytree(self.pristine, self.root, symlinks=True)


def tree_digests(root: Path) -> dict[str, str]:
    """Relative path -> its mode and the SHA-256 of its bytes (of its target, for a link)."""
    import hashlib

    def digest(p: Path) -> str:
        if p.is_dir() and not p.is_symlink():
            return "folder"
        return hashlib.sha256(os.readlink(p).encode() if p.is_symlink() else p.read_bytes()).hexdigest()

    return {str(p.relative_to(root)): f"{p.lstat().st_mode:o} {digest(p)}" for p in root.rglob("*")}


class DemoScan(typing.NamedTuple):
    shards: list[Path]
    reports: Path
    tree: ReadOnlyTree


@pytest.fixture(scope="session")
def demo_scan(tmp_path_factory, tiny_clip) -> DemoScan:
    """The demo's shards (3 x 20 samples, the last shard with the bad samples real crawls hold:
    no image, a broken JPEG, a very long caption) scanned with the tiny CLIP and the shipped rules,
    once per session. READ-ONLY: after every test that uses it, a test that changed, added or
    removed a file under it fails (and the demo is restored for the next tests). A test that must
    change the reports works on `scanned_copy`; a module fixture that derives more from it (a review
    sheet, filter lists, another scan of its shards) writes in a folder of its own. Modules that need
    other data or other scan settings keep a fixture of their own, named for what differs
    (scanned_all_flagged, partial, nsfw_reports, hostile_captions, long_keys, photo_scan)."""
    from vlmaudit.demo.build import build_demo_shards

    root = tmp_path_factory.mktemp("demo-scan")
    shards = build_demo_shards(root / "demo" / "shards", shards=3, per_shard=20, with_bad_samples=True)
    result = run_cli(*scan_args(shards, root / "demo" / "reports", tiny_clip))
    assert result.exit_code == 0, result.output
    return DemoScan(shards, root / "demo" / "reports", ReadOnlyTree(root / "demo", root / "pristine"))


@pytest.fixture(autouse=True)
def _demo_scan_stays_unchanged(request):
    """Every test that uses the demo scan, directly or through a module fixture, leaves it as it was."""
    demo = request.getfixturevalue("demo_scan") if "demo_scan" in request.fixturenames else None
    yield
    if demo and (changed := demo.tree.changes()):
        demo.tree.restore()
        pytest.fail(f"changed the shared demo scan (read-only: use scanned_copy): {changed[:10]}", pytrace=False)


@pytest.fixture
def scanned(demo_scan) -> Path:
    """The report directory of the demo scan (read-only; see demo_scan)."""
    return demo_scan.reports


@pytest.fixture
def scanned_copy(demo_scan, tmp_path) -> Path:
    """A private copy of the demo scan's report directory, TMP_PATH/reports, for a test to change."""
    import shutil

    return Path(shutil.copytree(demo_scan.reports, tmp_path / "reports"))


@pytest.fixture(scope="session")
def tiny_vlms(tmp_path_factory):
    """Tiny random image-text-to-text checkpoints of three families, built lazily and shared."""
    from vlmaudit.demo.vlm_checkpoints import build_random_vlm

    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            built[family] = build_random_vlm(tmp_path_factory.mktemp("vlms") / family, family)
        return built[family]

    return get


def rules_with_threshold(tmp_path: Path, value: float) -> Path:
    """A copy of the shipped rules whose every threshold is VALUE."""
    import shutil

    from vlmaudit.rulebook.load import shipped_rules_dir

    rules = tmp_path / "rules"
    shutil.copytree(shipped_rules_dir(), rules)
    (rules / "thresholds.yaml").write_text(f"default: {value}\n")
    return rules


from s3_server import s3, s3_endpoint  # noqa: E402,F401  (fixtures: a moto S3 server on 127.0.0.1)


# ---- shared by several test modules (no test module imports another) ----

def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


STABLE = ["shard", "key", "sample_index", "status", "image_scores", "caption_scores", "flagged"]


def rows(out):
    files = sorted(out.glob("*.parquet"))
    return pq.read_table(files, columns=STABLE).to_pylist()


def same_rows(a, b) -> bool:
    """Identical rows; scores equal up to float noise between processes."""
    import numpy as np

    strip = lambda rs: [{k: v for k, v in r.items() if not k.endswith("_scores")} for r in rs]  # noqa: E731
    scores = lambda rs, k: np.array([r[k] or [np.nan] * 75 for r in rs], np.float32)  # noqa: E731
    return strip(a) == strip(b) and all(
        np.allclose(scores(a, k), scores(b, k), atol=1e-6, equal_nan=True) for k in ("image_scores", "caption_scores"))


@pytest.fixture
def many_shards(tmp_path):
    from vlmaudit.demo.build import build_demo_shards

    return build_demo_shards(tmp_path / "shards", shards=6, per_shard=30)


def hand_summary(out, check_stored=True, thresholds=None):
    """Recompute the report's numbers with plain Python loops over the rows (at the stored
    thresholds, or at THRESHOLDS: {"image": [75], "caption": [75]})."""
    from vlmaudit.schema import read_meta

    rows = pq.read_table(sorted(out.glob("*.parquet"))).to_pylist()
    meta = read_meta(pq.read_schema(next(out.glob("*.parquet"))))
    thr = thresholds or meta["thresholds"]
    per_cat = {c: 0 for c in meta["categories"]}
    per_concept = {c: 0 for c in meta["concepts"]}
    flagged = both = image_only = caption_only = 0
    for row in rows:
        img = [s >= t for s, t in zip(row["image_scores"] or [], thr["image"])] or [False] * 75
        cap = [s >= t for s, t in zip(row["caption_scores"] or [], thr["caption"])] or [False] * 75
        hit = [a or b for a, b in zip(img, cap)]
        for cid, h in zip(meta["concepts"], hit):
            per_concept[cid] += h
        for cat in {c for c, h in zip(meta["concept_categories"], hit) if h}:
            per_cat[cat] += 1
        flagged += any(hit)
        both += any(img) and any(cap)
        image_only += any(img) and not any(cap)
        caption_only += any(cap) and not any(img)
        if check_stored:
            assert set(row["flagged_categories"]) == {c for c, h in zip(meta["concept_categories"], hit) if h}
            assert row["flagged"] == any(hit)
    return len(rows), flagged, per_cat, per_concept, (both, image_only, caption_only)


ROWS = [  # (category name, concept name, correct option letter): authors' spelling
    ("Hate", "Swastika", "A"), ("Hate", "Swastika", "D"), ("Hate", "Confederate Flag", "B"),
    ("Violence", "Gun violence", "C"), ("Violence", "Gun violence", "A"), ("Sexual", "Pornography", "B"),
]


def image_bytes(size, fmt="JPEG", colour=(200, 30, 30), **options) -> bytes:
    """One solid-colour RGB image of SIZE encoded as FMT (PIL save options passed on)."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format=fmt, **options)
    return out.getvalue()


def png(seed: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def hf_layout(tmp_path):
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({
        "image": pa.array([{"bytes": png(i), "path": f"{i}.png"} for i in range(len(ROWS))], image),
        "category": [r[0] for r in ROWS], "unsafe_concept": [r[1] for r in ROWS],
    })
    path = tmp_path / "hf" / "train-00000-of-00001.parquet"
    path.parent.mkdir()
    pq.write_table(table, path)
    return path.parent


# ---- review sheets (`vlmaudit sample`): drawn, read, labelled ----

def draw_review(reports, out: Path, *extra) -> Path:
    """`vlmaudit sample` of REPORTS into OUT: 24 rows, seed 7, unless EXTRA says otherwise."""
    result = run_cli("sample", reports, "--size", 24, "--out", out, "--seed", 7, *extra)
    assert result.exit_code == 0, result.output
    return out


def read_sheet(out: Path) -> list[dict]:
    with open(out / "review.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def write_sheet(out: Path, rows: list[dict]) -> None:
    with open(out / "review.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def label_sheet(out: Path, rule) -> list[dict]:
    """Every row of OUT's review.csv labelled RULE(row); the rows written back."""
    rows = read_sheet(out)
    for row in rows:
        row["labels"] = rule(row)
    write_sheet(out, rows)
    return rows


def every_third(row: dict) -> bool:
    """Rows 1, 4, 7, ... of a review sheet."""
    return int(row["row"]) % 3 == 1


def s3fs_client(endpoint):
    import s3fs

    return s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)


def wait_for(predicate, timeout=600):  # returns as soon as true; generous for loaded CI machines
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def start_scan(shards, out, model, *extra) -> subprocess.Popen:
    """`vlmaudit scan` in a child process, for a test to kill, interrupt or race."""
    cmd = [sys.executable, "-m", "vlmaudit", *scan_args(shards, out, model, *extra)]
    return subprocess.Popen(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def interrupt_after_two_shards(shards, out, model, fifo: Path, *extra) -> tuple[int, bytes]:
    """A real Ctrl-C: scan SHARDS with a third one between them that is a pipe from the FIFO, which
    blocks until the test lets it go, so the interrupt always lands after two finished shards (no
    skip when a fast machine would finish first). Returns (exit status, stderr)."""
    os.mkfifo(fifo)
    proc = start_scan(shards[:2] + [f"pipe:cat {fifo}"] + shards[2:], out, model, *extra)
    try:
        assert wait_for(lambda: len(list(out.glob("*.stats.json"))) >= 2 or proc.poll() is not None)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=300)
    finally:
        try:  # let a `cat FIFO` still waiting for a writer reach end of file and exit
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:  # no reader left
            pass
    return proc.returncode, err


def decide_by_policy(policy, image, caption, tmp_path, on_failed: int = 0):
    """The product path of `filter` (filter.lists.decided_sql over a Parquet file) applied to
    score arrays [n, C]: per row, (the concept indices whose rule fired, 0-based; action index)."""
    from vlmaudit.filter.lists import decided_sql
    from vlmaudit.report import engine
    from vlmaudit.rulebook.policy import ACTIONS

    def column(scores):
        return [None if np.isnan(row).all() else [None if np.isnan(v) else float(v) for v in row] for row in scores]

    n = len(image)
    path = tmp_path / f"decide-{len(list(tmp_path.glob('decide-*')))}.parquet"
    pq.write_table(pa.table({
        "shard": ["s"] * n, "key": [f"k{i}" for i in range(n)], "sample_index": list(range(n)),
        "url": [None] * n, "status": ["ok"] * n,
        "image_scores": pa.array(column(image), pa.list_(pa.float32())),
        "caption_scores": pa.array(column(caption), pa.list_(pa.float32()))}), path)
    with engine.session([path], "test") as con:
        got = con.execute(f"SELECT reasons, action FROM ({decided_sql(policy, on_failed, [path])}) "
                          "ORDER BY sample_index").fetchall()
    return [([policy.concepts.index(r["rule"].split(":", 1)[1]) for r in reasons if r["rule"].startswith("concept:")],
             ACTIONS.index(action)) for reasons, action in got]


def write_planted_report(out_dir, image, caption, keys=None, shard="00000"):
    """A real report Parquet (the scanner's row builder and schema) with these planted scores."""
    from vlmaudit.rulebook.load import load_rules
    from vlmaudit.scan.rows import RowBuilder, RowMeta
    from vlmaudit.schema import report_meta, report_schema

    rules = load_rules()
    schema = report_schema(rules.taxonomy, report_meta(rules.taxonomy, rules.thresholds, {"backend": "planted"}))
    keys = keys or [f"k{i:06d}" for i in range(len(image))]
    metas = [RowMeta(key, i, None, "c", "ok", image_row=i, caption_row=i) for i, key in enumerate(keys)]
    batch = RowBuilder(rules.taxonomy, rules.thresholds, schema, "planted").build(shard, metas, image, caption)
    out_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_batches([batch], schema), out_dir / f"{shard}.parquet")
    (out_dir / f"{shard}.stats.json").write_text('{"status": "complete", "url": null}')  # the shard finished
    return rules.taxonomy, keys


def rules_error(fn, *args) -> str:
    """The message of the RulesError fn(*args) raises (the rulebook tests' refusals)."""
    from vlmaudit.errors import RulesError

    with pytest.raises(RulesError) as info:
        fn(*args)
    return str(info.value)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """put(checkpoint_dir, repo_id) -> commit: the checkpoint as the Hugging Face cache holds a hub
    download (models--org--name/snapshots/COMMIT + refs/main), in a private cache for this test."""
    import hashlib
    import shutil

    from huggingface_hub import constants

    cache = tmp_path / "hf-hub-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))

    def put(checkpoint: Path, repo_id: str) -> str:
        commit = hashlib.sha1(repo_id.encode()).hexdigest()
        folder = cache / ("models--" + repo_id.replace("/", "--"))
        shutil.copytree(checkpoint, folder / "snapshots" / commit)
        (folder / "refs").mkdir()
        (folder / "refs" / "main").write_text(commit)
        return commit

    return put


def planted_logprobs(backend, n: int, letter: int, p_unsafe: float) -> list:
    """For a VLM judge's next_token_logprobs: per question, yes/no at P(unsafe), and all of the
    category question's mass on the option LETTER."""
    import torch

    vocab = backend.model.config.get_text_config().vocab_size
    yes_no = torch.full((n, vocab), -1e9)
    yes_no[:, backend.safe_ids[0]] = float(np.log(1 - p_unsafe))
    yes_no[:, backend.unsafe_ids[0]] = float(np.log(p_unsafe))
    options = torch.full((n, vocab), -1e9)
    options[:, backend.letter_ids[letter][0]] = 0.0
    return [yes_no] * (len(backend.suffixes["image"]) - 1) + [options]


def save_tiny_head(out: Path, vision_model: Path) -> Path:
    """A random SafetyHead (dim 8, 2 tokens, 2 heads, seed 0) on VISION_MODEL's tower, saved like
    train-head does, with the shipped taxonomy."""
    import torch

    from vlmaudit.backends.modelref import ModelOptions
    from vlmaudit.backends.vision import VisionTower
    from vlmaudit.head.model import SafetyHead, save_head
    from vlmaudit.rulebook.load import load_rules

    taxonomy = load_rules().taxonomy
    tower = VisionTower(ModelOptions(str(vision_model), "cpu"))
    torch.manual_seed(0)
    save_head(SafetyHead(tower.width, len(taxonomy.concepts), len(taxonomy.categories), dim=8, tokens=2, heads=2),
              out, {"vision_model": str(vision_model), "vision_revision": tower.revision, "vision_dim": tower.width,
                    "dim": 8, "tokens": 2, "heads": 2, "concepts": taxonomy.concept_ids,
                    "categories": taxonomy.category_ids})
    return out
