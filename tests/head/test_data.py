"""head/data.py, the one labelled-data loader of `train-head`, `eval` and `distill`: each layout
gives the rows, labels and image paths it holds; each broken or hostile input is one error line
that names the file and the row (or line) at fault."""

import json
import os
import re
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import png
from vlmaudit.errors import UserError
from vlmaudit.head import data as D
from vlmaudit.head.data import SAFE, load_examples, read_image
from vlmaudit.rulebook.load import load_rules

SWASTIKA, CONFEDERATE_FLAG, HATE = 0, 1, 0  # indices in the shipped taxonomy


@pytest.fixture(scope="module")
def taxonomy():
    return load_rules().taxonomy


def labels(examples):
    return [(e.concept, e.category) for e in examples]


def cannot_read(example) -> str:
    with pytest.raises(UserError) as info:
        read_image(example)
    return str(info.value)


def test_csv_labels_name_concepts_categories_and_safe_rows(tmp_path, taxonomy):
    (tmp_path / "labels.csv").write_text(
        "file_name,category,unsafe_concept,label\n"
        "a.png,Hate,Swastika,\n"             # authors' spelling
        "b.png,hate,swastika,unsafe\n"       # our ids; a label that is not 'safe'
        "c.png,Hate,Swastika,Safe\n"         # the label wins over the concept
        "d.png,Hate,Swastika, 0\n"
        "e.png,Hate,Swastika,FALSE\n"
        "f.png,,,\n"                         # no concept: safe
        "g.png,,Confederate Flag,1\n")       # no category: the concept's
    examples = load_examples(tmp_path, taxonomy)
    assert labels(examples) == [(SWASTIKA, HATE)] * 2 + [(SAFE, SAFE)] * 4 + [(CONFEDERATE_FLAG, HATE)]
    assert [e.image for e in examples] == [(tmp_path / f"{c}.png").resolve() for c in "abcdefg"]
    # the images are read later; a missing one names its row, safe or not
    assert cannot_read(examples[0]).startswith("labels.csv row 1: cannot read image: ")
    assert cannot_read(examples[2]).startswith("labels.csv row 3: cannot read image: ")


def test_jsonl_labels_skip_blank_lines_and_take_the_authors_image_filename(tmp_path, taxonomy):
    (tmp_path / "metadata.jsonl").write_text(
        json.dumps({"image_filename": "imgs/a.png", "category": "Hate", "unsafe_concept": "Swastika"}) + "\n\n  \n"
        + json.dumps({"image_filename": "imgs/b.png", "unsafe_concept": "Swastika", "label": 0}) + "\n")
    examples = load_examples(tmp_path, taxonomy)
    assert labels(examples) == [(SWASTIKA, HATE), (SAFE, SAFE)]
    assert [e.image for e in examples] == [(tmp_path / "imgs" / n).resolve() for n in ("a.png", "b.png")]
    assert cannot_read(examples[1]).startswith("metadata.jsonl line 4: cannot read image: ")


def test_a_jsonl_line_of_exactly_the_limit_loads_one_more_character_is_refused(tmp_path, taxonomy):
    row = json.dumps({"image": "a.png", "unsafe_concept": "Swastika"})
    (tmp_path / "labels.jsonl").write_text(row + " " * (D.MAX_LINE - len(row) - 1) + "\n")  # MAX_LINE with the newline
    assert labels(load_examples(tmp_path, taxonomy)) == [(SWASTIKA, HATE)]
    (tmp_path / "labels.jsonl").write_text(row + " " * (D.MAX_LINE - len(row)) + "\n")
    with pytest.raises(UserError, match=f"^labels.jsonl line 1: longer than {D.MAX_LINE} characters$"):
        load_examples(tmp_path, taxonomy)


def _csv(text):
    return {"labels.csv": text}


def _jsonl(*lines):
    return {"labels.jsonl": "\n".join(lines) + "\n"}


def _parquet(**columns):
    return {"train.parquet": pa.table(columns)}


