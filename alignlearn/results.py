"""Measured results as records: one JSON line per table row, in results/<subject>.jsonl.

Benchmark scripts and `alignlearn bench --results DIR` append here; benchmarks/results_page.py renders
RESULTS.md's tables from these files, so the page and the raw records never disagree.
"""

from __future__ import annotations

import datetime
import json
import subprocess
from pathlib import Path

# Every record names when, where and with which code it was measured, and how to measure it again.
REQUIRED = ("date", "device", "commit", "command")


def current_commit(cwd: str | Path | None = None) -> str:
    """The checkout's short commit, '+' marking uncommitted changes; 'unknown' outside a git checkout.
    Changes under results/ do not count: a benchmark appending its own records there leaves the code as committed."""
    where = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=where, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)",
                                ":(top,exclude)results"], cwd=where,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+" if dirty else "")


def append_record(results_dir: str | Path, subject: str, record: dict) -> dict:
    """Append one row to results_dir/<subject>.jsonl, filling in today's date (UTC) and the commit if absent."""
    record = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
              "commit": current_commit(), **record}
    missing = [k for k in REQUIRED if not record.get(k)]
    if missing:
        raise ValueError(f"a results record needs {', '.join(missing)}")
    path = Path(results_dir) / f"{subject}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return record


def read_records(results_dir: str | Path, subject: str) -> list[dict]:
    path = Path(results_dir) / f"{subject}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def record_row(results_dir: str | Path, subject: str, header: list[str], cells: list[str]) -> str:
    """A table row as a record: header names become the fields. Returns the record as written, for logs."""
    return json.dumps(append_record(results_dir, subject, dict(zip(header, cells))), ensure_ascii=False)
