"""Every input has a budget: YAML size and alias bombs, member-name length, decoded pixels."""

import io
import json
import subprocess
import sys
import textwrap

import pyarrow.parquet as pq
import pytest

from conftest import run_cli, scan_args, write_tar
from vlmaudit.errors import RulesError

BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(9))


def test_yaml_alias_bomb_refused_before_expanding(tmp_path):
    """10**10 nodes once expanded: refused by counting, so the test ends at all (no wall-clock
    assert: timing lives in benchmarks)."""
    from vlmaudit.rulebook.yamlfile import read_yaml

    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)  # 200 bytes on disk
    with pytest.raises(RulesError, match="alias bomb"):
        read_yaml(path)


def test_yaml_recursive_alias_and_size_limit(tmp_path):
    from vlmaudit.rulebook.yamlfile import MAX_YAML_BYTES, read_yaml

    (tmp_path / "loop.yaml").write_text("a: &a [1, *a]\n")
    with pytest.raises(RulesError, match="alias bomb"):
        read_yaml(tmp_path / "loop.yaml")
    (tmp_path / "big.yaml").write_text("x: " + "y" * MAX_YAML_BYTES + "\n")
    with pytest.raises(RulesError, match="byte limit"):
        read_yaml(tmp_path / "big.yaml")
    (tmp_path / "ok.yaml").write_text("base: &b {t: 0.5}\nuse: [*b, *b]\n")
    assert read_yaml(tmp_path / "ok.yaml") == {"base": {"t": 0.5}, "use": [{"t": 0.5}, {"t": 0.5}]}


def test_rules_alias_bomb_is_one_line_on_the_command_line(tmp_path):
    (tmp_path / "taxonomy.yaml").write_text(BOMB)
    result = run_cli("concepts", "--rules", tmp_path)
    assert result.exit_code == 2 and "taxonomy.yaml: (file): aliases expand to over" in result.output


def test_overlong_member_names_become_rows_with_an_error(tmp_path, tiny_clip):
    from vlmaudit.demo.build import synthetic_image
    import random

    image = synthetic_image(random.Random(0))
    long_key, huge_key = "k" * 10_000, "h" * 200_000
    shard = write_tar(tmp_path / "names.tar", [
        ("good.jpg", image), ("good.txt", b"fine"),
        (long_key + ".jpg", image), (long_key + ".txt", b"long"),
        ("other" + long_key + ".jpg", image),
        (huge_key + ".jpg", image),
        ("after.jpg", image),
    ])
    result = run_cli(*scan_args([shard], tmp_path / "out", tiny_clip))
    assert result.exit_code == 0, result.output
    rows = pq.read_table(tmp_path / "out" / "names.parquet").to_pylist()
    assert [r["status"] for r in rows] == ["ok", "bad_name", "bad_name", "bad_name", "ok"]
    assert max(len(r["key"]) for r in rows) < 300
    assert rows[1]["key"] != rows[2]["key"] and rows[1]["key"].startswith("k" * 200)
    assert "10004 characters" in rows[1]["error"] and "pax extended header of" in rows[3]["error"]
    assert rows[4]["key"] == "after"
    stats = json.loads((tmp_path / "out" / "names.stats.json").read_text())
    assert stats["status"] == "complete"


def test_huge_pngs_are_decoded_under_a_memory_budget(tmp_path):
    """16 PNGs of 4000x4000 (48 MB each as RGB): the prepared batch must stay small."""
    script = textwrap.dedent("""
        import io, resource, sys
        from PIL import Image
        from vlmaudit.scan.imaging import decode_image
        buffer = io.BytesIO()
        Image.new("RGBA", (4000, 4000), (10, 200, 30, 128)).save(buffer, format="PNG")
        data = buffer.getvalue()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        kept = [decode_image(data, max_pixels=50_000_000, draft_size=224) for _ in range(16)]
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        print(json.dumps({"grown_mb": grown, "sizes": sorted({image.size for image, _ in kept}),
                          "reported": sorted({size for _, size in kept})}))
    """)
    out = subprocess.run([sys.executable, "-c", "import json" + script], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    result = json.loads(out)
    assert result["grown_mb"] < 300, result  # 16 full-size RGB images would be 768 MB
    assert len(result["sizes"]) == 1 and all(224 <= side < 448 for side in result["sizes"][0]), result
    assert result["reported"] == [[4000, 4000]], result


@pytest.mark.parametrize("fmt, mode", [("PNG", "P"), ("PNG", "I;16"), ("PNG", "1"), ("WEBP", "RGB"),
                                       ("TIFF", "RGB"), ("GIF", "P"), ("BMP", "RGB"), ("PNG", "LA")])
def test_every_format_is_reduced_after_decoding(fmt, mode):
    from PIL import Image

    from vlmaudit.scan.imaging import decode_image

    buffer = io.BytesIO()
    Image.new(mode, (1200, 900)).save(buffer, format=fmt)
    image, size = decode_image(buffer.getvalue(), max_pixels=50_000_000, draft_size=224)
    assert size == (1200, 900) and image.mode == "RGB"
    assert 224 <= min(image.size) < 448 and image.size[0] > image.size[1]


def test_reduced_images_keep_their_exif_orientation():
    from PIL import Image

    from vlmaudit.scan.imaging import decode_image

    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: a 1200x900 sensor image is shown 900x1200
    buffer = io.BytesIO()
    Image.new("RGB", (1200, 900)).save(buffer, format="PNG", exif=exif)
    image, size = decode_image(buffer.getvalue(), max_pixels=50_000_000, draft_size=224)
    assert size == (900, 1200) and image.size[0] < image.size[1]
