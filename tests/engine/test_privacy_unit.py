"""What the guarantee covers: patient-level DP-SGD, group privacy, the secret RNG, the outside-epsilon marks,
and the silent holes that are now errors (in Opacus's style: two paths compared, bounds checked)."""

from __future__ import annotations

import json

import datasets
import pytest
import torch
from opacus.optimizers import DPOptimizer

from dpcore.cli import main
from dpcore.config import RunConfig
from dpcore.models import build_model, load_tokenizer
from dpcore.privacy import epsilons, group_privacy
from dpcore.training import (
    PrivacyUnits,
    TrainingInterrupted,
    load_checkpoint,
    make_private,
    pad_collate,
    reused_parameters,
    seed_everything,
    train,
    train_step,
)
from dpcore.training.loop import Loop

_REAL_CHUNK = Loop._chunk  # the honest chunking, for the planted-bug twin
REPORTS = [
    "small left pleural effusion with adjacent atelectasis",
    "heart size is mildly enlarged. no pneumothorax.",
    "right lower lobe consolidation concerning for pneumonia",
    "support devices in place",
]


def _weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _patient_step(cfg: RunConfig, reports: list[str], *, c: float) -> float:
    """The norm of the update one patient (all of ``reports``) makes in a noiseless DP step of batch 1."""
    seed_everything(0)
    model = build_model(cfg.model, num_labels=14, mode="dp-lora")
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    tok = load_tokenizer(cfg.model.model)
    collate = pad_collate(tok.pad_token_id)
    items = [(torch.tensor(ids), torch.ones(14)) for ids in tok(reports)["input_ids"]]
    before = _weights(model)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    private = make_private(
        model,
        optimizer,
        noise_multiplier=0.0,
        max_grad_norm=c,
        expected_batch_size=1,
        grad_sample_mode="hooks",
    )
    chunk = (*collate(items), torch.zeros(len(items), dtype=torch.long))  # one unit: every report is group 0
    train_step(private.module, private.optimizer, [chunk], logical_size=len(items), private=private)
    after = _weights(model)
    return float(torch.cat([(before[n] - after[n]).flatten() for n in before]).norm())


def test_a_patient_moves_the_model_at_most_c_however_many_reports(tiny_config):
    c = 1e-3  # small enough that every patient's gradient is clipped
    many = _patient_step(tiny_config, REPORTS, c=c)
    one = _patient_step(tiny_config, REPORTS[:1], c=c)
    assert many == pytest.approx(c, rel=1e-3) and one == pytest.approx(c, rel=1e-3)
    # Without the unit, four reports would move it by up to 4 C: the test can fail.
    assert many <= c * (1 + 1e-4)


def test_patient_chunks_keep_every_patient_whole():
    units = PrivacyUnits.of_patients(["a", "b", "a", "c", "b", "a"], cap=None)
    lengths = torch.tensor([5, 3, 9, 1, 2, 4])
    chunks = units.chunks(torch.arange(3), lengths, size=2)
    seen = [sorted(r.tolist()) for r, _ in chunks]
    assert sorted(x for r in seen for x in r) == list(range(6))
    for reports, group in chunks:
        for g in group.unique():
            members = set(reports[group == g].tolist())
            assert members in ({0, 2, 5}, {1, 4}, {3})


def _clipped_rows(monkeypatch) -> list[int]:
    """Record, at every clipping (every physical chunk), how many per-sample-gradient rows Opacus clips:
    one per privacy unit. Every trainable parameter must hold the same number."""
    rows: list[int] = []
    real = DPOptimizer.clip_and_accumulate

    def spy(self):
        counts = {len(g) for g in self.grad_samples}
        assert len(counts) == 1, counts
        rows.append(counts.pop())
        return real(self)

    monkeypatch.setattr(DPOptimizer, "clip_and_accumulate", spy)
    return rows


