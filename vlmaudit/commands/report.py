"""`vlmaudit report`: summary numbers (JSON) or the terminal dashboard."""

from __future__ import annotations

import json
from pathlib import Path


def run_report_command(report_dir: Path, as_json: bool, top: int) -> None:
    from vlmaudit.summary import summarize

    summary = summarize(report_dir, top=top)
    if as_json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
        return
    from vlmaudit.dashboard import render

    render(summary)
