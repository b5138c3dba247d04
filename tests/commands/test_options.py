"""Every command's options: one keyword-only request record per command, whose field defaults are
the one set of defaults the CLI shows and uses (issue 25 item 4)."""

import dataclasses
from pathlib import Path

import pytest
import typer.main

from vlmaudit.cli import app
from vlmaudit.commands import options
from vlmaudit.commands.scan_request import ScanRequest
from vlmaudit.errors import UserError

REQUESTS = {
    "concepts": options.ConceptsRequest, "scan": ScanRequest, "report": options.ReportRequest,
    "verify-card": options.VerifyCardRequest, "summarize": options.SummarizeRequest, "filter": options.FilterRequest,
    "sample": options.SampleRequest, "estimate": options.EstimateRequest, "match": options.MatchRequest,
    "train-head": options.TrainHeadRequest, "bench": options.BenchRequest, "demo": options.DemoRequest,
    "calibrate": options.CalibrateRequest, "eval": options.EvalRequest, "distill": options.DistillRequest,
}
# options that exist on the command line only: scan --workers is None when not given, because with
# --engine ray it is the old spelling of --actors; ScanRequest.workers holds the default (2)
CLI_ONLY = {("scan", "workers")}
REQUIRED = object()


def field_defaults(request_class) -> dict:
    found = {}
    for item in dataclasses.fields(request_class):
        if item.default is not dataclasses.MISSING:
            found[item.name] = item.default
        elif item.default_factory is not dataclasses.MISSING:
            found[item.name] = item.default_factory()
        else:
            found[item.name] = REQUIRED
    return found


def commands() -> dict:
    return typer.main.get_command(app).commands


def test_every_command_has_a_request_record():
    assert set(commands()) == set(REQUESTS)


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_the_cli_defaults_are_the_request_defaults(name):
    """Planted: a default written by hand in cli.py (say `top ... = 12`) that the request does not have."""
    known = field_defaults(REQUESTS[name])
    for param in commands()[name].params:
        if (name, param.name) in CLI_ONLY:
            continue
        assert param.name in known, f"{name} {param.opts}: no field {param.name!r} in {REQUESTS[name].__name__}"
        default = known[param.name]
        if default is REQUIRED:
            assert param.required, f"{name} {param.opts}: the request requires it, the CLI does not"
        else:
            assert not param.required, f"{name} {param.opts}: the CLI requires it, the request has a default"
            assert (type(param.default), param.default) == (type(default), default), f"{name} {param.opts}"


def test_the_cli_only_options_are_known():
    for name, option in CLI_ONLY:
        assert option in {p.name for p in commands()[name].params}
    assert field_defaults(ScanRequest)["workers"] == 2


@pytest.mark.parametrize("request_class", sorted(set(REQUESTS.values()), key=lambda c: c.__name__))
def test_requests_are_built_by_keyword_only(request_class):
    fields = dataclasses.fields(request_class)
    assert all(item.kw_only for item in fields)
    with pytest.raises(TypeError, match="positional"):
        request_class(*[None] * len(fields))


def test_the_records_built_from_a_request_keep_the_library_defaults():
    """The option records the work code takes (re-read, progress, training, matching) get every
    value from the request; with the request's defaults they equal their own defaults."""
    from vlmaudit.head.training import TrainSettings
    from vlmaudit.match.run import MatchOptions
    from vlmaudit.progress import ProgressOptions
    from vlmaudit.report.reread import ReReadOptions

    assert options.ReportRequest(report_dir="r").reread() == ReReadOptions()
    assert options.SampleRequest(report_dir="r", size=1, out=Path("o")).reread() == ReReadOptions()
    training = options.TrainHeadRequest(data=Path("d"), vision_model="m", out=Path("o")).training()
    assert training == TrainSettings()
    assert options.MatchRequest(report_dir=Path("r")).match_options() == MatchOptions()
    shown = options.FilterRequest(report_dir="r").progress()
    assert shown == ProgressOptions(quiet=False)  # the library default is quiet; the command line's is not


def test_request_methods():
    assert options.ReportRequest(report_dir="r", fmt="markdown", as_json=True).fmt == "json"  # --json wins, as before
    assert options.EstimateRequest(report_dir="r", labels=Path("l"), as_json=True).fmt == "json"
    assert options.ReportRequest(report_dir="r", fmt="markdown").fmt == "markdown"
    chosen = options.FilterRequest(report_dir="r", shards=["a.tar"], allow_scheme=["s3"], max_member_bytes=7).reread()
    assert (chosen.shards, chosen.allow_schemes, chosen.max_member_bytes) == (["a.tar"], ["s3"], 7)
    assert options.MatchRequest(report_dir=Path("r"), pdq_distance=3, min_quality=9).match_options().max_distance == 3
    with pytest.raises(UserError, match="multiple of 8"):
        options.DistillRequest(report_dir=Path("r"), shards=[], out=Path("o"), dim=12).training()
    assert options.DistillRequest(report_dir=Path("r"), shards=[], out=Path("o"), quiet=True, progress_every=5).progress().every == 5
