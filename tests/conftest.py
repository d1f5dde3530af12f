"""Shared fixtures: a tiny randomly initialised BERT saved once per session, and small splits."""

from __future__ import annotations

import warnings

import pytest
import torch

from dpcore.config import RunConfig
from dpcore.models import save_tiny_bert


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Tiny models on shared CPU cores: one intra-op thread is many times faster than spinning threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), num_layers=2, hidden=32))


@pytest.fixture(scope="session")
def tiny_config(tiny_model: str) -> RunConfig:
    """A configuration that trains in about a second."""
    return RunConfig.from_flat(
        {
            "model": tiny_model,
            "n_reports": 120,
            "max_length": 48,
            "epochs": 1,
            "batch_size": 16,
            "lora_targets": ["query", "value"],
        }
    )


@pytest.fixture(scope="session")
def tiny_splits(tiny_config: RunConfig):
    from dpcore.pipeline import prepare_splits

    return prepare_splits(tiny_config)


@pytest.fixture(autouse=True)
def _quiet_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield
