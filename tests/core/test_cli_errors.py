"""Bad input on the command line: one line on stderr naming what is wrong, exit status 2, nothing written;
``--debug`` shows the traceback, and bugs keep theirs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dpcore.cli import main
from dpcore.data.fixtures import MIMIC_LABELS, write_mimic_fixture, write_mimic_labels

REPO = Path(__file__).resolve().parents[2]


def _files(tmp: Path) -> dict[str, Path]:
    """Small inputs, each wrong in one way."""
    texts = {
        "ok.csv": "id,report,Edema\na,Mild edema.,1\nb,No effusion.,0\n",
        "header_only.csv": "id,report,Edema\n",
        "dup.csv": "id,report,Edema\na,x,1\nb,y,0\na,z,0\n",
        "all_empty.csv": "id,report,Edema\na, ,1\nb,,0\n",
        "bad_label.csv": "id,report,Edema\na,x,1\nb,y,0\nc,z,2\n",
        "list.yml": "- mode\n- lora\n",
        "broken.yml": "mode: [lora\n",
    }
    for name, text in texts.items():
        (tmp / name).write_text(text)
    return {name.split(".")[0]: tmp / name for name in texts}


def _table(path: Path, out: Path, *extra: str) -> list[str]:
    return [
        "corpus",
        "load",
        "table",
        "--path",
        str(path),
        "--text-column",
        "report",
        *extra,
        "--out",
        str(out),
    ]


def _cases(tmp: Path) -> list[tuple[list[str], str]]:
    f = _files(tmp)
    out = tmp / "out.jsonl"
    empty = tmp / "empty"
    empty.mkdir()
    mimic = write_mimic_fixture(tmp / "mimic")
    dup_labels = tmp / "dup_labels.csv"
    write_mimic_labels(dup_labels, MIMIC_LABELS)
    lines = dup_labels.read_text().splitlines()
    dup_labels.write_text("\n".join([*lines, lines[1]]) + "\n")
    return [
        # configuration
        (["config", "--set", "epochs=2.7"], "epochs must be a whole number, got 2.7"),
        (["config", "--set", "n_reports='2.5'"], "n_reports must be a whole number, got '2.5'"),
        (["config", "--set", "mode=foo"], "mode must be one of"),
        (["config", "--set", "secure=maybe"], "secure must be true or false, got 'maybe'"),
        (["config", "--set", "epochs"], "--set expects key=value"),
        (["config", "--set", "epoch=1"], "unknown parameters ['epoch']"),
        (["config", "--config", str(tmp / "missing.yml")], "missing.yml: no such file or directory"),
        (["config", "--config", str(f["list"])], "list.yml: expected a mapping of parameters"),
        (["config", "--config", str(f["broken"])], "broken.yml: not YAML"),
        (["train", "--set", "mode=dp-lora", "--results", ""], "dp-lora needs exactly one of epsilon"),
        (["privacy", "epsilon", "--noise-multiplier", "1", "--delta", "2", "--sample-rate", ".1", "--steps", "9"], "--delta must be in (0, 1), got 2.0"),
        # corpora
        (_table(f["header_only"], out), "header_only.csv: no rows found: nothing to load"),
        (_table(f["dup"], out, "--id-column", "id"), "dup.csv, row 3, field id: duplicate id 'a' (first at row 1)"),
        (_table(f["all_empty"], out), "all_empty.csv: no report kept: all 2 rows were left out (2 empty text)"),
        (_table(f["bad_label"], out), "bad_label.csv, row 3, field Edema: label value '2'"),
        (_table(f["ok"], out, "--label-column", "Edema"), "--label-column expects LABEL=COLUMN, got 'Edema'"),
        (_table(f["ok"], tmp / "out.xlsx"), "unknown output format '.xlsx'"),
        (_table(tmp / "nowhere.csv", out), "nowhere.csv: file not found"),
        (["corpus", "load", "mimic-cxr", "--out", str(out)], "corpus load mimic-cxr needs --reports"),
        (["corpus", "load", "mimic-cxr", "--reports", str(mimic["root"]), "--labels", str(dup_labels), "--out", str(out)], "row 6, field study_id: duplicate study_id 50414267 (first at row 1)"),
        (["corpus", "load", "mimic-cxr", "--reports", str(empty), "--out", str(out)], "no report files like files/p10/"),
        (["corpus", "load", "ct-rate", "--root", str(empty), "--out", str(out)], "no report CSV found"),
        (["corpus", "load", "ct-rate", "--out", str(out)], "needs --root, --reports-csv or --from-hub"),
        # labeling
        (["label", str(tmp / "nowhere.csv"), "-o", str(tmp / "l.csv")], "nowhere.csv: file not found"),
        (["label", str(f["header_only"]), "-o", str(tmp / "l.csv")], "header_only.csv: no reports to label"),
        (["label", str(f["ok"]), "-o", str(tmp / "l.csv")], "field findings: no such column"),
        (["label", str(f["ok"]), "--text-column", "report"], "-o/--output is required"),
        (["label", str(f["ok"]), "-o", str(tmp / "l.csv"), "--text-column", "report", "--teacher", "llm"], "--teacher llm needs --llm-url"),
        # studies
        (["study", "show", "nothing-here"], "unknown study 'nothing-here'"),
        (["study", "run", "grid", "--profile", "nope", "--dry-run"], "unknown profile 'nope'"),
    ]  # fmt: skip


def test_every_bad_input_is_one_line_and_status_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)  # studies/ is found from the repository root
    for argv, message in _cases(tmp_path):
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        assert captured.err.startswith("error: "), (argv, captured.err)
        assert captured.err.count("\n") == 1 and "Traceback" not in captured.err, captured.err
        assert message in captured.err, (message, captured.err)
    # Nothing was written by the commands that failed.
    assert not any(tmp_path.glob("out*")) and not any(tmp_path.glob("l.csv"))


def test_a_single_name_is_a_one_name_list(capsys):
    assert main(["config", "--set", "lora_targets=query"]) == 0
    assert "lora_targets:\n  - query\n" in capsys.readouterr().out
    assert main(["config", "--set", "lora_targets=query,value"]) == 0
    assert "lora_targets:\n  - query\n  - value\n" in capsys.readouterr().out


def test_debug_shows_the_traceback():
    with pytest.raises(ValueError, match="epochs must be a whole number"):
        main(["--debug", "config", "--set", "epochs=2.7"])


def test_bugs_are_not_dressed_as_bad_input(monkeypatch):
    import dpcore.cli

    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(dpcore.cli, "_cmd_config", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["config"])


def test_through_a_real_process(tmp_path):
    f = _files(tmp_path)
    argv = [sys.executable, "-m", "dpcore", *_table(f["dup"], tmp_path / "out.jsonl", "--id-column", "id")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path, check=False)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"error: file {f['dup']}, row 3, field id: duplicate id 'a' (first at row 1)"
    ]
    assert not (tmp_path / "out.jsonl").exists()
    debug = subprocess.run(
        [*argv[:3], "--debug", *argv[3:]], capture_output=True, text=True, env=env, check=False
    )
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "DataError" in debug.stderr
