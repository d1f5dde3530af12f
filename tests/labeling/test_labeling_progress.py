"""Labeling shows a progress bar on a terminal (the LLM teacher takes seconds per report), and none
elsewhere or with ``--no-progress``."""

from __future__ import annotations

import io

from dpcore.labeling import RuleTeacher
from dpcore.labeling.cli import add_label_command
from dpcore.labeling.dataset import label_texts_cached

TEXTS = ["No effusion.", "Cardiomegaly.", "Possible pneumonia."]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_on_a_terminal_only(monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    vectors, _ = label_texts_cached(TEXTS, teacher=RuleTeacher(), batch_size=2, progress=True)
    assert (
        len(vectors) == 3
        and "3/3" in terminal.getvalue()
        and "labeling (rules-chexpert)" in terminal.getvalue()
    )
    quiet = _Terminal()
    monkeypatch.setattr("sys.stderr", quiet)
    label_texts_cached(TEXTS, teacher=RuleTeacher(), progress=False)
    assert quiet.getvalue() == ""
    log = io.StringIO()  # not a terminal: no bar even when asked
    monkeypatch.setattr("sys.stderr", log)
    label_texts_cached(TEXTS, teacher=RuleTeacher(), progress=True)
    assert "labeling" not in log.getvalue()


def test_label_command_has_no_progress_option(tmp_path, monkeypatch):
    import argparse

    src = tmp_path / "r.csv"
    src.write_text("id,findings\n1,No effusion.\n2,Cardiomegaly.\n")
    parser = argparse.ArgumentParser(prog="dpcore")
    add_label_command(parser.add_subparsers(dest="command", required=True))
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    for flag, shown in (([], True), (["--no-progress"], False)):
        args = parser.parse_args(["label", str(src), "-o", str(tmp_path / "o.csv"), "--no-cache", *flag])
        assert args.func(args) == 0
        assert ("2/2" in terminal.getvalue()) is shown
        terminal.seek(0)
        terminal.truncate()
