"""Build the book: execute every notebook with papermill, then render the executed notebooks to HTML.

    python book/build.py                          # every chapter at its default parameters (profile quick)
    python book/build.py -p profile paper         # the paper's scale (GPUs, your MIMIC-CXR / CT-RATE folders)
    python book/build.py -p n_reports 500         # override a parameter in every chapter that has it
    python book/build.py --only dp_lora --no-html # execute one chapter, skip rendering

First the studies that chapters read (``studies/*.yml``) run, in one process, so that runs sharing a model and
a corpus compute its frozen layers once; every run is stored by the hash of its configuration, and the
chapters then read the stored runs (``profile`` and ``overrides`` select and adjust them, as in the chapters).
Executed notebooks land in ``book/notebooks/``; each records a key (its source, its parameters, dpcore's
code, the studies and the archive), and an unchanged chapter is not executed again. A cell that fails fails the build, naming
the notebook and the cell. Jupyter Book then renders with execution off: every output in the HTML is the
one papermill produced in this build or in an identical earlier one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jupytext
import nbformat
import papermill
import yaml

ROOT = Path(__file__).resolve().parents[1]
KEY = "dpcore_build_key"
# Pages that summarise the other chapters' executions (their times): executed again whenever a chapter ran.
SUMMARY_CHAPTERS = ("course_guide",)
# The studies the chapters read, trained before any chapter runs. Shallow model splits first: a deeper split
# carries their frozen features on instead of recomputing them.
STUDIES = ("model_size", "grid", "ct_length", "data_size")


class NotebookFailed(RuntimeError):
    """A chapter's cell raised; the message names the notebook and the cell."""


def chapters(root: Path) -> list[str]:
    """Chapter names in table-of-contents order (entries under ``book/notebooks/``)."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files = [toc.get("root", "")]
    for part in toc.get("parts", [toc]):
        files += [c["file"] for c in part.get("chapters", [])]
    return [Path(f).name for f in files if f.startswith("book/notebooks/")]


def declared_parameters(nb: nbformat.NotebookNode) -> set[str]:
    """Names assigned in the cell tagged ``parameters``."""
    import ast

    for cell in nb.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            tree = ast.parse(cell.source)
            return {
                t.id
                for node in tree.body
                if isinstance(node, ast.Assign)
                for t in node.targets
                if hasattr(t, "id")
            }
    return set()


def build_key(source: str, parameters: dict[str, Any], code: str) -> str:
    blob = json.dumps({"source": source, "parameters": parameters, "code": code}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def folder_fingerprint(root: Path, folder: str) -> str:
    """A hash of the files under ``root/folder`` (the archived runs, the studies): new files, a new build."""
    digest = hashlib.sha256()
    for path in sorted((root / folder).rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def archive_fingerprint(root: Path) -> str:
    return folder_fingerprint(root, "book/archive") + folder_fingerprint(root, "studies")


def run_studies(root: Path, overrides: dict[str, Any]) -> None:
    """Train what the chapters' studies lack, in this process, at the ``profile`` and run ``overrides`` that
    the chapters receive too; print each study's time."""
    from dpcore.pipeline.results import ResultStore
    from dpcore.study import Study, plan, run_study

    profile = overrides.get("profile", "quick")
    run_overrides = overrides.get("overrides") or {}
    store = ResultStore(root / str(overrides.get("results_dir", "results")))
    for name in STUDIES:
        path = root / "studies" / f"{name}.yml"
        if not path.is_file():
            continue
        study = Study.load(path)
        todo = int(
            (plan(study, profile=profile, overrides=run_overrides, store=store)["status"] != "stored").sum()
        )
        t0 = time.perf_counter()
        print(f"[book] study {name} ({profile}): {todo} runs to train", flush=True)
        table = run_study(study, profile=profile, overrides=run_overrides, store=store, progress=False)
        if todo:
            print(f"[book] study {name}: done in {time.perf_counter() - t0:.0f} s", flush=True)
        if name == "grid":
            print(privacy_utility_summary(table), flush=True)


def privacy_utility_summary(table: Any) -> str:
    """The grid's weighted F1 (95% interval) by corpus, series and epsilon, as the build prints it."""
    from dpcore.plots import series

    shown = table.assign(series=series(table))[
        ["corpus", "series", "target_epsilon", "epsilon_rdp", "epsilon_prv", "weighted_f1"]
    ].copy()
    shown["95% interval"] = [
        f"[{lo:.3f}, {hi:.3f}]"
        for lo, hi in zip(table["weighted_f1_lo"], table["weighted_f1_hi"], strict=True)
    ]
    shown["public only"] = table["public_only_weighted_f1"]
    return "[book] privacy-utility grid (weighted F1 on the test split):\n" + shown.round(3).to_string(
        index=False
    )


