"""hf://datasets/ listing (scan/hfhub.py) against a stand-in HfFileSystem: which files become
shard URLs, which call lists them, and the exact one-line refusals."""

import huggingface_hub
import pytest

from vlmaudit.errors import ShardSpecError
from vlmaudit.scan.hfhub import HubSelection, list_hub_dataset, parse_hub_url, select_files


class FakeHub:
    """Records every listing call; `files` is what the hub holds, `error` what listing raises."""

    calls: list = []
    files: list = []
    error: Exception | None = None

    def find(self, path):
        return self._answer("find", path)

    def glob(self, path):
        return self._answer("glob", path)

    def _answer(self, how, path):
        FakeHub.calls.append((how, path))
        if FakeHub.error is not None:
            raise FakeHub.error
        return list(FakeHub.files)


@pytest.fixture
def hub(monkeypatch):
    monkeypatch.setattr(huggingface_hub, "HfFileSystem", FakeHub)
    FakeHub.calls, FakeHub.files, FakeHub.error = [], [], None
    return FakeHub


def refusal(url, selection=None) -> str:
    with pytest.raises(ShardSpecError) as info:
        list_hub_dataset(url, selection or HubSelection())
    return str(info.value)


def test_selection_defaults_to_everything():
    assert HubSelection() == HubSelection(None, None, None)


@pytest.mark.parametrize("url, parsed", [
    ("hf://datasets/org/name", ("org/name", None, "")),
    ("hf://datasets/org/name/", ("org/name", None, "")),
    ("hf://datasets//org/name//", ("org/name", None, "")),
    ("hf://datasets/org/name@", ("org/name", None, "")),
    ("hf://datasets/org/name@v2/a/b/c.parquet", ("org/name", "v2", "a/b/c.parquet")),
    ("hf://datasets/org/name/sub", ("org/name", None, "sub")),
    ("hf://datasets/Xorg/nameX/subX", ("Xorg/nameX", None, "subX")),
])
def test_parse_hub_url(url, parsed):
    assert parse_hub_url(url) == parsed


@pytest.mark.parametrize("url", ["hf://datasets/", "hf://datasets/org", "hf://datasets//name"])
def test_parse_hub_url_refuses_a_url_without_org_and_name(url):
    with pytest.raises(ShardSpecError) as info:
        parse_hub_url(url)
    assert str(info.value) == f"{url}: expected hf://datasets/ORG/NAME[/PATH]"


def test_the_tables_of_a_dataset_become_sorted_shard_urls(hub):
    hub.files = ["datasets/org/name/data/train-1.parquet", "datasets/org/name/README.md",
                 "datasets/org/name/data/train-0.PARQUET", "datasets/org/name/x/a.arrow",
                 "datasets/other/name/data/b.parquet", "datasets/org/name2/c.parquet", "datasets/org/name"]
    assert list_hub_dataset("hf://datasets/org/name", HubSelection()) == [
        "hf://datasets/org/name/data/train-0.PARQUET", "hf://datasets/org/name/data/train-1.parquet",
        "hf://datasets/org/name/x/a.arrow"]
    assert hub.calls == [("find", "datasets/org/name")]


def test_names_ending_in_x_keep_their_x(hub):
    hub.files = ["datasets/Xo/nX/dX/a.parquet"]
    assert list_hub_dataset("hf://datasets/Xo/nX/dX", HubSelection()) == ["hf://datasets/Xo/nX/dX/a.parquet"]
    assert hub.calls == [("find", "datasets/Xo/nX/dX")]


def test_a_path_is_listed_below_and_a_pattern_is_globbed(hub):
    hub.files = ["datasets/org/name/data/a.parquet"]
    assert list_hub_dataset("hf://datasets/org/name/data/", HubSelection()) == ["hf://datasets/org/name/data/a.parquet"]
    for pattern in ("data/*.parquet", "data/a?parquet", "data/[ab].parquet"):
        list_hub_dataset(f"hf://datasets/org/name/{pattern}", HubSelection())
    assert hub.calls == [("find", "datasets/org/name/data"), ("glob", "datasets/org/name/data/*.parquet"),
                         ("glob", "datasets/org/name/data/a?parquet"), ("glob", "datasets/org/name/data/[ab].parquet")]


def test_the_revision_flag_wins_over_the_url_and_is_quoted(hub):
    hub.files = ["datasets/org/name@my%2Fbranch/t.parquet", "datasets/org/name@v1/t.parquet"]
    got = list_hub_dataset("hf://datasets/org/name@v1", HubSelection(revision="my/branch"))
    assert got == ["hf://datasets/org/name@my%2Fbranch/t.parquet"]
    assert list_hub_dataset("hf://datasets/org/name@v1", HubSelection()) == ["hf://datasets/org/name@v1/t.parquet"]
    hub.files = ["datasets/org/name@refs/convert/parquet/default/train/0000.parquet",
                 "datasets/org/name@refs/pr/12/a.parquet"]
    got = list_hub_dataset("hf://datasets/org/name", HubSelection(revision="refs/convert/parquet", split="train"))
    assert got == ["hf://datasets/org/name@refs/convert/parquet/default/train/0000.parquet"]
    assert list_hub_dataset("hf://datasets/org/name", HubSelection(revision="refs/pr/12")) == [
        "hf://datasets/org/name@refs/pr/12/a.parquet"]
    assert hub.calls[-1] == ("find", "datasets/org/name@refs/pr/12")
    hub.files = ["datasets/org/name@refs%2Fpr%2Fx/a.parquet"]
    assert list_hub_dataset("hf://datasets/org/name", HubSelection(revision="refs/pr/x")) == [
        "hf://datasets/org/name@refs%2Fpr%2Fx/a.parquet"]


