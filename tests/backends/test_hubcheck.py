"""Before a hub download: an unreachable hub gives one line naming what works offline, or the cached
copy with a note; local directories, URLs and the bundled opennsfw are never looked up."""

import pytest
from huggingface_hub import constants

from vlmaudit.backends import hubcheck
from vlmaudit.errors import ModelError

DEAD = "http://127.0.0.1:9"  # the discard port: connection refused at once


@pytest.fixture
def online_but_unreachable(monkeypatch, tmp_path):
    """HF_HUB_OFFLINE unset, the hub endpoint refusing connections, an empty hub cache."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", DEAD)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    hubcheck.hub_reachable.cache_clear()
    yield tmp_path / "hub-cache"
    hubcheck.hub_reachable.cache_clear()


def cache_config(cache, repo: str):
    commit = "0" * 40
    folder = cache / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    (folder / "snapshots" / commit).mkdir(parents=True)
    (folder / "snapshots" / commit / "config.json").write_text("{}")


def test_offline_hint_for_model_names_the_bundled_opennsfw():
    assert hubcheck.offline_hint("org/name") == (
        "Offline or air-gapped: set HF_HUB_OFFLINE=1 with the model in the cache, or pass --model DIR with a "
        "checkpoint downloaded elsewhere (hf download org/name --local-dir DIR), or use --model opennsfw "
        "(bundled with vlmaudit[nsfw], no download).")


@pytest.mark.parametrize("flag", ["--judge-model", "--vision-model"])
def test_offline_hint_for_other_flags_names_that_flag_only(flag):
    assert hubcheck.offline_hint("org/name", flag) == (
        f"Offline or air-gapped: set HF_HUB_OFFLINE=1 with the model in the cache, or pass {flag} DIR with a "
        "checkpoint downloaded elsewhere (hf download org/name --local-dir DIR).")


def test_unreachable_hub_and_no_cached_copy_is_one_error_with_the_hint(online_but_unreachable):
    with pytest.raises(ModelError) as err:
        hubcheck.check_hub("org/not-cached", "--judge-model")
    assert str(err.value) == (
        f"model 'org/not-cached' is not in the local Hugging Face cache and the hub ({DEAD}) cannot be reached. "
        + hubcheck.offline_hint("org/not-cached", "--judge-model"))
    assert hubcheck.hub_reachable(DEAD) is False


def test_unreachable_hub_with_a_cached_copy_uses_it_and_switches_the_hub_off(online_but_unreachable, capsys):
    cache_config(online_but_unreachable, "org/cached")
    hubcheck.check_hub("org/cached")
    assert constants.HF_HUB_OFFLINE is True
    assert capsys.readouterr().err == (f"note: the hub ({DEAD}) cannot be reached; using the cached copy of org/cached "
                                       "(set HF_HUB_OFFLINE=1 to skip this check)\n")


@pytest.mark.parametrize("ref", ["", "opennsfw", "s3://bucket/model", "https://example.com/model"])
def test_refs_that_never_come_from_the_hub_are_not_checked(online_but_unreachable, ref):
    hubcheck.check_hub(ref)  # no error although the hub is unreachable and nothing is cached
    assert constants.HF_HUB_OFFLINE is False


def test_an_id_the_cache_cannot_hold_is_not_cached(online_but_unreachable):
    with pytest.raises(ModelError, match="is not in the local Hugging Face cache"):
        hubcheck.check_hub("org/bad..name")


def test_a_local_directory_is_not_checked(online_but_unreachable, tmp_path):
    (tmp_path / "org" / "model").mkdir(parents=True)
    hubcheck.check_hub(str(tmp_path / "org" / "model"))


def test_hf_hub_offline_skips_the_probe(online_but_unreachable, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    hubcheck.check_hub("org/not-cached")  # the download itself reports a missing model


def test_any_http_answer_counts_as_reachable(monkeypatch):
    """A server that answers (here: 501 to HEAD) is reachable; the probe sends one request."""
    import http.server
    import threading

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    hubcheck.hub_reachable.cache_clear()
    try:
        assert hubcheck.hub_reachable(f"http://127.0.0.1:{server.server_port}") is True
    finally:
        thread.join(timeout=30)
        server.server_close()
        hubcheck.hub_reachable.cache_clear()
