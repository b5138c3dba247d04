"""Issue 22: known-content matching on real photos (scikit-image's): hashes stored by the scan,
`vlmaudit match` / `scan --bank` / `filter --bank` find exact copies and mildly edited copies of
bank photos and nothing else, and a matched sample's image is never shown, thumbnailed or written."""

import base64
import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import run_cli, scan_args, write_shard

BANK_PHOTOS = ("astronaut", "coffee", "chelsea")
UNRELATED = ("camera", "rocket", "immunohistochemistry", "moon", "coins", "brick", "colorwheel")
EDITS = ("resized", "jpeg30", "cropped", "brighter")

# Meta's published PDQ test vector (facebook/ThreatExchange, python-threatexchange
# tests/hashing/test_pdq_hasher.py: RANDOM_IMAGE_BASE64 -> RANDOM_IMAGE_PDQ).
META_PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAABoAAAAcCAYAAAB/E6/TAAABQGlDQ1BJQ0MgUHJvZmlsZQAAKJFjYGASSCwoyGFhYGDIzSspCnJ3UoiIjFJgf8rAzMDD"
    "wMGgziCUmFxc4BgQ4ANUwgCjUcG3awyMIPqyLsisbUEsbr4sN5Y9iTOwFjbIZsFUjwK4UlKLk4H0HyBOTC4oKmFgYEwAspXLSwpA7BYgW6QI6Cggewa"
    "InQ5hrwGxkyDsA2A1IUHOQPYVIFsgOSMxBch+AmTrJCGJpyOxofaCAHuokbmlgRMBl5IBSlIrSkC0c35BZVFmekaJgiMwhFIVPPOS9XQUjAyMDBkYQO"
    "ENUf1ZDByOjGKnEGIF/gwMlmUMDEyJCLE4FwaG7coMDPyFCDENoL/40xgYDkYXJBYlwh3A+I2lOM3YCMLmKWJgYP3x//9nWaCXdzEw/C36///33P///"
    "y5hYGC+ycBwoBAAJoJZwzimB1MAAACKZVhJZk1NACoAAAAIAAQBGgAFAAAAAQAAAD4BGwAFAAAAAQAAAEYBKAADAAAAAQACAACHaQAEAAAAAQAAAE4AAA"
    "AAAAAAkAAAAAEAAACQAAAAAQADkoYABwAAABIAAAB4oAIABAAAAAEAAAAaoAMABAAAAAEAAAAcAAAAAEFTQ0lJAAAAU2NyZWVuc2hvdB0LcNQAAAAJcEh"
    "ZcwAAFiUAABYlAUlSJPAAAAHUaVRYdFhNTDpjb20uYWRvYmUueG1wAAAAAAA8eDp4bXBtZXRhIHhtbG5zOng9ImFkb2JlOm5zOm1ldGEvIiB4OnhtcHRr"
    "PSJYTVAgQ29yZSA1LjQuMCI+CiAgIDxyZGY6UkRGIHhtbG5zOnJkZj0iaHR0cDovL3d3dy53My5vcmcvMTk5OS8wMi8yMi1yZGYtc3ludGF4LW5zIyI+"
    "CiAgICAgIDxyZGY6RGVzY3JpcHRpb24gcmRmOmFib3V0PSIiCiAgICAgICAgICAgIHhtbG5zOmV4aWY9Imh0dHA6Ly9ucy5hZG9iZS5jb20vZXhpZi8x"
    "LjAvIj4KICAgICAgICAgPGV4aWY6UGl4ZWxYRGltZW5zaW9uPjI2PC9leGlmOlBpeGVsWERpbWVuc2lvbj4KICAgICAgICAgPGV4aWY6VXNlckNvbW1lb"
    "nQ+U2NyZWVuc2hvdDwvZXhpZjpVc2VyQ29tbWVudD4KICAgICAgICAgPGV4aWY6UGl4ZWxZRGltZW5zaW9uPjI4PC9leGlmOlBpeGVsWURpbWVuc2lvbj"
    "4KICAgICAgPC9yZGY6RGVzY3JpcHRpb24+CiAgIDwvcmRmOlJERj4KPC94OnhtcG1ldGE+ChyymmEAAAAcaURPVAAAAAIAAAAAAAAADgAAACgAAAAOAAA"
    "ADgAAAmByXymqAAACLElEQVRIDYRTO2wTQRB949zZvoS4MIYkpgpIIJQGEYlUKIgCaFIh0UQoLS2RKKChixCIgAiIlCAEHULQQZMCmhQgUSIEdIkcG+zY"
    "JHeHnVtm72Pvntcwxc3O7Mx789mjSqUiYJAOCO9/WXhXs/FlZwgVP4NNLxNGTuQDjOUCHBvZw7lSG6eLHVgwwnSRKU1U+5PBne95vNzModVJJQu2iQCpF"
    "Rm1CBcnfFw74qOUDZSb3rFL1BaE5W85rP7IYncvDpB4jNstNiGR2iDDQ8CVSR+LTGiTXkxIVOWxLHxy8LHOkf+SAR11U+JCposBnp50cYDHmwitfa2J+X"
    "UHG66pyr6WOC/x8VGuTGJFq+ud2Vd2BF7MuDheiMZD5We/xcZO3CZxhuAoqU2S3EktJR2fui+PEN7OujjInREet3rD7BtNsqC4W+a/ccLG/FEbhwuEDLt"
    "32wINH9hyA8y88rSG5aOZ3g+8nvWY6GFzMJGy/PE88PyCg7OHrKgbw5cetdirjDaOWZySP8uD7R5ROjnJYf1mzsHcpJ2O0GxaaWp2+BtwscNcG+FeQyFS"
    "kMOUaHRnyhbWLu3TQQwW3d9mb4IhA5KzYKK7dYXIkM2uJ+cdLEzlzJeKl5YbiqUfCbd/SrpI0o8h3tH65QJOjetjW/3s4eYHD1vh350A6OAhbtwU4Vbtv"
    "x01rxYxmtXBxlbqTBI/8xS+ySQsVQcTxdWI66W+XFqqsi/aYaT7QrTrvwAAAP//WDKhWgAAAcFJREFUjVLPSwJBFH5P65B08JKSZUh56dy9U39Fh6AQpF"
    "/0wygIScSICCKKIIKi6NApomtg0Dno0jkVs6ws0qAfdLDXzO66M+606sDuvvne9973vtlBSBQI6iyKtikMXH5RsFoAQvxZCPEI2VNBjJhiHqUHxguCy3l"
    "8Wet1VHsjxJ7IbGwkKO6VKI2FqWIZgpuvQoyXScII0XxlfpbRLVCivbHuEusi/QMDB28SwsIqocUH1dGKr7qggd3+9ReETkuiuaUGYeFecqRnabXDQqu/"
    "XUq+QyL5YUtEmMuRdmIShdY6pV1j4fBJEQ6vPhlZvk2iFiHChEgxpTOQFbEcrftFhRFhJCd62t06ox7YF2E6y1TsmHpX2uhShWbuFKwWgDCZsbEjymgrI"
    "DZGhFNZzS2f1vZEDK6rmTsaT0uOrP34DAi0HbAmACcyCmaKcnG++C9h8Wx/E+symlKut85ib2Na2uk2oUqAY0zIaGQ64v312XQai/v8TjgbcQH65jOUL5"
    "Ur9f9+abdHwTGcMgfRBuIMi7DP7YTzcAt4WtnRXd480uDRN+RLvwrRdLQXVIVCt/xUqx1ILJ/bAcdDLuj1OjT0DwULeQovxm67AAAAAElFTkSuQmCC")
