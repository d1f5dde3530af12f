"""The book: chapters run under papermill with tiny parameters, the book renders, a failing cell fails it.

The tiny build is the session fixture ``built_book`` (conftest.py), shared with the browser test."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_build():
    spec = importlib.util.spec_from_file_location("book_build", ROOT / "book" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _load_build()


def _outputs_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(json.dumps(out.get("data", {})) + out.get("text", ""))
    return "\n".join(parts)


def test_book_builds_with_tiny_parameters(built_book, tiny_model):
    # The build itself is the session fixture `built_book` (tests/book/conftest.py, TINY_PARAMETERS).
    assert built_book.exit_code == 0
    root, html = built_book.root, built_book.html
    page = (html / "book" / "notebooks" / "dp_lora.html").read_text()
    # The F1/epsilon table computed in this very build is on the page.
    nb = nbformat.read(root / "book" / "notebooks" / "dp_lora.ipynb", as_version=4)
    assert nb.metadata["papermill"]["parameters"]["overrides"]["model"] == tiny_model
    assert "weighted F1" in page and "ε (RDP)" in page and "ε (PRV)" in page
    assert (html / "index.html").is_file()
    for chapter in build.chapters(root):
        assert (html / "book" / "notebooks" / f"{chapter}.html").is_file(), chapter


def test_an_unchanged_chapter_is_not_executed_again(built_book):
    root = built_book.root
    stamp = (root / "book" / "notebooks" / "dp_lora.ipynb").stat().st_mtime_ns
    overrides = {k: build._parse_value(v) for k, v in built_book.parameters.items()}
    build.execute("dp_lora", root=root, overrides=overrides)
    assert (root / "book" / "notebooks" / "dp_lora.ipynb").stat().st_mtime_ns == stamp


def test_a_failing_cell_fails_the_build(tmp_path):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "book").mkdir()
    shutil.copy(ROOT / "_config.yml", tmp_path / "_config.yml")
    (tmp_path / "book" / "intro.md").write_text("# Intro\n")
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: book/intro\nchapters:\n  - file: book/notebooks/broken\n"
    )
    (tmp_path / "notebooks" / "broken.md").write_text(
        (ROOT / "notebooks" / "dp_lora.md").read_text().split("# DP-LoRA")[0]
        + "# Broken\n\n```{code-cell} ipython3\n:tags: [parameters]\n\nx = 1\n```\n\n"
        "```{code-cell} ipython3\nraise RuntimeError('this cell fails on purpose')\n```\n"
    )
    result = subprocess.run(
        [sys.executable, str(ROOT / "book" / "build.py"), "--root", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert "notebooks/broken.md failed in cell 2" in result.stderr
    assert "this cell fails on purpose" in result.stderr
    assert not (tmp_path / "_build" / "html" / "index.html").exists()
    assert not (tmp_path / "book" / "notebooks" / "broken.ipynb").exists()


@pytest.mark.parametrize("name", ["dp_lora", "reports", "labels"])
def test_every_chapter_has_a_parameters_cell(name):
    import jupytext

    assert build.declared_parameters(jupytext.read(ROOT / "notebooks" / f"{name}.md"))


def test_toc_lists_every_notebook():
    assert sorted(build.chapters(ROOT)) == sorted(p.stem for p in (ROOT / "notebooks").glob("*.md"))
