"""--model references: config loading and its error lines, safetensors-only weights, the SDPA
request and its fallback, the attention a loaded model runs, and the revision fingerprint."""

import shutil
from pathlib import Path

import pytest

from vlmaudit.backends import modelref as M
from vlmaudit.backends.hubcheck import offline_hint
from vlmaudit.backends.modelref import ModelOptions
from vlmaudit.errors import ModelError


def error_of(fn, *args, **kwargs) -> str:
    with pytest.raises(ModelError) as err:
        fn(*args, **kwargs)
    return str(err.value)


def test_load_config_reads_a_local_checkpoint(tiny_clip):
    config = M.load_config(str(tiny_clip), False)
    assert config.model_type == "clip" and config.vision_config.patch_size == 8


def test_a_directory_that_is_no_checkpoint_names_the_loader_complaint(tmp_path):
    (tmp_path / "empty").mkdir()
    message = error_of(M.load_config, str(tmp_path / "empty"), False)
    assert message.startswith(f"model {str(tmp_path / 'empty')!r}: not a loadable checkpoint directory (")
    assert "config.json" in message and "\n" not in message


def test_a_missing_model_names_the_flag_in_the_offline_hint(tmp_path):
    ref = "org/never-downloaded"
    assert error_of(M.load_config, ref, False, "--judge-model") == (
        f"model {ref!r} is not available: not a local directory and not in the Hugging Face cache. "
        + offline_hint(ref, "--judge-model"))
    assert "--model opennsfw" in error_of(M.load_config, ref, False)


def test_not_available_keeps_the_first_line_cut_to_200_characters(tmp_path):
    ref = str(tmp_path)
    assert M._not_available(ref, OSError("first line\nsecond line")) == (
        f"model {ref!r}: not a loadable checkpoint directory (first line)")
    assert M._not_available(ref, OSError("  \n")) == f"model {ref!r}: not a loadable checkpoint directory (OSError)"
    long = M._not_available(ref, ValueError("x" * 300))
    assert long == f"model {ref!r}: not a loadable checkpoint directory ({'x' * 200})"


def test_custom_code_is_asked_for_explicitly(tmp_path):
    exc = ValueError("The repository contains custom code; pass trust_remote_code=True\nmore")
    assert M._not_available("org/custom", exc) == (
        "model 'org/custom' needs custom code from its repository; re-run with --trust-remote-code if you trust it")


def test_not_available_for_a_hub_id_uses_the_options_flag():
    message = M._not_available("org/x", OSError("404"), "--vision-model")
    assert message.endswith(offline_hint("org/x", "--vision-model"))
    assert M._not_available("org/x", OSError("404")).endswith(offline_hint("org/x", "--model"))


def pickle_only(tmp_path, tiny_clip):
    import torch
    from safetensors.torch import load_file

    unsafe = tmp_path / "pickle-model"
    shutil.copytree(tiny_clip, unsafe)
    torch.save(load_file(unsafe / "model.safetensors"), unsafe / "pytorch_model.bin")
    (unsafe / "model.safetensors").unlink()
    return unsafe


def test_pickle_weights_are_refused_unless_allowed(tmp_path, tiny_clip):
    from transformers import AutoModel

    unsafe = pickle_only(tmp_path, tiny_clip)
    assert error_of(M.from_pretrained, AutoModel, str(unsafe), ModelOptions(str(unsafe))) == (
        f"model {str(unsafe)!r} has no safetensors weights; pickle-based weights can run code: convert them, "
        "or pass --allow-unsafe-weights if you trust the source")
    model = M.from_pretrained(AutoModel, str(unsafe), ModelOptions(str(unsafe), allow_unsafe_weights=True))
    assert model.config.model_type == "clip"


def test_a_load_failure_that_is_not_about_safetensors_is_the_not_available_line(tmp_path, tiny_clip):
    from transformers import AutoModel

    broken = tmp_path / "broken"
    shutil.copytree(tiny_clip, broken)
    (broken / "model.safetensors").unlink()
    (broken / "config.json").unlink()
    message = error_of(M.from_pretrained, AutoModel, str(broken), ModelOptions(str(broken), allow_unsafe_weights=True))
    assert message.startswith(f"model {str(broken)!r}: not a loadable checkpoint directory (")


def test_sdpa_is_asked_for_and_default_attention_otherwise(tiny_clip):
    from transformers import AutoModel

    options = ModelOptions(str(tiny_clip))
    assert M.attention_of(M.from_pretrained(AutoModel, str(tiny_clip), options, sdpa=True)) == "sdpa"
    eager = M.from_pretrained(AutoModel, str(tiny_clip), options, attn_implementation="eager")
    assert M.attention_of(eager) == "eager"


def test_attention_of_an_object_without_a_config_is_none():
    assert M.attention_of(object()) is None

    class NoAttention:
        config = object()

    assert M.attention_of(NoAttention()) is None


