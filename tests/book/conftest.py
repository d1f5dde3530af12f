"""The book built once per session with tiny parameters, shared by the build and browser tests."""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Every chapter's parameters for the tiny build, as `book/build.py -p NAME VALUE` takes them (YAML text).
# A chapter takes the ones it declares and ignores the rest; `model` is added by `built_book` (a tiny BERT
# saved for the session, and to the studies' run overrides). The chapters that read studies run them at the
# `smoke` profile, which every study file defines. Add the parameters of a new chapter here.
TINY_PARAMETERS: dict[str, str] = {
    "profile": "smoke",
    "n_reports": "150",
    "bench_reports": "200",
    "num_layers": "null",
    "max_length": "48",
    "epochs": "2",
    "batch_size": "16",
    "dp_batch_size": "16",
    "dp_epochs": "2",
}


def load_build():
    """``book/build.py`` as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("book_build", ROOT / "book" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def copy_book(dest: Path) -> Path:
    """The book's sources (not its executed notebooks or HTML) copied to ``dest``."""
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(ROOT / name, dest / name)
    shutil.copytree(ROOT / "notebooks", dest / "notebooks", ignore=shutil.ignore_patterns("*.ipynb"))
    shutil.copytree(ROOT / "benchmarks", dest / "benchmarks", ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "book").mkdir()
    shutil.copytree(ROOT / "book" / "archive", dest / "book" / "archive")
    shutil.copytree(
        ROOT / "book" / "_ext", dest / "book" / "_ext", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copytree(ROOT / "studies", dest / "studies")
    for page in (ROOT / "book").glob("*.md"):
        shutil.copy(page, dest / "book" / page.name)
    return dest


@dataclass(frozen=True)
class BuiltBook:
    root: Path  # the copied book, with book/notebooks/*.ipynb executed
    html: Path  # root/_build/html
    parameters: dict[str, str]  # what was passed with -p (TINY_PARAMETERS and the model)
    exit_code: int  # book/build.py's return value


@pytest.fixture(scope="session")
def built_book(tmp_path_factory: pytest.TempPathFactory, tiny_model: str) -> BuiltBook:
    """A copy of the book executed and rendered by ``book/build.py`` with ``TINY_PARAMETERS`` (minutes)."""
    root = copy_book(tmp_path_factory.mktemp("book"))
    parameters = {**TINY_PARAMETERS, "model": tiny_model, "overrides": f"{{model: {tiny_model}}}"}
    argv = ["--root", str(root)] + [x for name, value in parameters.items() for x in ("-p", name, value)]
    exit_code = load_build().main(argv)
    return BuiltBook(root=root, html=root / "_build" / "html", parameters=parameters, exit_code=exit_code)
