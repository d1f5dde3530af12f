"""Whole runs on the tiny model: resume, checkpoints, budgets, dp-full, distributed, the command line."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
import yaml

from dpcore.config import RunConfig
from dpcore.training import RunResult, TrainingInterrupted, train


def _weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("mode", ["dp-lora", "lora"])
def test_a_resumed_run_equals_an_uninterrupted_one(tiny_config, tiny_splits, tmp_path, mode):
    extra = {"noise_multiplier": 1.0} if mode == "dp-lora" else {}
    cfg = tiny_config.replace(mode=mode, epochs=2, **extra)
    whole = train(cfg, tiny_splits, progress=False, keep_model=True)
    folder = tmp_path / "ckpt"
    # Killed mid-epoch 1 (step 4 of 6), then again at the start of epoch 2.
    with pytest.raises(TrainingInterrupted):
        train(cfg, tiny_splits, progress=False, checkpoint_dir=folder, stop_after_steps=4)
    with pytest.raises(TrainingInterrupted):
        train(cfg, tiny_splits, progress=False, checkpoint_dir=folder, stop_after_steps=7)
    resumed = train(cfg, tiny_splits, progress=False, keep_model=True, checkpoint_dir=folder)
    a, b = _weights(whole.model), _weights(resumed.model)
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name
    assert [e.train_loss for e in resumed.epochs] == pytest.approx([e.train_loss for e in whole.epochs])
    if mode == "dp-lora":
        # Every step counted once: same steps, same epsilon.
        assert resumed.privacy.steps == whole.privacy.steps == 12
        assert resumed.privacy.epsilon_rdp == whole.privacy.epsilon_rdp
        assert resumed.privacy.epsilon_prv == whole.privacy.epsilon_prv


def test_checkpoint_adapters_reload_with_peft(tiny_config, tiny_splits, tmp_path):
    from peft import PeftModel

    from dpcore.models import load_backbone

    cfg = tiny_config.replace(mode="dp-lora", noise_multiplier=1.0)
    result = train(cfg, tiny_splits, progress=False, keep_model=True, checkpoint_dir=tmp_path)
    reloaded = PeftModel.from_pretrained(load_backbone(cfg.model.model), tmp_path / "adapter")
    trained = {n: p for n, p in result.model.backbone.named_parameters() if "lora_" in n}
    again = dict(reloaded.named_parameters())
    assert trained and all(torch.equal(p, again[n]) for n, p in trained.items())
    head = torch.load(tmp_path / "head.pt")
    assert torch.equal(head["weight"], result.model.head.weight)
    # A finished run's checkpoint of another configuration is refused, not silently mixed.
    with pytest.raises(ValueError, match="belongs to configuration"):
        train(cfg.replace(seed=1), tiny_splits, progress=False, checkpoint_dir=tmp_path)


def test_training_stops_before_the_budget_is_spent(tiny_config, tiny_splits):
    cfg = tiny_config.replace(mode="dp-lora", noise_multiplier=1.0, max_epsilon=4.0, epochs=4)
    result = train(cfg, tiny_splits, progress=False)
    p = result.privacy
    assert 0 < p.steps < 4 * 6
    assert p.epsilon_rdp <= 4.0 and "budget spent" in p.stop_reason
    assert result.extra["stop_reason"] == p.stop_reason
    # One more step would have crossed the budget.
    from dpcore.privacy import epsilon_spent

    assert epsilon_spent(history=[(1.0, p.sample_rate, p.steps + 1)], delta=p.delta, accountant="rdp") > 4.0


def test_the_papers_lowest_budget_works(tiny_config, tiny_splits):
    result = train(tiny_config.replace(mode="dp-lora", epsilon=0.01), tiny_splits, progress=False)
    p = result.privacy
    assert p.stop_reason == "completed" and p.steps == 6
    assert 0.009 <= p.epsilon_rdp <= 0.01 and 0 < p.epsilon_prv <= 0.01


def test_empty_poisson_batches_count_as_steps(tiny_config, tiny_splits):
    # batch 2 of ~96: a logical batch is empty with probability ~0.14; every one is a noised step.
    result = train(
        tiny_config.replace(mode="dp-lora", noise_multiplier=2.0, batch_size=2), tiny_splits, progress=False
    )
    assert result.privacy.steps == math.ceil(result.data["train"] / 2)
    assert math.isfinite(result.privacy.epsilon_rdp)


def test_dp_full_moves_every_weight(tiny_config, tiny_splits):
    from dpcore.models import build_model
    from dpcore.training import seed_everything

    cfg = tiny_config.replace(mode="dp-full", noise_multiplier=1.0)
    seed_everything(cfg.train.seed)
    before = _weights(build_model(cfg.model, num_labels=14, mode="dp-full"))
    result = train(cfg, tiny_splits, progress=False, keep_model=True)
    assert result.privacy.grad_sample_mode == "ghost"  # the faster default for full fine-tuning
    assert result.parameters["trainable"] == result.parameters["total"]
    after = _weights(result.model)
    assert all(not torch.equal(before[n], after[n]) for n in before)


def test_validation_thresholds_under_dp_are_flagged(tiny_config, tiny_splits):
    result = train(
        tiny_config.replace(mode="dp-lora", noise_multiplier=1.0, threshold_policy="validation"),
        tiny_splits,
        progress=False,
    )
    assert len(result.extra["thresholds"]) == 14
    assert "does not cover" in result.extra["privacy_warning"]
    plain = train(tiny_config, tiny_splits, progress=False)
    assert "privacy_warning" not in plain.extra


@pytest.mark.parametrize(
    ("flat", "message"),
    [
        ({"mode": "dp-full"}, "dp-full needs exactly one of epsilon or noise_multiplier"),
        ({"mode": "dp-lora", "epsilon": 1.0, "grad_sample_mode": "ew"}, "grad_sample_mode must be one of"),
        ({"mode": "lora", "max_epsilon": 1.0}, "max_epsilon only applies"),
        ({"physical_batch_size": 0}, "physical_batch_size must be positive"),
        ({"threshold_policy": "best"}, "threshold_policy must be one of"),
    ],
)
def test_new_parameters_validate_with_messages_that_name_them(flat, message):
    with pytest.raises(ValueError, match=message):
        RunConfig.from_flat(flat)


def _write_config(cfg: RunConfig, path) -> str:
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return str(path)


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _run_bounded(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own process group; on timeout kill the whole group (torchrun's workers too)."""
    import signal

    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{' '.join(cmd[:6])} ... did not finish in {timeout} s")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_torchrun_two_processes_spend_the_epsilon_of_one(tiny_config, tiny_splits, tmp_path):
    cfg = tiny_config.replace(mode="dp-lora", noise_multiplier=1.0, epochs=1)
    out = tmp_path / "dist.json"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "dpcore", "train", "--config", _write_config(cfg, tmp_path / "c.yml"),
        "--results", "", "--output", str(out), "--no-progress",
    ]  # fmt: skip
    done = _run_bounded(cmd, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    distributed = RunResult.load(out)
    single = train(cfg, tiny_splits, progress=False)
    assert distributed.extra["world_size"] == 2
    assert distributed.privacy.steps == single.privacy.steps
    assert distributed.privacy.sample_rate == single.privacy.sample_rate
    assert distributed.privacy.epsilon_rdp == single.privacy.epsilon_rdp
    assert distributed.privacy.epsilon_prv == single.privacy.epsilon_prv
    assert all(math.isfinite(e.train_loss) for e in distributed.epochs)


def test_command_line_trains_and_reuses_the_stored_run(tiny_config, tmp_path):
    cfg = tiny_config.replace(mode="dp-lora", noise_multiplier=1.0)
    args = ["-m", "dpcore", "train", "--config", _write_config(cfg, tmp_path / "c.yml")]
    args += ["--results", str(tmp_path / "store"), "--no-progress"]
    first = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=240, env=_env())
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads(first.stdout)
    stored = tmp_path / "store" / f"{cfg.config_hash()}.json"
    assert summary["config_hash"] == cfg.config_hash() and stored.is_file()
    mtime = stored.stat().st_mtime_ns
    again = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=240, env=_env())
    assert again.returncode == 0 and json.loads(again.stdout) == summary
    assert stored.stat().st_mtime_ns == mtime  # reused, not retrained