BAD_DATA = [
    (_csv("image,unsafe_concept\na.png,Swastika\nb.png,Unicorns\n"),
     "labels.csv row 2: unknown unsafe_concept 'Unicorns' (not a unsafe_concept name or id of the taxonomy)"),
    (_csv("image,category,unsafe_concept\na.png,Nope,Swastika\n"),
     "labels.csv row 1: unknown category 'Nope' (not a category name or id of the taxonomy)"),
    (_csv("image,category,unsafe_concept\na.png,Sexual,Swastika\n"),
     "labels.csv row 1: concept 'Swastika' is not in category 'Sexual'"),
    (_csv("image,unsafe_concept\na.png,Swastika\n,Swastika\n"), "labels.csv row 2: no image / file_name column"),
    (_csv("image,unsafe_concept\n../x.png,Swastika\n"), "labels.csv row 1: image path '../x.png' leaves the data directory"),
    (_csv("image,unsafe_concept\na.png,\"" + "x" * (1 << 18) + "\"\n"), "labels.csv: not a readable CSV file (field larger"),
    (_csv("image,unsafe_concept\n"), "no labelled images found"),
    (_csv("image\n../" + "x" * 300 + "\n"), "labels.csv row 1: image path " + repr(("../" + "x" * 300)[:100]) + " leaves"),
    ({**_csv("image\na.png\n"), **_jsonl('{"image": "a.png"}')},
     "expected exactly one .csv or .jsonl label file, found 2"),
    ({"labels.txt": "a.png,Swastika\n"}, None),  # --data names a file that is not Parquet
    (_jsonl('{"image": "a.png"}', "", "{oops"), "labels.jsonl line 3: not JSON"),
    (_jsonl('{"image": "a.png"}', "[1, 2]"), "labels.jsonl line 2: not a JSON object"),
    (_jsonl('{"image": "a.png"}', "", '{"unsafe_concept": "Swastika"}'), "labels.jsonl line 3: no image / file_name column"),
    (_parquet(image=["a.png", "b.png", "c.png"], unsafe_concept=["Swastika", "Swastika", "Unicorns"]),
     "train.parquet row 2: unknown unsafe_concept 'Unicorns'"),
    (_parquet(image=[{"bytes": None, "path": None}], unsafe_concept=["Swastika"]), "train.parquet row 0: no image"),
    (_parquet(image=[{"bytes": None, "path": "../x.png"}]), "train.parquet row 0: image path '../x.png' leaves"),
    (_parquet(image=["a.png", "../x.png"]), "train.parquet row 1: image path '../x.png' leaves"),
]


@pytest.mark.parametrize(("files", "message"), BAD_DATA, ids=[re.sub(r"\W+", "-", f"{next(iter(f))} {m}")[:60] for f, m in BAD_DATA])
def test_broken_labels_are_one_error_line_naming_the_file_and_row(tmp_path, taxonomy, files, message):
    data = tmp_path / "data"
    data.mkdir()
    for name, content in files.items():
        if isinstance(content, pa.Table):
            pq.write_table(content, data / name)
        else:
            (data / name).write_text(content)
    target = data / "labels.txt" if message is None else data
    with pytest.raises(UserError) as info:
        load_examples(target, taxonomy)
    text = str(info.value)
    assert "\n" not in text
    if message is None:
        message = (f"--data {target}: expected a Parquet file, a directory of Parquet files, or a directory "
                   "with a CSV/JSONL file of labels")
    assert message in text


def test_a_missing_data_path_is_named(tmp_path, taxonomy):
    with pytest.raises(UserError, match=f"^--data {tmp_path / 'nope'}: no such file or directory$"):
        load_examples(tmp_path / "nope", taxonomy)


def test_parquet_image_paths_resolve_beside_the_parquet_file_and_stay_inside_data(tmp_path, taxonomy):
    data = tmp_path / "data"
    (data / "imgs").mkdir(parents=True)
    pq.write_table(pa.table({"image": ["imgs/a.png", "imgs/b.png"], "unsafe_concept": ["Swastika", None]}),
                   data / "train.parquet")
    expected = [(data / "imgs" / n).resolve() for n in ("a.png", "b.png")]
    for target in (data, data / "train.parquet"):  # a directory or the file itself
        examples = load_examples(target, taxonomy)
        assert [e.image for e in examples] == expected and labels(examples) == [(SWASTIKA, HATE), (SAFE, SAFE)]
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    pq.write_table(pa.table({"image": pa.array([{"bytes": None, "path": "imgs/a.png"}, {"bytes": png(0), "path": "x"}],
                                               image)}), data / "train.parquet")
    examples = load_examples(data / "train.parquet", taxonomy)
    assert [e.image for e in examples] == [expected[0], png(0)]  # bytes win over the path
    assert cannot_read(examples[0]).startswith("train.parquet row 0: cannot read image: ")


def test_the_hub_layout_data_dir_with_a_readme_loads(tmp_path, taxonomy):
    (tmp_path / "data").mkdir()
    (tmp_path / "README.md").write_text("---\nlicense: cc\n---\n")
    pq.write_table(pa.table({"image": [png(0), png(1)], "category": ["Hate", None], "unsafe_concept": ["Swastika", None]}),
                   tmp_path / "data" / "train-00000-of-00001.parquet")
    examples = load_examples(tmp_path, taxonomy)
    assert labels(examples) == [(SWASTIKA, HATE), (SAFE, SAFE)] and examples[0].image == png(0)
    assert read_image(examples[1]).size == (48, 40)  # decoded from the row's bytes


