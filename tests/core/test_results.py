"""Result records (results/*.jsonl) and the RESULTS.md tables generated from them."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from alignlearn.results import append_record, current_commit, read_records, record_row

from .helpers import load_benchmark

ROOT = Path(__file__).resolve().parents[2]


def test_a_record_carries_date_commit_and_command(tmp_path):
    record = json.loads(record_row(tmp_path, "speed", ["device", "img/s", "command"], ["CPU", "12", "`x --a r1|r2`"]))
    assert record["date"][:2] == "20" and record["commit"] and record["command"] == "`x --a r1|r2`"
    assert read_records(tmp_path, "speed") == [record]
    with pytest.raises(ValueError, match="command"):
        append_record(tmp_path, "speed", {"device": "CPU"})


def test_the_commit_is_marked_changed_by_code_not_by_the_records_a_benchmark_appends(tmp_path):
    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "pkg").mkdir()
    (tmp_path / "results").mkdir()
    (tmp_path / "pkg" / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "speed.jsonl").write_text("{}\n")
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "first")
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    (tmp_path / "results" / "speed.jsonl").write_text("{}\n{}\n")
    assert current_commit(tmp_path / "pkg") == head
    (tmp_path / "pkg" / "code.py").write_text("x = 2\n")
    assert current_commit(tmp_path / "pkg") == head + "+"


def test_tables_are_rendered_from_the_records_with_pipes_escaped(tmp_path):
    page_module = load_benchmark("results_page")
    append_record(tmp_path, "speed", {"date": "2026-01-02", "device": "CPU", "img/s": "12", "commit": "abc", "command": "`x | y`"})
    append_record(tmp_path, "speed", {"date": "2026-01-03", "device": "GPU", "batch": "8", "img/s": "99", "commit": "def",
                                      "command": "`z`"})
    page = "# R\n\ntext\n<!-- table speed -->\nstale\n<!-- end -->\nmore text\n"
    fresh, commands = page_module.render(page, tmp_path)
    assert fresh.split("\n")[3:9] == [
        "<!-- table speed -->",
        "| date | device | img/s | batch | commit | command |",
        "|---|---|---|---|---|---|",
        "| 2026-01-02 | CPU | 12 |  | abc | [1](results/commands.md#cmd-1) |",
        "| 2026-01-03 | GPU | 99 | 8 | def | [2](results/commands.md#cmd-2) |",
        "<!-- end -->"]
    assert '1. <a id="cmd-1"></a>`x | y`' in commands and '2. <a id="cmd-2"></a>`z`' in commands
    assert page_module.render(fresh, tmp_path) == (fresh, commands)  # rendering is idempotent


def test_the_results_page_matches_its_records():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/results_page.py"), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_pages_share_one_command_numbering_and_link_from_their_folder(tmp_path, monkeypatch):
    page_module = load_benchmark("results_page")
    monkeypatch.setattr(page_module, "ROOT", tmp_path)
    results = tmp_path / "results"
    append_record(results, "a", {"date": "d", "device": "CPU", "x": "1", "commit": "c", "command": "`one`"})
    append_record(results, "b", {"date": "d", "device": "CPU", "x": "2", "commit": "c", "command": "`two`"})
    append_record(results, "b", {"date": "d", "device": "CPU", "x": "3", "commit": "c", "command": "`one`"})
    (tmp_path / "docs").mkdir()
    top, sub = tmp_path / "R.md", tmp_path / "docs" / "more.md"
    top.write_text("<!-- table a -->\n<!-- end -->\n")
    sub.write_text("<!-- table b -->\n<!-- end -->\n")
    fresh = page_module.render_all([top, sub], results)
    assert fresh[top].split("\n")[3].endswith("| [1](results/commands.md#cmd-1) |")
    rows = fresh[sub].split("\n")[3:5]
    assert rows[0].endswith("| [2](../results/commands.md#cmd-2) |")  # a new command numbers on
    assert rows[1].endswith("| [1](../results/commands.md#cmd-1) |")  # a known one keeps its number
    commands = fresh[results / "commands.md"]
    assert '1. <a id="cmd-1"></a>`one`' in commands and '2. <a id="cmd-2"></a>`two`' in commands and "cmd-3" not in commands
