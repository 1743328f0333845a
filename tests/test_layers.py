"""The package's layers point one way: data, models and merging below evaluation and training, below workflow, below
report, with the command line (asrmerge.cli, asrmerge.reference) above them all. Every import of every module is
read, function-level ones included (an import deferred for speed still runs against the layers)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "asrmerge"

#: Sub-package -> layer; a module outside these (layout, defaults, atomic, guard, ...) is the base layer, 0.
LAYERS = {"data": 1, "models": 1, "merging": 1, "evaluation": 2, "training": 2, "workflow": 3, "report": 4,
          "cli": 5, "reference": 5}


def layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "asrmerge":
        return None
    return LAYERS.get(parts[1], 0) if len(parts) > 1 else 0


def imports_against_the_layers(source: str, module: str, filename: str) -> list[tuple[str, str]]:
    """(file, imported module) of every import of a module from a higher layer than `module`'s."""
    own = layer(module)
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] if node.module == "asrmerge" else [node.module]
        else:
            continue
        found += [(filename, name) for name in names if (layer(name) or 0) > own]
    return found


def test_no_module_imports_a_higher_layer() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent)
        module = ".".join(relative.with_suffix("").parts).removesuffix(".__init__")
        found += imports_against_the_layers(path.read_text(encoding="utf-8"), module, str(relative))
    assert found == []


def test_an_upward_import_is_found_where_it_hides() -> None:
    source = "import json\n\ndef run():\n    from asrmerge.workflow.config import expand_world\n"
    assert imports_against_the_layers(source, "asrmerge.data.corpus", "corpus.py") == [
        ("corpus.py", "asrmerge.workflow.config")]
    assert imports_against_the_layers("from asrmerge import report\n", "asrmerge.merging.engine", "e.py") == [
        ("e.py", "asrmerge.report")]
    assert imports_against_the_layers("from asrmerge.data import text\n", "asrmerge.report.tables", "t.py") == []