def _patients_at_q1(tiny_config, tiny_splits) -> tuple[RunConfig, int, int]:
    """The patient unit at sample rate 1 (the batch is every patient, so every step draws them all), in
    physical chunks of 8 reports: several chunks a step, several patients a chunk."""
    patients = len(set(tiny_splits["train"]["patient_id"]))
    cfg = tiny_config.replace(
        mode="dp-lora",
        noise_multiplier=1.0,
        privacy_unit="patient",
        batch_size=patients,
        physical_batch_size=8,
        epochs=2,
    )
    return cfg, patients, len(tiny_splits["train"])


# Opacus's PRV accountant takes log(1 - q): at q = 1 it warns (and still returns epsilon).
AT_Q1 = pytest.mark.filterwarnings("ignore:divide by zero encountered in log:RuntimeWarning")


@AT_Q1
def test_patient_unit_clips_one_gradient_row_per_patient_end_to_end(tiny_config, tiny_splits, monkeypatch):
    cfg, patients, reports = _patients_at_q1(tiny_config, tiny_splits)
    assert reports > patients  # patients with several reports, where averaging matters
    rows = _clipped_rows(monkeypatch)
    result = train(cfg, tiny_splits, progress=False)
    p = result.privacy
    assert (p.unit, p.units, p.sample_rate, p.steps) == ("patient", patients, 1.0, 2)
    assert len(rows) > p.steps  # several physical chunks a step
    assert sum(rows) == patients * p.steps  # one row per patient per step, not one per report


@AT_Q1
def test_dropping_the_patient_grouping_is_caught(tiny_config, tiny_splits, monkeypatch):
    """The planted-bug twin: a loop that no longer passes the grouping clips one row per report."""
    cfg, patients, reports = _patients_at_q1(tiny_config, tiny_splits)
    rows = _clipped_rows(monkeypatch)
    monkeypatch.setattr(Loop, "_chunk", lambda self, r, group: _REAL_CHUNK(self, r, None))
    result = train(cfg, tiny_splits, progress=False)
    assert sum(rows) == reports * result.privacy.steps != patients * result.privacy.steps


def _one_report_per_patient(splits: datasets.DatasetDict) -> datasets.DatasetDict:
    return datasets.DatasetDict(
        {name: ds.map(lambda row: {"patient_id": row["id"]}) for name, ds in splits.items()}
    )


def test_patient_level_equals_report_level_when_every_patient_has_one_report(tiny_config, tiny_splits):
    splits = _one_report_per_patient(tiny_splits)
    cfg = tiny_config.replace(mode="dp-lora", noise_multiplier=1.0, epochs=2)
    reports = train(cfg, splits, progress=False, keep_model=True)
    patients = train(cfg.replace(privacy_unit="patient"), splits, progress=False, keep_model=True)
    a, b = _weights(reports.model), _weights(patients.model)
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-5), name
    assert patients.privacy.epsilon_rdp == reports.privacy.epsilon_rdp
    assert patients.privacy.units == reports.privacy.units == len(splits["train"])


