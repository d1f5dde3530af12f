"""Saved classifiers: train (tiny) -> save -> reload, here and in a fresh process -> identical probabilities,
for LoRA, DP-LoRA, full fine-tuning, frozen lower layers and merged adapters; the model card; refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from dpcore.cli import main
from dpcore.config import RunConfig
from dpcore.models import load_tokenizer
from dpcore.release.saved_model import HEAD, MANIFEST, load_classifier, probabilities, save_classifier
from dpcore.training import train

# name -> (flat overrides of tiny_config, save with merge)
KINDS = {
    "lora": ({}, False),
    "dp-lora": ({"mode": "dp-lora", "noise_multiplier": 1.0, "threshold_policy": "validation"}, False),
    "full": ({"mode": "full"}, False),
    "frozen": ({"trainable_layers": 1}, False),
    "merged": ({}, True),
}


@pytest.fixture(scope="module")
def texts(tiny_splits) -> list[str]:
    return list(tiny_splits["test"]["findings"])


@pytest.fixture(scope="module")
def saved(
    tiny_config, tiny_splits, texts, tmp_path_factory
) -> dict[str, tuple[Path, np.ndarray, list | None]]:
    """Each kind trained once and saved; with the trained model's own probabilities on the test texts and
    its tuned thresholds (None: the configuration's)."""
    out, results = {}, {}
    root = tmp_path_factory.mktemp("saved")
    tokenizer = load_tokenizer(tiny_config.model.model)
    for name, (overrides, merge) in KINDS.items():
        cfg = RunConfig.from_flat({**tiny_config.to_flat(), **overrides})
        key = cfg.config_hash()
        if key not in results:  # trained for release: a DP model is saved only from the secret RNG
            results[key] = train(cfg, tiny_splits, keep_model=True, progress=False, release=True)
        result = results[key]
        expected = probabilities(result.model, tokenizer, texts, max_length=cfg.model.max_length)
        tuned = result.extra.get("thresholds")
        out[name] = (save_classifier(result, root / name, merge=merge), expected, tuned)
    return out


@pytest.mark.parametrize("kind", list(KINDS))
def test_reload_gives_identical_probabilities(saved, texts, kind):
    folder, expected, _ = saved[kind]
    clf = load_classifier(folder)
    got = clf.predict_proba(texts)
    assert clf.manifest["weights"] == {"full": "encoder", "merged": "merged"}.get(kind, "adapters")
    if kind == "merged":  # merging adds B @ A into W: float rounding, not bit equality
        np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    else:
        assert torch.equal(torch.from_numpy(got), torch.from_numpy(expected))
    assert clf.label_names[0] == "No Finding" and len(clf.thresholds) == len(clf.label_names) == 14
    assert clf.predict(texts[:3]).tolist() == (got[:3] >= np.array(clf.thresholds)).astype(int).tolist()
    if kind == "dp-lora":  # tuned on validation, saved as tuned
        assert clf.manifest["threshold_source"] == "validation"
        assert clf.thresholds == pytest.approx(saved[kind][2])


@pytest.mark.parametrize("kind", ["dp-lora", "full"])
def test_fast_loading_agrees_to_float_rounding(saved, texts, kind):
    folder, expected, _ = saved[kind]
    np.testing.assert_allclose(
        load_classifier(folder, fast=True, precision="float32").predict_proba(texts),
        expected,
        atol=1e-6,
        rtol=0,
    )


def test_reload_in_a_fresh_process(saved, texts, tmp_path):
    """Another interpreter, nothing shared but the folders: the same probabilities, from Python and from
    `dpcore predict` on a CSV (unmerged adapters; Parquet output keeps the float32 values exactly)."""
    import pandas as pd

    folders = {k: str(saved[k][0]) for k in KINDS}
    csv, out, table = tmp_path / "reports.csv", tmp_path / "probs.npz", tmp_path / "pred.parquet"
    pd.DataFrame({"id": [f"r{i}" for i in range(len(texts))], "findings": texts}).to_csv(csv, index=False)
    script = (
        "import json, sys, numpy as np\n"
        "from dpcore.release.saved_model import load_classifier\n"
        "from dpcore.cli import main\n"
        "folders, texts = json.loads(sys.argv[1]), json.loads(sys.argv[2])\n"
        "np.savez(sys.argv[3], **{k: load_classifier(f).predict_proba(texts) for k, f in folders.items()})\n"
        "sys.exit(main(['predict', '--model', folders['lora'], sys.argv[4], '-o', sys.argv[5],\n"
        "               '--probabilities', '--exact', '--no-progress']))\n"
    )
    args = [json.dumps(folders), json.dumps(texts), str(out), str(csv), str(table)]
    subprocess.run([sys.executable, "-c", script, *args], check=True, timeout=300, capture_output=True)
    got = np.load(out)
    for kind in KINDS:
        expected = saved[kind][1]
        if kind == "merged":
            np.testing.assert_allclose(got[kind], expected, atol=1e-6, rtol=0)
        else:
            assert np.array_equal(got[kind], expected), kind
    frame = pd.read_parquet(table)
    clf = load_classifier(saved["lora"][0])
    columns = [f"P({name})" for name in clf.label_names]
    assert frame["id"].tolist() == [f"r{i}" for i in range(len(texts))]
    assert np.array_equal(frame[columns].to_numpy(dtype=np.float32), saved["lora"][1])
    assert np.array_equal(frame[clf.label_names].to_numpy(), (saved["lora"][1] >= 0.5).astype(int))


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_model_card_of_a_dp_run(saved):
    folder = saved["dp-lora"][0]
    card = (folder / "README.md").read_text()
    meta = _front_matter(card)
    privacy = meta["dpcore"]["privacy"]
    manifest = json.loads((folder / MANIFEST).read_text())
    assert privacy["epsilon_rdp"] == pytest.approx(manifest["privacy"]["epsilon_rdp"], rel=1e-5)
    assert privacy["epsilon_prv"] == pytest.approx(manifest["privacy"]["epsilon_prv"], rel=1e-5)
    assert privacy["delta"] == manifest["privacy"]["delta"] and privacy["unit"] == "report"
    assert meta["library_name"] == "peft" and "differential-privacy" in meta["tags"]
    assert meta["dpcore"]["corpus"] == "synthetic-cxr" and meta["dpcore"]["splits"]["train"] > 0
    for text in ("| RDP |", "| PRV |", "Privacy unit: one **report**", "group privacy", "Not for clinical"):
        assert text in card, text
    assert "synthetic chest X-ray reports" in card and "Outside epsilon" in card
    assert "`metrics`" in card  # the engine's outside-epsilon fields are listed by name
    assert "`thresholds`" in card and "1/0 labels this model predicts use those tuned" in card


def test_model_card_says_what_secure_means_and_that_checkpoints_are_secret(saved):
    folder = saved["dp-lora"][0]
    assert json.loads((folder / MANIFEST).read_text())["privacy"]["secure_rng"] is True
    card = " ".join((folder / "README.md").read_text().split())
    for text in (
        "63 bits of the operating system's entropy",
        "not a cryptographic generator",
        "`torchcsprng`",
        "Keep checkpoints as secret as the training data",
        "readable by their owner only",
    ):
        assert text in card, text
    assert "whoever holds the seed" not in card


def test_a_replayable_dp_run_is_not_saved(tiny_config, tiny_splits, tmp_path, capsys):
    """A research run's noise is seeded by train.seed, which the folder would publish: no release."""
    cfg = tiny_config.replace(mode="dp-lora", noise_multiplier=1.0)
    research = train(cfg, tiny_splits, keep_model=True, progress=False)
    assert research.privacy.secure_rng is False
    with pytest.raises(ValueError, match="privacy.secure_rng is false: .* could replay the noise"):
        save_classifier(research, tmp_path / "research")
    assert not (tmp_path / "research").exists()
    # The command refuses before it trains: a one-line error, exit status 2, nothing written.
    sets = {**{k: v for k, v in tiny_config.to_flat().items() if k in ("model", "n_reports", "max_length")}}
    flat = [f"--set={k}={v}" for k, v in {**sets, "mode": "dp-lora", "noise_multiplier": 1.0}.items()]
    argv = ["train", *flat, "--set=secure=false", "--results", "", "--save-model", str(tmp_path / "cli")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--save-model with privacy.secure=false" in err
    assert not (tmp_path / "cli").exists()


def test_model_card_of_a_non_private_run(saved):
    card = (saved["lora"][0] / "README.md").read_text()
    assert _front_matter(card)["dpcore"]["privacy"] is None
    assert "**without** differential privacy" in card


def test_refuses_what_is_not_a_saved_classifier(saved, tmp_path, tiny_config, tiny_splits):
    with pytest.raises(ValueError, match=f"model folder {tmp_path}: not a saved dpcore classifier"):
        load_classifier(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    for part in saved["lora"][0].iterdir():
        if part.name != HEAD:
            (broken / part.name).symlink_to(part)
    with pytest.raises(
        ValueError, match=f"model folder {broken}: incomplete saved classifier, missing {HEAD}"
    ):
        load_classifier(broken)
    result = train(tiny_config, tiny_splits, progress=False)  # keep_model=False: no weights to save
    with pytest.raises(ValueError, match="keep_model=True"):
        save_classifier(result, tmp_path / "none")


def test_refuses_adapters_on_another_base(saved, tmp_path):
    folder = tmp_path / "other"
    folder.mkdir()
    for part in saved["lora"][0].iterdir():
        if part.name != MANIFEST:
            (folder / part.name).symlink_to(part)
    manifest = json.loads((saved["lora"][0] / MANIFEST).read_text())
    manifest["base_model"]["sha256"] = "0" * 64
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="is not the one the model was trained on"):
        load_classifier(folder)


def test_train_save_model_from_the_command_line(tiny_config, tmp_path, capsys):
    """--save-model trains even when the store holds the run (a stored result has no weights); DP runs
    saved for release use the secure RNG; the stored result is left as it was."""
    params = {
        "model": tiny_config.model.model,
        "n_reports": 120,
        "max_length": 48,
        "epochs": 1,
        "batch_size": 16,
        "lora_targets": "query,value",
        "mode": "dp-lora",
        "noise_multiplier": 1.0,
    }
    flat = [f"--set={k}={v}" for k, v in params.items()]
    cfg = RunConfig.from_flat({**params, "lora_targets": ["query", "value"]})
    store = tmp_path / "results"
    assert main(["train", *flat, "--results", str(store), "--no-progress"]) == 0
    stored = (store / f"{cfg.config_hash()}.json").read_text()
    capsys.readouterr()
    model = tmp_path / "model"
    assert main(["train", *flat, "--results", str(store), "--no-progress", "--save-model", str(model)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["saved_model"] == str(model) and summary["secure_rng"] is True
    assert load_classifier(model).privacy.secure_rng is True
    assert (store / f"{cfg.config_hash()}.json").read_text() == stored
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    assert main(["train", *flat, "--save-model", str(tmp_path / "full")]) == 2
    assert "not empty" in capsys.readouterr().err


def test_batches_on_several_threads_give_the_same_probabilities(saved, texts):
    clf = load_classifier(saved["lora"][0])
    args = {"max_length": clf.max_length, "batch_size": 4}
    one = probabilities(clf.model, clf.tokenizer, texts, workers=1, **args)
    assert np.array_equal(probabilities(clf.model, clf.tokenizer, texts, workers=3, **args), one)
    unsorted = probabilities(clf.model, clf.tokenizer, texts, sort_by_length=False, **args)
    np.testing.assert_allclose(unsorted, one, atol=1e-6, rtol=0)  # other padding: float rounding at most
