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


def test_requires_python_is_what_the_pins_allow():
    """The lowest Python the project declares is the lowest every pinned package (as installed, at its pin) runs on:
    not lower (an install would fail or break there), not higher (it would refuse a Python that works)."""
    from importlib.metadata import PackageNotFoundError, metadata, version

    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = _pins(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        pins |= _pins(extra)
    candidates = [f"3.{minor}" for minor in range(8, 20)]
    allowed = set(candidates)
    for name, pin in pins.items():
        try:
            installed = Version(version(name)).public  # a local label (torch's +cpu) names the build, not the release
            assert installed == pin, f"{name} {installed} is installed, pinned {pin}: run `make venv`"
            needs = metadata(name).get("Requires-Python") or ""
        except PackageNotFoundError:
            raise AssertionError(f"{name}=={pin} is not installed: run `make venv`") from None
        allowed &= set(SpecifierSet(needs).filter(candidates))
    declared = SpecifierSet(project["requires-python"])
    lowest_declared = next(v for v in candidates if v in declared)
    assert lowest_declared == min(allowed, key=lambda v: int(v.split(".")[1])), (
        f"requires-python {project['requires-python']}: the pins allow Python {sorted(allowed)}")
