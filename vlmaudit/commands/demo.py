"""`vlmaudit demo [DIR]`: the whole job offline: demo shards, a tiny random CLIP, scan, dashboard.

The checkpoint has random weights, so every score is MEANINGLESS; the demo proves that the
pipeline (real transformers loading, decoding, Parquet reports, the dashboard) runs without hub
access, and prints the commands for real shards and the real default model.
"""

from __future__ import annotations

from vlmaudit.commands.options import DemoRequest

NEXT_STEPS = """\
Next, on real shards with the real default model ({model}, downloaded once from the hub):
  vlmaudit scan 'laion-{{00000..00099}}.tar' --out reports/laion
  vlmaudit report reports/laion
  vlmaudit filter reports/laion --policy strict --out filtered/laion
"""


def run_demo(request: DemoRequest) -> int:
    from rich.console import Console

    from vlmaudit.backends.clip import DEFAULT_MODEL
    from vlmaudit.commands.report import ReportRequest, run_report_command
    from vlmaudit.commands.scan import ScanRequest, run_scan_command
    from vlmaudit.demo.build import build_demo_shards
    from vlmaudit.demo.checkpoints import build_random_clip

    console = Console()
    root = request.directory
    paths = build_demo_shards(root / "shards", shards=request.shards, per_shard=request.per_shard, with_bad_samples=True)
    model = build_random_clip(root / "tiny-random-clip", size="tiny")
    console.print(f"demo: {len(paths)} shards in {root / 'shards'} (with a missing image, a broken JPEG and a "
                  f"very long caption); a tiny RANDOM-WEIGHT CLIP in {model}")
    console.print("demo: [bold]the scores below are MEANINGLESS[/bold] (random weights); "
                  "the demo only shows that the pipeline runs")
    reports = root / "reports"
    code = run_scan_command(ScanRequest(shards=[str(p) for p in paths], out=reports, model=str(model), workers=0, overwrite=True,
                                        quiet=True, precision="fp32"))
    run_report_command(ReportRequest(report_dir=reports))
    console.print("demo: scores above are MEANINGLESS (random-weight model)")
    console.print(NEXT_STEPS.format(model=DEFAULT_MODEL), markup=False, highlight=False)
    return code