def test_no_tables_is_one_line_naming_the_revision(hub):
    hub.files = ["datasets/org/name/README.md"]
    assert refusal("hf://datasets/org/name") == "hf://datasets/org/name: no .parquet/.arrow files in this dataset"
    assert refusal("hf://datasets/org/name", HubSelection(revision="v3")) == (
        "hf://datasets/org/name: no .parquet/.arrow files in this dataset at revision v3")


def test_config_and_split_are_passed_to_the_selection(hub):
    hub.files = [f"datasets/o/n/{p}" for p in ("a/train/0.parquet", "a/test/0.parquet", "b/train/0.parquet",
                                               "b/test/0.parquet")]
    assert list_hub_dataset("hf://datasets/o/n", HubSelection(split="train", config="b")) == [
        "hf://datasets/o/n/b/train/0.parquet"]
    assert refusal("hf://datasets/o/n", HubSelection(config="c")) == (
        "hf://datasets/o/n: no files for --config 'c' (directories: a, b)")


@pytest.mark.parametrize("error, message", [
    (FileNotFoundError("gone"), "hf://datasets/o/n: no such dataset or path (or it is private and no token is set)"),
    (RuntimeError("offline\nsecond line"), "hf://datasets/o/n: cannot list the dataset: RuntimeError: offline"),
    (RuntimeError("  \n "), "hf://datasets/o/n: cannot list the dataset: RuntimeError"),
    (ValueError(), "hf://datasets/o/n: cannot list the dataset: ValueError"),
    (OSError("x" * 400), "hf://datasets/o/n: cannot list the dataset: OSError: " + "x" * 300),
    (OSError("no route X"), "hf://datasets/o/n: cannot list the dataset: OSError: no route X"),
])
def test_listing_failures_are_one_line(hub, error, message):
    hub.error = error
    assert refusal("hf://datasets/o/n") == message


@pytest.mark.parametrize("path, split, chosen", [
    ("data/train-00000-of-00001.parquet", "train", True), ("train/0000.parquet", "train", True),
    ("mnist-test.parquet", "test", True), ("data/train.parquet", "train", True), ("train_x.parquet", "train", True),
    ("a train.parquet", "train", True), ("train0.parquet", "train", True), ("x.train.y.parquet", "train", True),
    ("pretrain-0.parquet", "train", False), ("trains.parquet", "train", False), ("latest/0.parquet", "test", False),
    ("a/testing.parquet", "test", False), ("train.parquet", "tr.in", False), ("data/Train.parquet", "train", False),
    ("x.train.parquet", "train", True), ("a/b.parquet", "parquet", False), ("a/b.arrow", "arrow", False),
])
def test_a_split_is_the_word_between_separators(path, split, chosen):
    if chosen:
        assert select_files([path, "other/x.parquet"], split, None) == [path]
    else:
        with pytest.raises(ShardSpecError, match="no files for --split"):
            select_files([path], split, None)


def test_split_and_config_refusals_list_what_there_is():
    paths = [f"c{i}/train/{i}.parquet" for i in range(12)] + ["top.parquet"]
    with pytest.raises(ShardSpecError) as info:
        select_files(paths, None, "x", "U")
    assert str(info.value) == "U: no files for --config 'x' (directories: c0, c1, c10, c11, c2, c3, c4, c5, c6, c7)"
    with pytest.raises(ShardSpecError) as info:
        select_files(["top.parquet"], None, "x", "U")
    assert str(info.value) == "U: no files for --config 'x' (directories: none)"
    with pytest.raises(ShardSpecError) as info:
        select_files(paths, "dev", None, "U")
    assert str(info.value) == ("U: no files for --split 'dev' (files: c0/train/0.parquet, c1/train/1.parquet, "
                               "c2/train/2.parquet, c3/train/3.parquet, c4/train/4.parquet, ...)")
    with pytest.raises(ShardSpecError) as info:
        select_files(paths[:6], "dev", None, "U")
    assert str(info.value).endswith("c4/train/4.parquet, ...)")
    with pytest.raises(ShardSpecError) as info:
        select_files(paths[:5], "dev", None, "U")
    assert str(info.value) == ("U: no files for --split 'dev' (files: c0/train/0.parquet, c1/train/1.parquet, "
                               "c2/train/2.parquet, c3/train/3.parquet, c4/train/4.parquet)")
    with pytest.raises(ShardSpecError) as info:
        select_files(["a.parquet"], "dev", None)
    assert str(info.value) == ": no files for --split 'dev' (files: a.parquet)"


def test_config_is_the_first_directory_only():
    paths = ["cfg/train/0.parquet", "x/cfg/0.parquet", "cfg.parquet"]
    assert select_files(paths, None, "cfg") == ["cfg/train/0.parquet"]
    assert select_files(paths, "", "") == paths
