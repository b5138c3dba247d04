"""Column detection of Parquet/Arrow tables (scan/table_columns.py): every choice and every
refusal message pinned on small schemas, no file and no scan."""

import json

import pyarrow as pa
import pytest

from vlmaudit.errors import UserError
from vlmaudit.scan.table_columns import MAX_HF_METADATA, ColumnChoice, Columns, resolve_columns

IMG = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def schema(*fields, hf=None, raw=None):
    metadata = {b"huggingface": raw if raw is not None else json.dumps(hf).encode()} if hf is not None or raw else None
    return pa.schema([pa.field(n, t) for n, t in fields], metadata=metadata)


def resolve(s, **choice):
    return resolve_columns(s, "f.parquet", ColumnChoice(**choice))


def refusal(s, **choice) -> str:
    with pytest.raises(UserError) as info:
        resolve(s, **choice)
    return str(info.value)


def test_column_choice_defaults_to_detection():
    assert ColumnChoice() == ColumnChoice(None, None, None)
    assert Columns("i", "binary") == Columns("i", "binary", None, None, None, None)


@pytest.mark.parametrize("columns, names", [
    (Columns("img", "binary"), ["img"]),
    (Columns("img", "struct", "cap", "k", "u"), ["img", "cap", "k", "u"]),
    (Columns("img", "binary", None, "k", None), ["img", "k"]),
    (Columns("img", "binary", "cap", None, "u", "status"), ["img", "cap", "u", "status", "error_message"]),
    (Columns("img", "binary", "img", "cap", "cap"), ["img", "cap"]),
    (Columns("img", "binary", "", "", ""), ["img"]),
])
def test_names_lists_each_column_to_read_once_in_order(columns, names):
    assert columns.names() == names


def test_a_plain_webdataset_like_table():
    s = schema(("key", pa.string()), ("jpg", pa.binary()), ("txt", pa.string()), ("caption", pa.string()),
               ("url", pa.string()))
    assert resolve(s) == Columns("jpg", "binary", "caption", "key", "url", None)


def test_an_img2dataset_table_reads_status_and_error_message():
    s = schema(("image", pa.large_binary()), ("TEXT", pa.large_string()), ("id", pa.int64()),
               ("URL", pa.string()), ("status", pa.string()), ("error_message", pa.large_string()))
    assert resolve(s) == Columns("image", "binary", "TEXT", "id", "URL", "status")


@pytest.mark.parametrize("fields", [
    [("status", pa.string())],
    [("error_message", pa.string())],
    [("status", pa.int8()), ("error_message", pa.string())],
    [("status", pa.string()), ("error_message", pa.int8())],
])
def test_status_is_read_only_when_both_img2dataset_columns_are_strings(fields):
    assert resolve(schema(("img", pa.binary()), *fields)).status is None


@pytest.mark.parametrize("url_fields, url", [
    ([("url", pa.string()), ("URL", pa.string())], "url"),
    ([("url", pa.int32()), ("URL", pa.string_view())], "URL"),
    ([("url", pa.binary())], None),
    ([("Url", pa.string())], None),
])
def test_url_is_the_first_string_url_column(url_fields, url):
    assert resolve(schema(("img", pa.binary()), *url_fields)).url == url


@pytest.mark.parametrize("fields, image, kind", [
    ([("img", pa.binary()), ("image", pa.binary())], "image", "binary"),  # IMAGE_NAMES order, not file order
    ([("png", pa.binary()), ("jpg", pa.binary())], "jpg", "binary"),
    ([("webp", pa.binary()), ("jpeg", pa.binary())], "jpeg", "binary"),
    ([("img", pa.binary_view())], "img", "binary"),
    ([("image", pa.string()), ("photo", IMG)], "photo", "struct"),  # a named but unusable column is passed over
    ([("a", IMG), ("b", pa.binary())], "a", "struct"),
    ([("image", IMG), ("jpg", pa.binary())], "image", "struct"),
    ([("x", pa.struct([("bytes", pa.large_binary())]))], "x", "struct"),
])
def test_image_detection(fields, image, kind):
    got = resolve(schema(*fields))
    assert (got.image, got.image_kind) == (image, kind)


@pytest.mark.parametrize("t", [pa.struct([("bytes", pa.string())]), pa.struct([("data", pa.binary())]),
                               pa.list_(pa.binary()), pa.int64()])
def test_a_struct_without_binary_bytes_is_no_image(t):
    assert refusal(schema(("x", t))) == (
        f"f.parquet: no image column (its columns: 'x' {t}); choose one with --image-column "
        "(and --caption-column / --key-column)")


def test_hf_image_features_come_first_and_must_be_columns():
    hf = {"info": {"features": {"ghost": {"_type": "Image"}, "pic": {"_type": "Image"}, "jpg": {"_type": "Value"},
                                "txt": "Image"}}}
    s = schema(("jpg", pa.binary()), ("pic", IMG), ("txt", pa.binary()), hf=hf)
    assert resolve(s).image == "pic"


@pytest.mark.parametrize("raw", [
    b"not json", b"[1, 2]", json.dumps({"info": {"features": [1]}}).encode(),
    json.dumps({"info": {"features": {"pic": {"_type": "Image"}}}}).encode() + b" " * MAX_HF_METADATA,
    b"[" * 100_000,
])
def test_hostile_hf_metadata_is_ignored(raw):
    s = schema(("jpg", pa.binary()), ("pic", IMG), raw=raw)
    assert resolve(s).image == "jpg"


