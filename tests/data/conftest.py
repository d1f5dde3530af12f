"""Fixture files in the exact layouts of MIMIC-CXR, CT-RATE and Indiana (invented text)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dpcore.data.fixtures import write_ctrate_fixture, write_indiana_fixture, write_mimic_fixture


@pytest.fixture
def mimic(tmp_path: Path) -> dict[str, Path]:
    return {**write_mimic_fixture(tmp_path), "tmp": tmp_path}


@pytest.fixture
def ctrate(tmp_path: Path) -> Path:
    return write_ctrate_fixture(tmp_path)


@pytest.fixture
def indiana(tmp_path: Path) -> Path:
    return write_indiana_fixture(tmp_path)
