"""The code and the workflow files pass the project's linters (configured in pyproject.toml), as `make lint` runs them,
and the merge engine's functions stay short."""
import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: `pip install -e '.[test]'` installs the pinned linters")
    return path


def test_python_passes_ruff():
    result = subprocess.run([_tool("ruff"), "check", "asrmerge", "scripts", "tests", "benchmarks"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_snakefile_and_rules_are_snakefmt_formatted():
    result = subprocess.run([_tool("snakefmt"), "--check", "--diff", "Snakefile", "rules"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


#: The merge engine's modules (plan, reader, executor, sinks): each function short enough to read at once.
ENGINE_MODULES = ("engine", "plan", "reader", "sinks", "runtime")
ENGINE_FUNCTION_LINES = 60


def test_merge_engine_functions_are_short():
    long = []
    for module in ENGINE_MODULES:
        path = ROOT / "asrmerge" / "merging" / f"{module}.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > ENGINE_FUNCTION_LINES:
                    long.append(f"{path.name}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, f"functions over {ENGINE_FUNCTION_LINES} lines: {long}"
