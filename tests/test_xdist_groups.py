"""Side by side, pytest-xdist honours the groups that tests/conftest.py gives: every module with a test of the micro run
on one worker, so that run is made once, and each other module on one worker, so its module fixtures are made once.

pytest-xdist reads the groups into the test ids; a pytest release that changes how a test id is stored (9.2 did) drops
the groups without a word, and every worker then makes the micro run itself. This runs generated test modules through
the conftest's own hook, two workers, and asks each test which worker and which fixture instance it got, and in
which order it ran."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")

GENERATED_CONFTEST = f"""
import importlib.util, json, os, pytest
spec = importlib.util.spec_from_file_location("asrmerge_tests_conftest", {str(CONFTEST)!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
pytest_collection_modifyitems = module.pytest_collection_modifyitems

def record(request, instance):
    with open(os.environ["RECORD"], "a") as out:
        out.write(json.dumps({{"module": request.module.__name__, "worker": os.environ["PYTEST_XDIST_WORKER"],
                              "instance": instance}}) + "\\n")

@pytest.fixture(scope="session")
def micro_run():
    return os.urandom(8).hex()

@pytest.fixture(scope="session")
def micro_workflow(micro_run):
    return micro_run

@pytest.fixture(scope="module")
def module_fixture():
    return os.urandom(8).hex()
"""

MICRO_TEST = """
from conftest import record
def test_{index}(request, micro_workflow):
    record(request, micro_workflow)
def test_{index}_b(request, micro_workflow):
    record(request, micro_workflow)
"""

BESIDE_TEST = """
from conftest import record
def test_beside(request, micro_run):
    record(request, micro_run)
"""

MODULE_TEST = """
from conftest import record
def test_{index}(request, module_fixture):
    record(request, module_fixture)
def test_{index}_b(request, module_fixture):
    record(request, module_fixture)
"""


@pytest.mark.parametrize(("micro_modules", "other_modules"), [(2, 2), (4, 1)])
def test_groups_hold_side_by_side(tmp_path, micro_modules, other_modules):
    for index in range(micro_modules):
        (tmp_path / f"test_micro_{index}.py").write_text(MICRO_TEST.format(index=index))
    for index in range(other_modules):
        (tmp_path / f"test_other_{index}.py").write_text(MODULE_TEST.format(index=index))
    (tmp_path / "test_slurm_like.py").write_text(BESIDE_TEST)  # sorts last by name, must run first in its group
    (tmp_path / "conftest.py").write_text(GENERATED_CONFTEST)
    record = tmp_path / "record.jsonl"
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", "--dist", "loadgroup",
         "--rootdir", str(tmp_path), str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "RECORD": str(record)})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(rows) == 2 * (micro_modules + other_modules) + 1
    micro = [row for row in rows if row["module"].startswith(("test_micro", "test_slurm_like"))]
    assert len({row["worker"] for row in micro}) == 1, f"micro-run modules split across workers: {micro}"
    assert len({row["instance"] for row in micro}) == 1, f"the session's micro run made more than once: {micro}"
    assert micro[0]["module"] == "test_slurm_like", "a run beside the micro run did not start first in its group"
    for index in range(other_modules):
        own = [row for row in rows if row["module"] == f"test_other_{index}"]
        assert len({row["worker"] for row in own}) == 1, f"a module split across workers: {own}"
