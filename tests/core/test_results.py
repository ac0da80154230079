from alignlearn.results import append_row


def test_rows_land_under_their_section_and_pipes_are_escaped(tmp_path):
    path = tmp_path / "RESULTS.md"
    append_row(path, "Speed", ["a", "command"], ["1", "`x --recipes r1|r2`"])
    append_row(path, "Other", ["b"], ["2"])
    append_row(path, "Speed", ["a", "command"], ["3", "`y`"])
    lines = path.read_text().splitlines()
    speed = lines.index("## Speed")
    assert lines[speed + 2 : speed + 6] == ["| a | command |", "|---|---|", "| 1 | `x --recipes r1\\|r2` |", "| 3 | `y` |"]
    assert lines.index("## Other") > speed + 5