def test_hf_metadata_exactly_at_the_limit_is_read():
    body = json.dumps({"info": {"features": {"pic": {"_type": "Image"}}}}).encode()
    s = schema(("jpg", pa.binary()), ("pic", IMG), raw=body + b" " * (MAX_HF_METADATA - len(body)))
    assert resolve(s).image == "pic"


def test_hf_metadata_without_info_or_features():
    assert resolve(schema(("jpg", pa.binary()), ("pic", IMG), hf={"x": 1})).image == "jpg"
    assert resolve(schema(("jpg", pa.binary()), ("pic", IMG), hf={"info": {}})).image == "jpg"


def test_a_named_image_column_of_the_wrong_type_is_named_in_the_refusal():
    s = schema(("image", pa.string()), ("jpg", pa.int32()))
    assert refusal(s) == (
        "f.parquet: column 'image' is string, not image bytes (binary, or a struct {bytes, path}); "
        "choose the image column with --image-column (its columns: 'image' string, 'jpg' int32)")


@pytest.mark.parametrize("name", ["url", "URL", "image_url", "IMG_URL"])
def test_only_image_urls_is_metadata_to_download_first(name):
    s = schema(("caption", pa.string()), (name, pa.string()))
    assert refusal(s) == (
        f"f.parquet: no image bytes, only image URLs (column {name!r}): this is metadata (LAION-style); "
        "download the images first, e.g. with img2dataset (--output_format parquet or webdataset), "
        "and scan what it writes (for img2dataset's metadata beside a .tar, scan the .tar)")


def test_no_columns_at_all():
    assert refusal(schema()) == ("f.parquet: no image column (it has no columns); choose one with --image-column "
                                 "(and --caption-column / --key-column)")


def test_the_listing_stops_at_20_columns_and_says_how_many():
    fields = [(f"c{i}", pa.int8()) for i in range(21)]
    shown = ", ".join(f"'c{i}' int8" for i in range(20))
    assert refusal(schema(*fields)) == (f"f.parquet: no image column (its columns: {shown}, ... (21 in all)); "
                                        "choose one with --image-column (and --caption-column / --key-column)")
    assert "in all" not in refusal(schema(*fields[:20]))


def test_names_from_the_file_are_quoted_escaped_and_cut_at_80_characters():
    long = "n" * 100
    message = refusal(schema(("a\x1b[31m", pa.int8()), (long, pa.int8())))
    assert "'a\\x1b[31m' int8" in message and f"'{'n' * 80}' int8" in message and "n" * 81 not in message


def test_chosen_columns_are_used_even_when_others_would_be_detected():
    s = schema(("jpg", pa.binary()), ("alt", IMG), ("caption", pa.string()), ("alt_text", pa.large_string()),
               ("key", pa.string()), ("n", pa.int16()))
    assert resolve(s, image="alt", caption="alt_text", key="n") == Columns("alt", "struct", "alt_text", "n")


@pytest.mark.parametrize("choice, message", [
    ({"image": "nope"}, "f.parquet: --image-column 'nope': no such column (its columns: 'jpg' binary, 'cap' string)"),
    ({"caption": "nope"}, "f.parquet: --caption-column 'nope': no such column (its columns: 'jpg' binary, 'cap' string)"),
    ({"key": "nope"}, "f.parquet: --key-column 'nope': no such column (its columns: 'jpg' binary, 'cap' string)"),
    ({"image": "cap"}, "f.parquet: --image-column 'cap' is string, not image bytes (binary, or a struct {bytes, path})"),
    ({"key": "jpg"}, "f.parquet: column 'jpg' is binary, expected a string or integer column; choose another with "
                     "--key-column (its columns: 'jpg' binary, 'cap' string)"),
    ({"caption": "jpg"}, "f.parquet: column 'jpg' is binary, expected a string column; choose another with "
                         "--caption-column (its columns: 'jpg' binary, 'cap' string)"),
])
def test_each_flag_naming_a_bad_column_is_refused_in_one_line(choice, message):
    assert refusal(schema(("jpg", pa.binary()), ("cap", pa.string())), **choice) == message


@pytest.mark.parametrize("fields, message", [
    ([("jpg", pa.binary()), ("text", pa.int8())],
     "f.parquet: column 'text' is int8, expected a string column; choose another with --caption-column "
     "(its columns: 'jpg' binary, 'text' int8)"),
    ([("jpg", pa.binary()), ("id", pa.float32())],
     "f.parquet: column 'id' is float, expected a string or integer column; choose another with --key-column "
     "(its columns: 'jpg' binary, 'id' float)"),
])
def test_a_detected_caption_or_key_of_the_wrong_type_is_refused(fields, message):
    assert refusal(schema(*fields)) == message


@pytest.mark.parametrize("fields, caption, key", [
    ([("text", pa.string()), ("caption", pa.large_string())], "caption", None),
    ([("TEXT", pa.string()), ("text", pa.string_view())], "text", None),
    ([("id", pa.uint64()), ("key", pa.int8())], None, "key"),
    ([("id", pa.large_string())], None, "id"),
])
def test_caption_and_key_detection_order_and_types(fields, caption, key):
    got = resolve(schema(("jpg", pa.binary()), *fields))
    assert (got.caption, got.key) == (caption, key)