class Loader:
    """A from_pretrained stand-in recording its calls; refuses SDPA like an architecture without it
    (or, with always=True, refuses every call with that message)."""

    def __init__(self, refuse: str | None = None, always: bool = False):
        self.calls, self.refuse, self.always = [], refuse, always

    def from_pretrained(self, ref, **kwargs):
        self.calls.append(kwargs)
        if self.refuse and (self.always or kwargs.get("attn_implementation") == "sdpa"):
            raise ValueError(self.refuse)
        return "model"


def test_an_architecture_without_sdpa_falls_back_to_its_default_attention():
    loader = Loader("SomeModel does not support an attention implementation through SDPA yet")
    assert M.from_pretrained(loader, "ref", ModelOptions("ref"), sdpa=True, dtype="float16") == "model"
    assert loader.calls == [
        {"use_safetensors": True, "trust_remote_code": False, "attn_implementation": "sdpa", "dtype": "float16"},
        {"use_safetensors": True, "trust_remote_code": False, "dtype": "float16"}]


def test_options_reach_the_loader():
    loader = Loader()
    M.from_pretrained(loader, "ref", ModelOptions("ref", allow_unsafe_weights=True, trust_remote_code=True))
    assert loader.calls == [{"use_safetensors": None, "trust_remote_code": True}]


def test_other_value_errors_are_not_retried():
    loader = Loader("bad dtype")
    message = error_of(M.from_pretrained, loader, "org/ref", ModelOptions("org/ref", flag="--judge-model"), sdpa=True)
    assert len(loader.calls) == 1 and message.endswith(offline_hint("org/ref", "--judge-model"))


def test_an_sdpa_complaint_without_sdpa_asked_for_is_not_retried():
    loader = Loader("sdpa is not supported", always=True)
    with pytest.raises(ValueError):
        M._load(loader, "ref", ModelOptions("ref"), {"attn_implementation": "eager"})
    assert len(loader.calls) == 1


class Config:
    def __init__(self, commit=None):
        self._commit_hash = commit


def test_fingerprint_of_a_hub_model_is_its_commit():
    assert M.fingerprint("org/name", Config("abc123")) == "abc123"
    assert M.fingerprint("org/name", Config()) == "unknown"


def checkpoint(tmp_path, name="ckpt", weights=b"w" * 100):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text('{"a": 1}')
    (folder / "model.safetensors").write_bytes(weights)
    return folder


def test_fingerprint_of_a_local_checkpoint_follows_its_files(tmp_path):
    base = checkpoint(tmp_path)
    value = M.fingerprint(str(base), Config("abc"))
    assert value.startswith("local-") and len(value) == len("local-") + 16
    assert M.fingerprint(str(checkpoint(tmp_path, "same")), Config()) == value  # content, not place or commit
    (base / "README.md").write_text("docs do not change the weights")
    assert M.fingerprint(str(base), Config()) == value
    changed = {}
    for suffix in (".json", ".safetensors", ".bin", ".txt", ".model"):
        other = checkpoint(tmp_path, "with" + suffix)
        (other / ("extra" + suffix)).write_bytes(b"x")
        changed[suffix] = M.fingerprint(str(other), Config())
    assert value not in changed.values()


def test_fingerprint_changes_with_the_first_or_last_mib_and_the_size(tmp_path):
    size = 3 << 20
    weights = bytes(size)
    base = M.fingerprint(str(checkpoint(tmp_path, "base", weights)), Config())
    head = M.fingerprint(str(checkpoint(tmp_path, "head", b"\1" + weights[1:])), Config())
    tail = M.fingerprint(str(checkpoint(tmp_path, "tail", weights[:-1] + b"\1")), Config())
    longer = M.fingerprint(str(checkpoint(tmp_path, "longer", weights + bytes(1))), Config())
    assert len({base, head, tail, longer}) == 4
    (tmp_path / "renamed").mkdir()
    (tmp_path / "renamed" / "config.json").write_text('{"a": 1}')
    (tmp_path / "renamed" / "weights.safetensors").write_bytes(weights)
    assert M.fingerprint(str(tmp_path / "renamed"), Config()) != base


def test_fingerprint_of_a_cached_hub_model_is_its_commit(hub_cache, tiny_clip):
    """transformers 5 no longer sets config._commit_hash: the commit comes from the cache (was "unknown")."""
    commit = hub_cache(tiny_clip, "vlmaudit-test/tiny-clip")
    config = M.load_config("vlmaudit-test/tiny-clip", False)
    assert M.fingerprint("vlmaudit-test/tiny-clip", config) == commit
    assert M.fingerprint("vlmaudit-test/not-cached", config) == "unknown"
    assert M.fingerprint("org/bad..name", config) == "unknown"  # not even a valid hub id


def test_a_cache_entry_that_is_no_commit_snapshot_is_not_a_revision(hub_cache, tiny_clip, tmp_path):
    from huggingface_hub import constants

    folder = Path(constants.HF_HUB_CACHE) / "models--org--branchy"
    shutil.copytree(tiny_clip, folder / "snapshots" / "not-a-commit")
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("not-a-commit")
    assert M.fingerprint("org/branchy", Config()) == "unknown"