def test_an_imagefolder_with_metadata_loads_its_rows(tmp_path, taxonomy):
    (tmp_path / "a.png").write_bytes(b"not a png")
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "unsafe_concept": "Swastika"}) + "\n")
    examples = load_examples(tmp_path, taxonomy)
    assert labels(examples) == [(SWASTIKA, HATE)] and examples[0].image == tmp_path / "a.png"
    assert cannot_read(examples[0]).startswith(f"{tmp_path.name}/a: cannot read image: ")


def test_safe_images_are_every_image_below_the_directory(tmp_path, taxonomy):
    (tmp_path / "labels.csv").write_text("image,unsafe_concept\na.png,Swastika\n")
    safe = tmp_path / "safe"
    (safe / "sub").mkdir(parents=True)
    (safe / "sub" / "b.JPG").write_bytes(b"broken")
    (safe / "c.png").write_bytes(png(0))
    (safe / "notes.txt").write_text("not an image")
    examples = load_examples(tmp_path, taxonomy, safe)
    assert [e.image for e in examples[1:]] == [safe / "c.png", safe / "sub" / "b.JPG"]
    assert labels(examples) == [(SWASTIKA, HATE), (SAFE, SAFE), (SAFE, SAFE)]
    assert read_image(examples[1]).size == (48, 40)
    assert cannot_read(examples[2]).startswith(f"{safe / 'sub' / 'b.JPG'}: cannot read image: ")
    with pytest.raises(UserError, match=f"^--safe-images {tmp_path / 'labels.csv'}: not a directory$"):
        load_examples(tmp_path, taxonomy, tmp_path / "labels.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=f"^--safe-images {tmp_path / 'empty'}: no images in it$"):
        load_examples(tmp_path, taxonomy, tmp_path / "empty")


def test_the_authors_layout_prefers_perception_metadata_and_confines_paths(tmp_path):
    assert not D.authors_layout(tmp_path) and not D.authors_layout(tmp_path / "x.jsonl")
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"image_filename": "m.png"}) + "\n")
    assert D.authors_layout(tmp_path)
    assert [r["image"] for r, _ in D.authors_records(tmp_path)] == [(tmp_path / "m.png").resolve()]
    (tmp_path / "perception_metadata.jsonl").write_text(
        "\n" + json.dumps({"image_filename": "imgs/p.png", "options": ["a", "b"]}) + "\n")
    records = list(D.authors_records(tmp_path))
    assert records == [({"image_filename": "imgs/p.png", "options": ["a", "b"], "image": (tmp_path / "imgs" / "p.png").resolve()},
                        "perception_metadata.jsonl line 2")]
    for row, message in (({"image": "p.png"}, "perception_metadata.jsonl line 1: no image_filename"),
                         ({"image_filename": "/etc/hostname"}, "line 1: image path '/etc/hostname' leaves the data")):
        (tmp_path / "perception_metadata.jsonl").write_text(json.dumps(row) + "\n")
        with pytest.raises(UserError, match=message):
            list(D.authors_records(tmp_path))


def test_an_image_that_is_not_a_regular_file_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    result = []
    reader = threading.Thread(target=lambda: result.append(cannot_read(D.Example(fifo, SAFE, SAFE, "y"))), daemon=True)
    reader.start()
    reader.join(30)  # the open returns at once; a blocking open would wait for a writer forever
    blocked = reader.is_alive()
    if blocked:
        with open(fifo, "wb"):  # let it go
            pass
        reader.join()
    assert not blocked and result == ["y: cannot read image: fifo.png is not a regular file"]


def test_image_files_up_to_the_limit_are_read_whole_larger_ones_are_refused_unread(tmp_path, monkeypatch):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4, 5), (200, 10, 10)).save(buffer, "BMP")  # rows without padding: one byte short does not decode
    (tmp_path / "a.bmp").write_bytes(buffer.getvalue())
    monkeypatch.setattr(D, "MAX_IMAGE_FILE_BYTES", len(buffer.getvalue()))
    assert read_image(D.Example(tmp_path / "a.bmp", SAFE, SAFE, "a")).getpixel((3, 4)) == (200, 10, 10)
    monkeypatch.undo()
    big = tmp_path / "big.png"
    with open(big, "wb") as handle:
        handle.truncate(D.MAX_IMAGE_FILE_BYTES + 1)  # sparse: nothing is written or read
    assert cannot_read(D.Example(big, SAFE, SAFE, "b")) == \
        f"b: cannot read image: big.png is {D.MAX_IMAGE_FILE_BYTES + 1} bytes, over the 64 MiB limit"


def test_a_quoted_csv_field_keeps_its_line_break(tmp_path, taxonomy):
    (tmp_path / "labels.csv").write_bytes(b'image,unsafe_concept\r\n"two\r\nlines.png",Swastika\r\nb.png,\r\n')
    assert [e.image.name for e in load_examples(tmp_path, taxonomy)] == ["two\r\nlines.png", "b.png"]