def test_patient_level_epsilon_counts_patients(tiny_config, tiny_splits):
    cfg = tiny_config.replace(mode="dp-lora", epsilon=4.0, privacy_unit="patient", batch_size=8, epochs=2)
    result = train(cfg, tiny_splits, progress=False)
    patients = len(set(tiny_splits["train"]["patient_id"]))
    assert patients < len(tiny_splits["train"])  # the corpus has patients with several reports
    p = result.privacy
    assert (p.unit, p.units) == ("patient", patients)
    assert p.sample_rate == pytest.approx(1 / -(-patients // 8))
    assert p.delta < 1 / patients
    expected = epsilons(history=[(p.noise_multiplier, p.sample_rate, p.steps)], delta=p.delta)
    assert (p.epsilon_rdp, p.epsilon_prv) == (expected["rdp"], expected["prv"])
    assert p.epsilon_rdp <= 4.0 + 1e-6
    assert p.group_epsilon == pytest.approx(p.epsilon_rdp)  # a patient is one unit


def test_membership_members_are_reports_that_trained(tiny_config, tiny_splits):
    """With a cap of one report per patient, the rest of each patient's reports never train: no member."""
    ids = tiny_splits["train"]["patient_id"]
    kept = {ids.index(pid) for pid in set(ids)}  # each patient's first report: what the cap keeps
    assert len(kept) < len(ids)
    cfg = tiny_config.replace(
        mode="dp-lora",
        noise_multiplier=1.0,
        privacy_unit="patient",
        max_reports_per_patient=1,
        batch_size=8,
        membership_sample=len(ids),  # as many as there are: every trained report, and only those
    )
    members = train(cfg, tiny_splits, progress=False).extra["membership"]["member_index"]
    assert set(members) == kept and len(members) == len(kept)


def test_report_level_runs_state_the_group_privacy_of_the_busiest_patient(tiny_config, tiny_splits):
    result = train(tiny_config.replace(mode="dp-lora", epsilon=2.0), tiny_splits, progress=False)
    ids = tiny_splits["train"]["patient_id"]
    k = max(ids.count(x) for x in set(ids))
    p = result.privacy
    assert k > 1 and p.max_reports_per_patient == k
    assert (p.group_epsilon, p.group_delta) == group_privacy(epsilon=p.epsilon_rdp, delta=p.delta, k=k)


def test_patient_unit_trains_through_the_command_line(tiny_config, tmp_path, capsys):
    sets = [f"{k}={v}" for k, v in tiny_config.to_flat().items() if k in ("model", "n_reports", "max_length")]
    sets += ["mode=dp-lora", "epsilon=4", "privacy_unit=patient", "batch_size=8", "lora_targets=query,value"]
    code = main(["train", "--results", "", "--no-progress", *[x for s in sets for x in ("--set", s)]])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["privacy_unit"] == "patient" and summary["epsilon_rdp"] <= 4.0 + 1e-6


def test_secure_runs_cannot_be_replayed_and_research_runs_can(tiny_config, tiny_splits):
    cfg = tiny_config.replace(mode="dp-lora", noise_multiplier=1.0)
    research = [train(cfg, tiny_splits, progress=False, keep_model=True) for _ in range(2)]
    secure = [train(cfg.replace(secure=True), tiny_splits, progress=False, keep_model=True) for _ in range(2)]
    assert not research[0].privacy.secure_rng and secure[0].privacy.secure_rng
    same = _weights(research[0].model), _weights(research[1].model)
    differ = _weights(secure[0].model), _weights(secure[1].model)
    assert all(torch.equal(same[0][n], same[1][n]) for n in same[0])
    assert not all(torch.equal(differ[0][n], differ[1][n]) for n in differ[0])
    released = train(cfg, tiny_splits, progress=False, release=True)
    assert released.privacy.secure_rng  # a model saved for release gets the secure RNG by default
    assert not train(cfg.replace(secure=False), tiny_splits, progress=False, release=True).privacy.secure_rng


def test_every_private_diagnostic_is_marked_outside_epsilon(tiny_config, tiny_splits):
    cfg = tiny_config.replace(
        mode="dp-lora", noise_multiplier=1.0, threshold_policy="validation", membership_sample=10
    )
    result = train(cfg, tiny_splits, progress=False)
    outside = result.outside_epsilon
    for key in ("epochs.train_loss", "epochs.val_loss", "metrics", "data", "extra.thresholds"):
        assert key in outside, key
    assert "extra.membership" in outside and result.extra["membership"]["outside_epsilon"]
    assert len(result.extra["membership"]["member_loss"]) == 10
    assert "weights" in result.covered_by_epsilon
    plain = train(tiny_config, tiny_splits, progress=False)
    assert "model" in plain.outside_epsilon and plain.covered_by_epsilon.startswith("nothing")


@pytest.mark.parametrize(
    ("flat", "message"),
    [
        ({"max_epsilon": 5.0, "noise_multiplier": 0.0}, "without noise epsilon is infinite"),
        ({"max_epsilon": 5.0, "noise_multiplier": 1.0, "poisson_sampling": False}, "need poisson_sampling"),
        ({"epsilon": 5.0, "poisson_sampling": False}, "need poisson_sampling"),
        ({"epsilon": 5.0, "privacy_unit": "patient", "grad_sample_mode": "ghost"}, "needs grad_sample_mode"),
    ],
)
def test_budgets_that_cannot_hold_are_errors(flat, message):
    with pytest.raises(ValueError, match=message):
        RunConfig.from_flat({"mode": "dp-lora", **flat})


def test_a_resume_over_other_data_is_refused(tiny_config, tiny_splits, tmp_path):
    cfg = tiny_config.replace(mode="dp-lora", noise_multiplier=1.0, epochs=2)
    with pytest.raises(TrainingInterrupted):
        train(cfg, tiny_splits, progress=False, checkpoint_dir=tmp_path, stop_after_steps=3)
    state = load_checkpoint(tmp_path)
    # No per-example values in a checkpoint: the epoch's loss is a sum and a count.
    assert "epoch_losses" not in state and isinstance(state["loss_sum"], float)
    fewer = datasets.DatasetDict({**tiny_splits, "train": tiny_splits["train"].select(range(80))})
    with pytest.raises(ValueError, match="other data or accounting .*data_fingerprint"):
        train(cfg, fewer, progress=False, checkpoint_dir=tmp_path)


def test_checkpoints_are_readable_by_their_owner_only(tiny_config, tiny_splits, tmp_path):
    """A checkpoint holds the noise generators' states: as secret as the data, so mode 0o600."""
    cfg = tiny_config.replace(mode="dp-lora", noise_multiplier=1.0, epochs=2)
    folder = tmp_path / "ckpt"
    with pytest.raises(TrainingInterrupted):
        train(cfg, tiny_splits, progress=False, checkpoint_dir=folder, stop_after_steps=2)
    assert "generators" in load_checkpoint(folder)
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"state.pt", "head.pt"}
    assert {p.relative_to(folder).as_posix(): oct(p.stat().st_mode & 0o777) for p in files} == {
        p.relative_to(folder).as_posix(): oct(0o600) for p in files
    }
    for d in [folder, *(p for p in folder.rglob("*") if p.is_dir())]:
        assert d.stat().st_mode & 0o077 == 0, d


class _Twice(torch.nn.Module):
    """A layer applied twice in one forward pass (as ALBERT applies one layer at every depth)."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 4)

    def forward(self, x, mask):
        return self.layer(self.layer(x))


class _Tied(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(4, 4, bias=False)
        self.b = torch.nn.Linear(4, 4, bias=False)
        self.b.weight = self.a.weight

    def forward(self, x, mask):
        return self.b(self.a(x))


def test_reused_parameters_are_detected_not_listed_by_name():
    x = (torch.randn(2, 4), torch.ones(2, 4))
    assert reused_parameters(_Twice(), x) == ["layer.weight", "layer.bias"]
    assert reused_parameters(_Tied(), x) == ["a.weight"]
    assert reused_parameters(torch.nn.Sequential(), None) == []
    model = _Twice()
    with pytest.raises(ValueError, match="used more than once in one forward pass"):
        make_private(
            model,
            torch.optim.SGD(model.parameters(), lr=0.1),
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            expected_batch_size=2,
            grad_sample_mode="ghost",
            example_inputs=x,
        )


def test_the_summary_shows_no_diagnostic_beside_epsilon(tiny_config, tiny_splits):
    from dpcore.training.coverage import run_summary

    result = train(tiny_config.replace(mode="dp-lora", epsilon=2.0), tiny_splits, progress=False)
    summary = run_summary(result)
    guarantee = {"config_hash", "mode", "covered_by_epsilon", "privacy_unit", "epsilon_rdp", "epsilon_prv"}
    guarantee |= {"delta", "secure_rng", "train_seconds", "stop_reason", "world_size", "outside_epsilon"}
    assert set(summary) <= guarantee
    outside = summary["outside_epsilon"]
    assert outside["test_weighted_f1"] == result.weighted_f1
    assert {"training_units", "max_reports_per_patient", "group_epsilon"} <= set(outside)
