"""The results store's code fingerprint: training code retrains stored runs, presentation code does not."""

from __future__ import annotations

import shutil

import dpcore.pipeline.results as results


def test_only_code_that_trains_invalidates_stored_runs(tmp_path, monkeypatch):
    package = tmp_path / "dpcore"
    shutil.copytree(results.PACKAGE_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(results, "PACKAGE_DIR", package)
    before = results.code_fingerprint(), results.code_fingerprint(scope="all")

    (package / "plots.py").write_text((package / "plots.py").read_text() + "\n# a presentation change\n")
    after_plots = results.code_fingerprint(), results.code_fingerprint(scope="all")
    assert after_plots[0] == before[0] and after_plots[1] != before[1]

    card = package / "release" / "model_card.py"  # using a trained model: outside training
    card.write_text(card.read_text() + "\n# a release change\n")
    assert results.code_fingerprint() == before[0]

    start = package / "pipeline" / "warm_start.py"  # the warm start trains: inside
    start.write_text(start.read_text() + "\n# an orchestration change\n")
    assert results.code_fingerprint() != before[0]
    start.write_text(start.read_text().removesuffix("\n# an orchestration change\n"))
    assert results.code_fingerprint() == before[0]

    loop = package / "training" / "loop.py"
    loop.write_text(loop.read_text() + "\n# a training change\n")
    assert results.code_fingerprint() != before[0]