def execute(name: str, *, root: Path, overrides: dict[str, Any], force: bool = False) -> Path | None:
    """Execute ``notebooks/<name>.md`` into ``book/notebooks/<name>.ipynb`` unless an identical run exists;
    the executed notebook, or None when it was unchanged."""
    from dpcore.pipeline.results import code_fingerprint

    src = root / "notebooks" / f"{name}.md"
    out = root / "book" / "notebooks" / f"{name}.ipynb"
    nb = jupytext.read(src)
    parameters = {k: v for k, v in overrides.items() if k in declared_parameters(nb)}
    key = build_key(src.read_text(), parameters, code_fingerprint(scope="all") + archive_fingerprint(root))
    if not force and out.is_file() and nbformat.read(out, as_version=4).metadata.get(KEY) == key:
        print(f"[book] {name}: unchanged, not executed again", flush=True)
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    print(f"[book] {name}: executing with {parameters or 'default parameters'}", flush=True)
    partial = out.with_suffix(".partial.ipynb")
    try:
        papermill.execute_notebook(
            nb, str(partial), parameters=parameters, kernel_name="python3", cwd=str(root), progress_bar=False
        )
    except papermill.PapermillExecutionError as err:
        raise NotebookFailed(
            f"notebooks/{name}.md failed in cell {err.exec_count}: {err.ename}: {err.evalue}\n"
            f"(the executed notebook with the traceback is {partial})"
        ) from None
    done = nbformat.read(partial, as_version=4)
    done.metadata[KEY] = key
    nbformat.write(done, out)
    partial.unlink()
    print(f"[book] {name}: done in {time.perf_counter() - t0:.0f} s", flush=True)
    return out


def vendor_mathjax(root: Path) -> None:
    """MathJax served with the book, not from a CDN: the book reads offline (and the browser test runs
    offline). The files come from the installed PyPI package ``django-static-mathjax`` (MathJax 3.2.2)."""
    import importlib.util
    import shutil

    spec = importlib.util.find_spec("mathjax")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("MathJax is missing: install the book extra (`pip install -e .[book]`)")
    es5 = Path(next(iter(spec.submodule_search_locations)), "static", "mathjax", "es5")
    # Not under _static/: Jupyter Book adds every script there to every page (MathJax would load twice).
    dest = root / "_mathjax" / "mathjax"
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(es5 / "tex-mml-chtml.js", dest / "tex-mml-chtml.js")
    shutil.copytree(
        es5 / "output" / "chtml" / "fonts", dest / "output" / "chtml" / "fonts", dirs_exist_ok=True
    )


def render(root: Path, output: Path | None = None) -> Path:
    """Run Jupyter Book (execution off) and return the HTML folder."""
    vendor_mathjax(root)
    jb = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(jb), "build", str(root), "--warningiserror", "--keep-going"]
    if output is not None:
        cmd += ["--path-output", str(output)]
    subprocess.run(cmd, check=True, cwd=root)
    return (output or root) / "_build" / "html"


def _parse_value(text: str) -> Any:
    return yaml.safe_load(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    parser.add_argument("--only", action="append", help="execute only these chapters (repeatable)")
    parser.add_argument("--force", action="store_true", help="execute even unchanged chapters")
    parser.add_argument("--no-html", action="store_true", help="execute notebooks only")
    parser.add_argument("--root", type=Path, default=ROOT, help="book root (holds _config.yml and _toc.yml)")
    parser.add_argument("--output", type=Path, help="folder for _build (default: the book root)")
    args = parser.parse_args(argv)

    overrides = {name: _parse_value(value) for name, value in args.parameter}
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    t0 = time.perf_counter()
    names = chapters(args.root)
    unknown = sorted(set(args.only or []) - set(names))
    if unknown:
        parser.error(f"no chapter called {unknown}; chapters: {names}")
    try:
        t_studies = time.perf_counter()
        run_studies(args.root, overrides)
        print(f"[book] studies: {time.perf_counter() - t_studies:.0f} s", flush=True)
        ran = False
        for name in args.only or names:
            again = ran and name in SUMMARY_CHAPTERS
            ran = (
                execute(name, root=args.root, overrides=overrides, force=args.force or again) is not None
                or ran
            )
    except NotebookFailed as err:
        print(f"[book] FAILED: {err}", file=sys.stderr)
        return 1
    if not args.no_html:
        html = render(args.root, args.output)
        print(f"[book] HTML in {html}/index.html", flush=True)
    print(f"[book] total {time.perf_counter() - t0:.0f} s ({len(args.only or names)} chapters)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