META_PDQ = "ad64cd9875e131a177b1f2a0d6b38ae1de9ea80421e4c51dde1b0363deba3466"


def test_pdq_reproduces_metas_published_test_vector():
    from PIL import Image

    from vlmaudit.scan.hashing import pdq_hash

    image = Image.open(io.BytesIO(base64.b64decode(META_PNG))).convert("RGB")
    digest, quality = pdq_hash(image)
    assert digest.hex() == META_PDQ and quality == 100


def photo(name: str):
    import skimage.data
    from PIL import Image

    array = getattr(skimage.data, name)()
    return Image.fromarray(array).convert("RGB")


def encode(image, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def edited(image, edit: str) -> bytes:
    from PIL import ImageEnhance

    w, h = image.size
    if edit == "resized":
        return encode(image.resize((w // 2, h // 2)))
    if edit == "jpeg30":
        return encode(image, 30)
    if edit == "cropped":  # 1 % off each side; PDQ loses crops fast (2.5 % a side: distance 42-56 here)
        return encode(image.crop((w // 100, h // 100, w - w // 100, h - h // 100)))
    return encode(ImageEnhance.Brightness(image).enhance(1.3))


@pytest.fixture(scope="module")
def photo_scan(tmp_path_factory, tiny_clip):
    """One shard: exact copies and four edits of each bank photo, and unrelated photos; a PDQ bank
    (ThreatExchange-style CSV with ids) of the originals and an MD5 list of the exact copies."""
    from vlmaudit.scan.hashing import byte_digests, pdq_hash

    root = tmp_path_factory.mktemp("photos")
    samples, expected = [], {}
    for name in BANK_PHOTOS:
        original = encode(photo(name))
        samples.append({"__key__": f"{name}-exact", "jpg": original, "txt": f"a photo {name}"})
        expected[f"{name}-exact"] = name
        for edit in EDITS:
            samples.append({"__key__": f"{name}-{edit}", "jpg": edited(photo(name), edit), "txt": "x"})
            expected[f"{name}-{edit}"] = name
    for name in UNRELATED:
        samples.append({"__key__": f"{name}-other", "jpg": encode(photo(name)), "txt": "unrelated"})
    shard = write_shard(root / "photos-00000.tar", samples)
    pdq_rows = [f"{pdq_hash(photo(name))[0].hex()}\tentry-{name}\tphoto\ttest" for name in BANK_PHOTOS]
    (root / "known-pdq.tsv").write_text("hash\tid\tlabel\tsource\n" + "\n".join(pdq_rows) + "\n")
    (root / "exact.md5").write_text("".join(byte_digests(encode(photo(n)))[1].hex() + "\n" for n in BANK_PHOTOS))
    reports = root / "reports"
    assert run_cli(*scan_args([shard], reports, tiny_clip)).exit_code == 0
    return root, shard, reports, expected


def matched(out_dir) -> dict:
    rows = pq.read_table(out_dir / "matches.parquet").to_pylist()
    return rows


def test_scan_stores_fixed_size_hashes_that_equal_the_bytes_and_pixels(photo_scan):
    import hashlib

    _, shard, reports, _ = photo_scan
    table = pq.read_table(reports / "photos-00000.parquet")
    assert str(table.schema.field("image_sha256").type) == "fixed_size_binary[32]"
    assert str(table.schema.field("image_pdq").type) == "fixed_size_binary[32]"
    import tarfile

    with tarfile.open(shard) as tar:
        data = {m.name.rsplit(".", 1)[0]: tar.extractfile(m).read() for m in tar if m.name.endswith(".jpg")}
    for row in table.to_pylist():
        assert row["image_sha256"] == hashlib.sha256(data[row["key"]]).digest()
        assert row["image_md5"] == hashlib.md5(data[row["key"]]).digest()
        assert len(row["image_pdq"]) == 32 and 0 <= row["image_pdq_quality"] <= 100
    run = json.loads((reports / "run.json").read_text())
    assert run["hashes"]["pdq"] is True


def test_match_finds_every_exact_copy_and_mild_edit_and_no_unrelated_photo(photo_scan, tmp_path):
    root, _, reports, expected = photo_scan
    result = run_cli("match", reports, "--bank", root / "known-pdq.tsv", "--bank", root / "exact.md5",
                     "--out", tmp_path / "m")
    assert result.exit_code == 0, result.output
    rows = matched(tmp_path / "m")
    pdq = {r["key"]: r for r in rows if r["bank"] == "known-pdq"}
    assert set(pdq) == set(expected), sorted(set(pdq) ^ set(expected))
    for key, name in expected.items():
        assert pdq[key]["bank_entry_id"] == f"entry-{name}" and 0 <= pdq[key]["distance"] <= 31
    assert max(pdq[f"{n}-exact"]["distance"] for n in BANK_PHOTOS) <= 8  # re-encoded at q95 only
    assert {r["key"] for r in rows if r["bank"] == "exact"} == {f"{n}-exact" for n in BANK_PHOTOS}
    assert "known-pdq (pdq, 3 entries): 15 matches" in result.output
    hexes = [line.split("\t")[0] for line in (root / "known-pdq.tsv").read_text().splitlines()[1:]]
    assert len(hexes) == 3 and not any(h in result.output for h in hexes)  # bank contents never printed
    csv = (tmp_path / "m" / "matches.csv").read_text().splitlines()
    assert csv[0] == '"key","shard","url","bank","bank_entry_id","distance","kind","image_hash"' and len(csv) == 19


def test_a_tighter_distance_loses_edits_and_the_quality_floor_skips_rows(photo_scan, tmp_path):
    root, _, reports, _ = photo_scan
    assert run_cli("match", reports, "--bank", root / "known-pdq.tsv", "--out", tmp_path / "a",
                   "--pdq-distance", "0").exit_code == 0
    tight = {r["key"] for r in matched(tmp_path / "a")}
    assert tight < {f"{n}-{e}" for n in BANK_PHOTOS for e in ("exact", *EDITS)}
    result = run_cli("match", reports, "--bank", root / "known-pdq.tsv", "--out", tmp_path / "b", "--min-quality", "101")
    assert result.exit_code == 2  # out of range: typer refuses it
    result = run_cli("match", reports, "--bank", root / "known-pdq.tsv", "--out", tmp_path / "c", "--min-quality", "100")
    assert "PDQ below --min-quality" in result.output


def test_a_previous_match_output_is_a_bank(photo_scan, tmp_path):
    root, _, reports, expected = photo_scan
    assert run_cli("match", reports, "--bank", root / "known-pdq.tsv", "--out", tmp_path / "first").exit_code == 0
    result = run_cli("match", reports, "--bank", tmp_path / "first" / "matches.parquet", "--out", tmp_path / "again")
    assert result.exit_code == 0, result.output
    assert {r["key"] for r in matched(tmp_path / "again")} >= set(expected)


@pytest.mark.parametrize("content, kind, line", [
    ("0123\n", "md5:", 1), ("a" * 32 + "\nzz" + "a" * 30 + "\n", "md5:", 2), ("", "md5:", None),
    ("hash,id\n" + "g" * 64 + ",x\n", "pdq:", 2), ("a" * 64 + "\n", "", None),
])
def test_a_bad_bank_is_one_line_naming_file_and_line(photo_scan, tmp_path, content, kind, line):
    _, _, reports, _ = photo_scan
    bank = tmp_path / "bad.txt"
    bank.write_text(content)
    result = run_cli("match", reports, "--bank", f"{kind}{bank}", "--out", tmp_path / "m")
    assert result.exit_code == 2
    assert result.output.startswith(f"error: bank {bank}") and result.output.count("\n") == 1
    assert (f"line {line}:" in result.output) if line else True
    assert not (tmp_path / "m" / "matches.parquet").exists()


def test_matched_samples_are_never_shown_thumbnailed_or_written(photo_scan, tmp_path):
    from vlmaudit.estimate import review_page
    from vlmaudit.report.reread import ReReadOptions

    root, shard, reports, expected = photo_scan
    copy = tmp_path / "reports"
    import shutil

    shutil.copytree(reports, copy)
    assert run_cli("match", copy, "--bank", root / "known-pdq.tsv").exit_code == 0  # default: REPORTS/matches
    summary = json.loads(run_cli("report", copy, "--json", "--threshold", "0", "--examples", "100",
                                 "--top", "75").output)
    shown = {item["key"] for items in summary["examples"].values() for item in items}
    assert shown and not shown & set(expected)
    assert summary["known_matches"]["banks"] == {"known-pdq": 15}
    html = tmp_path / "r.html"
    assert run_cli("report", copy, "--format", "html", "--output", html, "--threshold", "0", "--examples", "100",
                   "--shards", shard).exit_code == 0
    assert not any(key in html.read_text() for key in expected)
    rows = [{"shard": "photos-00000", "key": k} for k in [*expected, "camera-other"]]
    thumbs, _ = review_page.thumbnails(copy, rows, ReReadOptions(shards=[str(shard)]))
    assert set(thumbs) == {("photos-00000", "camera-other")}
    out = tmp_path / "filtered"
    result = run_cli("filter", copy, "--policy", "permissive", "--out", out, "--write-shards", tmp_path / "shards",
                     "--shards", shard)
    assert result.exit_code == 0, result.output
    import tarfile

    with tarfile.open(tmp_path / "shards" / "photos-00000.tar") as tar:
        written = {m.name.rsplit(".", 1)[0] for m in tar}
    assert not written & set(expected)
    drop = pq.read_table(out / "drop.parquet").to_pylist()
    assert {r["key"] for r in drop if r["reasons"][0]["rule"] == "bank:known-pdq"} == set(expected)


def test_filter_bank_and_the_policys_match_action(photo_scan, tmp_path):
    root, _, reports, expected = photo_scan
    policy = tmp_path / "lenient.yaml"
    policy.write_text("default: {threshold: 1.0, modality: any, action: drop}\nmatch: review\n")
    result = run_cli("filter", reports, "--policy", policy, "--out", tmp_path / "f", "--bank", root / "exact.md5")
    assert result.exit_code == 0, result.output
    review = pq.read_table(tmp_path / "f" / "review.parquet").to_pylist()
    assert {r["key"] for r in review} == {f"{n}-exact" for n in BANK_PHOTOS}
    assert {r["reasons"][0]["rule"] for r in review} == {"bank:exact"}
    summary = json.loads((tmp_path / "f" / "summary.json").read_text())
    assert summary["known_matches"] == {"exact": 3}
    assert (tmp_path / "f" / "matches.parquet").is_file()
    policy.write_text("default: {threshold: 1.0, modality: any, action: drop}\nmatch: keep\n")
    result = run_cli("filter", reports, "--policy", policy, "--out", tmp_path / "g", "--bank", root / "exact.md5")
    assert result.exit_code == 2 and "match" in result.output


def test_scan_bank_matches_in_the_same_pass_and_no_hashes_turns_them_off(photo_scan, tiny_clip, tmp_path):
    root, shard, _, expected = photo_scan
    out = tmp_path / "one-pass"
    result = run_cli(*scan_args([shard], out, tiny_clip, "--bank", root / "known-pdq.tsv"))
    assert result.exit_code == 0, result.output
    assert {r["key"] for r in matched(out / "matches")} == set(expected)
    bare = tmp_path / "bare"
    assert run_cli(*scan_args([shard], bare, tiny_clip, "--no-hashes")).exit_code == 0
    table = pq.read_table(bare / "photos-00000.parquet", columns=["image_sha256", "image_pdq"])
    assert table.column("image_sha256").null_count == table.num_rows == table.column("image_pdq").null_count
    result = run_cli("match", bare, "--bank", root / "known-pdq.tsv", "--out", tmp_path / "m")
    assert result.exit_code == 0 and "known-pdq (pdq, 3 entries): 0 matches" in result.output
    result = run_cli(*scan_args([shard], tmp_path / "x", tiny_clip, "--no-hashes", "--bank", root / "known-pdq.tsv"))
    assert result.exit_code == 2 and "--no-hashes" in result.output


def test_unrelated_photos_are_far_from_every_bank_photo():
    """The negative half on its own: PDQ distances between unrelated photos stay well above 31."""
    from vlmaudit.scan.hashing import pdq_hash

    bits = lambda name: np.unpackbits(np.frombuffer(pdq_hash(photo(name))[0], np.uint8))  # noqa: E731
    distances = [int((bits(a) != bits(b)).sum()) for a in BANK_PHOTOS for b in UNRELATED]
    assert min(distances) > 31, distances
