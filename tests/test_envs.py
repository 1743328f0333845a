"""The conda environment for cluster users pins exactly what pyproject.toml pins."""
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pins(requirements):
    return dict(r.split("==") for r in requirements if "==" in r)


def test_conda_env_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    docs_builder = {name: pin for name, pin in _pins(project["optional-dependencies"]["test"]).items()
                    if name == "mkdocs-material"}  # cluster users build the documentation too (make docs)
    expected = _pins(project["dependencies"]) | _pins(project["optional-dependencies"]["slurm"]) | docs_builder
    env = yaml.safe_load((ROOT / "envs" / "asrmerge.yaml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert _pins(pip_section) == expected
