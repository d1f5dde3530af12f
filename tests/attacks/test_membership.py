"""Membership inference: the statistics against scikit-learn and hand cases, the bootstrap, the losses of a
trained model, and ``dpcore audit membership``."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from dpcore.attacks.cli import register
from dpcore.attacks.membership import (
    attack_run,
    auroc,
    calibrated_attack,
    example_losses,
    loss_attack,
    score_attack,
    splits_losses,
    tpr_at_fpr,
)
from dpcore.models import load_tokenizer
from dpcore.training import encode, pad_collate, predict, train


def test_identical_distributions_give_auroc_near_half_with_intervals_covering_it():
    # One draw misses 0.5 one time in twenty by design: check the coverage over many draws instead.
    runs = [
        loss_attack(
            member_loss=rng.exponential(size=200),
            nonmember_loss=rng.exponential(size=200),
            n_bootstrap=300,
            seed=k,
        )
        for k, rng in enumerate(np.random.default_rng(k) for k in range(40))
    ]
    values = np.array([r.auroc.value for r in runs])
    covered = np.mean([r.auroc.lo <= 0.5 <= r.auroc.hi for r in runs])
    assert abs(values.mean() - 0.5) < 0.02
    assert covered >= 0.85  # nominal 0.95; 40 draws
    assert all(r.auroc.hi - r.auroc.lo < 0.2 for r in runs)  # 200 a side: about +-0.056
    assert np.mean([r.tpr_at_fpr[0].estimate.value for r in runs]) < 0.03  # about the FPR itself


def test_separated_distributions_give_auroc_one():
    rng = np.random.default_rng(1)
    res = loss_attack(member_loss=rng.uniform(0.0, 0.1, 300), nonmember_loss=rng.uniform(1.0, 2.0, 300))
    assert res.auroc.value == 1.0 and res.auroc.lo == 1.0
    assert [row.estimate.value for row in res.tpr_at_fpr] == [1.0, 1.0]


def test_tpr_at_fpr_hand_case():
    members, nonmembers = [9, 8, 7, 6, 1], [7.5, 5, 4, 3, 2, 0, -1, -2, -3, -4]
    # FPR <= 0.1 allows one non-member above the threshold: 7.5 is, 5 is not, so members above 5: 4 of 5.
    assert tpr_at_fpr(member_scores=members, nonmember_scores=nonmembers, fpr=0.1) == 0.8
    # FPR 0: only members above the highest non-member (7.5) count.
    assert tpr_at_fpr(member_scores=members, nonmember_scores=nonmembers, fpr=0.0) == 0.4
    assert tpr_at_fpr(member_scores=members, nonmember_scores=nonmembers, fpr=0.09) == 0.4


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_and_tpr_agree_with_scikit_learn_with_ties(seed: int):
    rng = np.random.default_rng(seed)
    s, t = rng.normal(0.4, 1, 150).round(1), rng.normal(0, 1, 230).round(1)  # rounded: many ties
    y, scores = np.r_[np.ones(s.size), np.zeros(t.size)], np.r_[s, t]
    assert auroc(member_scores=s, nonmember_scores=t) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    fpr, tpr, _ = roc_curve(y, scores, drop_intermediate=False)
    for alpha in (0.0, 0.01, 0.05, 0.1, 0.3):
        expected = tpr[fpr <= alpha + 1e-12].max()
        assert tpr_at_fpr(member_scores=s, nonmember_scores=t, fpr=alpha) == pytest.approx(expected)
    res = score_attack(member_scores=s, nonmember_scores=t, n_bootstrap=10)
    assert np.allclose(res.roc_fpr, fpr) and np.allclose(res.roc_tpr, tpr)


def test_bootstrap_interval_matches_a_loop_over_resamples():
    rng = np.random.default_rng(3)
    s, t = rng.normal(0.5, 1, 40), rng.normal(0, 1, 60)
    res = score_attack(member_scores=s, nonmember_scores=t, n_bootstrap=400, seed=5)
    gen = np.random.default_rng(5)  # the same draws, one resample at a time
    w = gen.multinomial(s.size, np.full(s.size, 1 / s.size), size=400)
    u = gen.multinomial(t.size, np.full(t.size, 1 / t.size), size=400)
    boots = [
        roc_auc_score(np.r_[np.ones(s.size), np.zeros(t.size)], np.r_[s, t], sample_weight=np.r_[a, b])
        for a, b in zip(w, u, strict=True)
    ]
    assert (res.auroc.lo, res.auroc.hi) == pytest.approx(tuple(np.percentile(boots, [2.5, 97.5])))


def test_low_fpr_that_n_cannot_resolve_is_said_plainly():
    rng = np.random.default_rng(4)
    res = loss_attack(member_loss=rng.random(200), nonmember_loss=rng.random(200), n_bootstrap=50)
    resolved = {row.fpr: row.resolved for row in res.tpr_at_fpr}
    assert resolved == {0.01: True, 0.001: False}
    assert len(res.notes) == 1 and "0.001" in res.notes[0] and "200 non-members" in res.notes[0]


def test_calibration_removes_per_report_difficulty():
    rng = np.random.default_rng(5)
    difficulty = rng.exponential(1.0, 800)  # some reports are hard for every model
    member = np.arange(800) < 400
    target = difficulty * np.where(member, 0.8, 1.0)  # training lowers a member's loss a little
    reference = difficulty * rng.uniform(0.95, 1.05, 800)  # a public model sees the same difficulty
    plain = loss_attack(member_loss=target[member], nonmember_loss=target[~member], n_bootstrap=100)
    calibrated = calibrated_attack(
        member_loss=target[member],
        nonmember_loss=target[~member],
        member_reference_loss=reference[member],
        nonmember_reference_loss=reference[~member],
        n_bootstrap=100,
    )
    assert plain.auroc.value < 0.6 < 0.9 < calibrated.auroc.value
    with pytest.raises(ValueError, match="pair them"):
        calibrated_attack(
            member_loss=[1, 2], nonmember_loss=[1], member_reference_loss=[1], nonmember_reference_loss=[1]
        )


def test_attack_run_reads_the_membership_entry():
    entry = {
        "outside_epsilon": True,
        "member_loss": [0.1, 0.2],
        "nonmember_loss": [0.3, 0.4],
        "labels": "teacher",
    }
    out = attack_run({"extra": {"membership": entry}}, n_bootstrap=20)
    assert list(out) == ["loss"] and out["loss"].auroc.value == 1.0
    with pytest.raises(ValueError, match="membership_sample"):
        attack_run({"extra": {}})


@pytest.fixture(scope="module")
def trained(tiny_config, tiny_splits):
    cfg = tiny_config.replace(epochs=2)
    return cfg, train(cfg, tiny_splits, progress=False, keep_model=True)


def test_example_losses_match_the_training_loss(trained, tiny_splits):
    cfg, result = trained
    losses = example_losses(result.model, tiny_splits["test"], cfg=cfg)
    tok = load_tokenizer(cfg.model.model)
    data = encode(
        tiny_splits["test"],
        tokenizer=tok,
        text_column="findings",
        label_column="teacher_labels",
        policy=cfg.teacher.uncertainty_policy,
        max_length=cfg.model.max_length,
    )
    loader = torch.utils.data.DataLoader(data, batch_size=7, collate_fn=pad_collate(tok.pad_token_id))
    _, mean_loss = predict(result.model, loader, torch.device("cpu"))
    assert losses.shape == (len(tiny_splits["test"]),)
    assert losses.mean() == pytest.approx(mean_loss, rel=1e-5)
    assert result.model.training  # left as it was


def test_membership_command_prints_the_attack_beside_epsilon(trained, tiny_splits, tmp_path, capsys):
    cfg, result = trained
    losses = splits_losses(result.model, tiny_splits, cfg=cfg, sample=10)
    result.extra["membership"] = {
        "outside_epsilon": True,
        "member_loss": losses["train"].tolist(),
        "nonmember_loss": losses["test"].tolist(),
        "labels": "teacher",
    }
    path = result.save(tmp_path / "run.json")
    parser = argparse.ArgumentParser(prog="dpcore")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["audit", "membership", str(path), "--bootstrap", "50", "--json", str(tmp_path / "mia.json")]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "AUROC" in out and "ε: none (not private)" in out and "outside ε" in out
    assert "not resolved" in out  # 10 non-members cannot resolve FPR 1% or 0.1%
    assert json.loads((tmp_path / "mia.json").read_text())["loss"]["n_members"] == 10
    bare = result.to_dict()
    bare["extra"].pop("membership")
    (tmp_path / "bare.json").write_text(json.dumps(bare))
    args = parser.parse_args(["audit", "membership", str(tmp_path / "bare.json")])
    with pytest.raises(ValueError, match="membership_sample"):
        args.func(args)
