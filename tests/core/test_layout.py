"""The package layout's rules: imports point one way, and every training default has one home."""

import ast
import dataclasses
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APPLICATION = {"cli.py", "demo.py"}  # the modules that compose the core with export and probes


def imported_modules(path: Path) -> set[str]:
    """Absolute names of what a module imports (relative imports resolved against the alignlearn package)."""
    package = {"alignlearn": "alignlearn", "export": "alignlearn.export", "probes": "alignlearn.probes"}[
        path.relative_to(ROOT).parts[0]]
    if "networks" in path.parts:
        package += ".networks"
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names |= {f"{base}.{a.name}" for a in node.names}
    return names


def test_the_core_imports_neither_export_nor_probes_except_the_application_layer():
    for path in (ROOT / "alignlearn").rglob("*.py"):
        if path.name in APPLICATION:
            continue
        bad = {m for m in imported_modules(path) if m.startswith(("alignlearn.export", "alignlearn.probes"))}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_export_and_probes_never_import_the_application_layer():
    for folder in ("export", "probes"):
        for path in (ROOT / folder).rglob("*.py"):
            bad = {m for m in imported_modules(path) if m in ("alignlearn.cli", "alignlearn.demo")
                   or m.startswith(("alignlearn.cli.", "alignlearn.demo."))}
            assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_train_options_take_their_defaults_from_the_config_dataclasses():
    """Every `alignlearn train` option that sets a TrainConfig field shows that field's default."""
    import typer.main

    from alignlearn.cli import app
    from alignlearn.config import TrainConfig

    command = typer.main.get_command(app).commands["train"]
    options = {p.name: p.default for p in command.params}
    renamed = {"time_budget_s": "time_budget"}
    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.name != "steps"}
    for name, default in fields.items():
        option = renamed.get(name, name)
        assert option in options, f"TrainConfig.{name} has no --{option.replace('_', '-')} option"
        assert options[option] == default, f"--{option}: {options[option]!r} against TrainConfig.{name} = {default!r}"
