"""RESULTS.md tables: append a row to a named section, creating the section and its header when missing."""

from __future__ import annotations

from pathlib import Path


def append_row(path: str | Path, section: str, header: list[str], cells: list[str]) -> str:
    path = Path(path)
    text = path.read_text() if path.exists() else "# Results\n"
    lines = text.rstrip("\n").split("\n")
    row = "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"  # a '|' inside a cell (a shell pipe) would split it
    title = f"## {section}"
    if title not in lines:
        lines += ["", title, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines.append(row)
    else:
        i = lines.index(title) + 1
        while i < len(lines) and not lines[i].startswith("|"):
            i += 1
        while i < len(lines) and lines[i].startswith("|"):
            i += 1
        lines.insert(i, row)
    path.write_text("\n".join(lines) + "\n")
    return row
