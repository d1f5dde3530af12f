"""A trained classifier as a folder you can take away: save it, load it back, predict with it.

The folder holds the trained weights (PEFT adapters in the LoRA modes, the whole encoder in the full modes or
when adapters are merged), the head, the tokenizer, a manifest (``dpcore_classifier.json``: the resolved
configuration, thresholds, label names, privacy report, what epsilon covers and what it does not, library
versions) and a model card (``README.md``, see :mod:`dpcore.release.model_card`). The base encoder is referenced by
name, not copied, unless the adapters are merged; its weights' SHA-256 is kept, so that adapters are never
loaded onto a different encoder by mistake.

>>> load_classifier("/no/such/folder")
Traceback (most recent call last):
...
ValueError: model folder /no/such/folder: does not exist
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from dpcore.models import (
    MultiLabelClassifier,
    load_backbone,
    load_tokenizer,
    quiet_checkpointing_deprecation,
    resolve_model_path,
    set_attention,
)
from dpcore.release.inference import DEFAULT_BATCH_SIZE, probabilities, use_onednn_linear
from dpcore.release.model_card import model_card
from dpcore.training.coverage import outside_epsilon
from dpcore.training.precision import resolve_precision
from dpcore.training.released import MANIFEST as MANIFEST_FIELDS
from dpcore.training.result import PrivacyReport, RunResult, library_versions

FORMAT = "dpcore-classifier"
FORMAT_VERSION = 1
MANIFEST = "dpcore_classifier.json"
HEAD = "head.safetensors"
ADAPTERS = "adapters"  # PEFT ``save_pretrained`` folder
ENCODER = "encoder"  # a whole transformers encoder (full modes, or merged adapters)
TOKENIZER = "tokenizer"
CARD = "README.md"
# What the trained encoder weights are: LoRA adapters on the base, a whole encoder (trained, or adapters
# merged into the base), or the base itself (only the head trained: a linear probe).
WEIGHTS = ("adapters", "encoder", "merged", "base")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No "Writing model shards" bar and no deprecation noise from PEFT probing the model: a save or load
    says nothing about the run."""
    hf_logging.disable_progress_bar()
    try:
        with quiet_checkpointing_deprecation():
            yield
    finally:
        hf_logging.enable_progress_bar()


def save_classifier(result: RunResult, folder: str | Path, *, merge: bool = False) -> Path:
    """Write ``result``'s model (from ``train(..., keep_model=True)``) to ``folder`` as a saved classifier.

    ``merge=True`` merges LoRA adapters into the encoder (``merge_and_unload``) and saves it whole: a
    self-contained folder, a little faster to predict with, that no longer needs the base encoder.

    A DP run is saved only if its noise and sampling came from the secret generators (see
    :func:`check_releasable`).
    """
    if not isinstance(result.model, MultiLabelClassifier):
        raise ValueError(
            "this run result has no model: train with keep_model=True (a stored result keeps none)"
        )
    check_releasable(result.privacy)
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()) and not (folder / MANIFEST).is_file():
        raise ValueError(f"model folder {folder}: exists and is not a saved classifier; choose an empty one")
    folder.mkdir(parents=True, exist_ok=True)
    model, cfg = result.model, result.config["model"]
    for part in (ADAPTERS, ENCODER, TOKENIZER):
        shutil.rmtree(folder / part, ignore_errors=True)  # overwriting a saved classifier: no stale parts
    with _quiet():
        weights = _save_backbone(model.backbone, folder, cfg, merge=merge)
    head = {k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}
    save_file(head, str(folder / HEAD))
    load_tokenizer(cfg["model"]).save_pretrained(folder / TOKENIZER)
    manifest = build_manifest(result, weights=weights, base_sha256=_base_sha256(cfg["model"]))
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    (folder / CARD).write_text(model_card(manifest))
    return folder


def check_releasable(privacy: PrivacyReport | None) -> None:
    """Refuse to release a DP model whose noise anyone with the folder could replay.

    A research run seeds its sampler and noise from ``train.seed``, which the manifest publishes: whoever
    holds the folder could regenerate every step's noise and subtract it, and epsilon would mean nothing
    against them. Refusing (rather than warning in the card) keeps a replayable model from ever leaving as a
    release; a non-private run promises nothing, so its seed changes nothing.
    """
    if privacy is not None and not privacy.secure_rng:
        raise ValueError(
            "privacy.secure_rng is false: this DP run's noise is seeded by train.seed, which the saved "
            "folder publishes, so anyone holding it could replay the noise; train it for release "
            "(`dpcore train --save-model`, train(..., release=True)) without privacy.secure=false"
        )


def _save_backbone(backbone: nn.Module, folder: Path, cfg: dict[str, Any], *, merge: bool) -> str:
    """Save what training changed in the encoder; returns its kind (one of ``WEIGHTS``)."""
    if isinstance(backbone, PeftModel):
        if not merge:
            backbone.save_pretrained(folder / ADAPTERS)
            # PEFT's template card, mostly "more information needed", would contradict the folder's card.
            (folder / ADAPTERS / CARD).unlink(missing_ok=True)
            return "adapters"
        # Merged from the saved adapters onto a fresh base, so the caller's model is left as it was.
        with tempfile.TemporaryDirectory() as tmp:
            backbone.save_pretrained(tmp)
            base = load_backbone(cfg["model"], num_layers=cfg["num_layers"])
            merged = PeftModel.from_pretrained(base, tmp).merge_and_unload()
        merged.save_pretrained(folder / ENCODER)
        return "merged"
    if merge or any(p.requires_grad for p in backbone.parameters()):
        backbone.save_pretrained(folder / ENCODER)
        return "encoder"
    return "base"  # nothing in the encoder trained: the head alone is the model


def _base_sha256(name: str) -> str | None:
    """SHA-256 over the weight files of a local base encoder (None for a hub id: nothing local to hash)."""
    path = Path(resolve_model_path(name))
    if not path.is_dir():
        return None
    digest = hashlib.sha256()
    for file in sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin")):
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def build_manifest(result: RunResult, *, weights: str, base_sha256: str | None) -> dict[str, Any]:
    """What the folder holds and how it was made, as plain JSON values."""
    cfg = result.config
    thresholds = result.extra.get("thresholds")
    n = len(result.label_names)
    name = cfg["model"]["model"]
    local = Path(name).is_dir()
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "weights": weights,
        "base_model": {
            "name": name,
            # A relative folder would break from another working directory: its absolute path is kept.
            "path": str(Path(name).resolve()) if local else None,
            "num_layers": cfg["model"]["num_layers"],
            "sha256": base_sha256,
        },
        "label_set": cfg["teacher"]["label_set"],
        "label_names": list(result.label_names),
        "thresholds": [float(t) for t in thresholds]
        if thresholds
        else [float(cfg["train"]["threshold"])] * n,
        "threshold_source": "validation" if thresholds else "config",
        "text_column": cfg["data"]["text_column"],
        "max_length": cfg["model"]["max_length"],
        "pooling": cfg["model"]["pooling"],
        # The attention kernel the model was trained and evaluated with: the exact path reloads with it, so
        # that its probabilities are bit for bit the trained model's (kernels differ in the last bits).
        "attention": result.extra.get("attention"),
        "config": cfg,
        "config_hash": result.config_hash,
        "data": dict(result.data),
        "metrics": _metric_summary(result.metrics),
        # False for a corpus without reference labels: the card then reports agreement with the teacher only.
        "reference_labels": result.has_reference_labels,
        "privacy": dataclasses.asdict(result.privacy) if result.privacy is not None else None,
        "covered_by_epsilon": result.covered_by_epsilon,
        "privacy_warning": result.extra.get("privacy_warning"),
        "stop_reason": result.extra.get("stop_reason", "completed"),
        "code_fingerprint": result.code_fingerprint,
        "versions": {"trained_with": dict(result.versions), "saved_with": library_versions()},
        "saved_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    # What this folder releases outside epsilon, read from the manifest itself (the registry says why).
    outside = outside_epsilon(manifest, private=result.privacy is not None, registry=MANIFEST_FIELDS)
    if not thresholds:
        outside.pop("thresholds", None)  # the configuration's own: nothing was tuned on private data
    manifest["outside_epsilon"] = outside
    return manifest


def _metric_summary(metrics: dict[str, Any]) -> dict[str, float]:
    """Test weighted / micro / macro F1 against the reference labels and the teacher, where present."""
    out = {}
    for key in ("test_vs_reference", "test_vs_teacher"):
        for avg in ("weighted", "micro", "macro"):
            value = (metrics.get(key) or {}).get("f1", {}).get(avg)
            if value is not None:
                out[f"{key}_f1_{avg}"] = float(value)
    return out


# Reports this close to a threshold are re-run in float32 (SavedClassifier.predict_proba). The largest
# bfloat16-against-float32 probability difference benchmarks/bench_precision.py measured on a trained
# MiniLM-L6 was 0.0144 (14,000 label cells): 0.02 leaves a third more, and re-runs about a tenth of reports.
BF16_RECHECK_MARGIN = 0.02


@dataclass
class SavedClassifier:
    """A loaded classifier: the model (eval mode), its tokenizer, thresholds, label names and provenance."""

    model: MultiLabelClassifier
    tokenizer: PreTrainedTokenizerBase
    config: dict[str, Any]
    label_names: list[str]
    thresholds: list[float]
    privacy: PrivacyReport | None
    manifest: dict[str, Any]
    folder: Path
    precision: str = "float32"  # the forward pass's arithmetic (bfloat16 only on the fast path)

    @property
    def max_length(self) -> int:
        return int(self.manifest["max_length"])

    def predict_proba(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        sort_by_length: bool = True,
        progress: Any = None,
    ) -> np.ndarray:
        """Probabilities ``[len(texts), labels]`` (float32), in the order of ``texts``; ``progress`` (a tqdm
        bar) advances by each batch's reports.

        Under bfloat16, a report with any probability within :data:`BF16_RECHECK_MARGIN` of its label's
        threshold is run again in float32 and keeps those probabilities: bfloat16's rounding (about 1e-2)
        then cannot flip a label, so labels equal the float32 model's wherever its error is below the
        margin, for the price of re-running the few borderline reports."""
        probs = self._probabilities(texts, batch_size, sort_by_length, progress, self.precision)
        if self.precision == "bfloat16" and len(texts):
            near = self.borderline(probs)
            if near.any():
                rows = np.flatnonzero(near)
                subset = [texts[i] for i in rows]
                probs[rows] = self._probabilities(subset, batch_size, sort_by_length, None, "float32")
        return probs

    def borderline(self, probs: np.ndarray, margin: float | None = None) -> np.ndarray:
        """Which rows of ``probs`` have a probability within ``margin`` (default
        :data:`BF16_RECHECK_MARGIN`) of its label's threshold."""
        gap = np.abs(probs - np.asarray(self.thresholds, dtype=np.float32))
        return (gap < (BF16_RECHECK_MARGIN if margin is None else margin)).any(axis=1)

    def _probabilities(
        self, texts: Sequence[str], batch_size: int, sort_by_length: bool, progress: Any, precision: str
    ) -> np.ndarray:
        return probabilities(
            self.model,
            self.tokenizer,
            texts,
            max_length=self.max_length,
            batch_size=batch_size,
            sort_by_length=sort_by_length,
            progress=progress,
            precision=precision,
        )

    def predict(self, texts: Sequence[str], *, batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """Labels ``[len(texts), labels]`` as 1 (positive) or 0 (negative), at the saved thresholds."""
        return self.labels(self.predict_proba(texts, batch_size=batch_size))

    def labels(self, probs: np.ndarray) -> np.ndarray:
        return (probs >= np.asarray(self.thresholds, dtype=np.float32)).astype(np.int8)


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of a saved classifier; a folder that is not one is one line naming what is missing."""
    folder = Path(folder)
    if not folder.exists():
        raise ValueError(f"model folder {folder}: does not exist")
    if not folder.is_dir():
        raise ValueError(f"model folder {folder}: is a file, not a saved classifier's folder")
    path = folder / MANIFEST
    if not path.is_file():
        raise ValueError(
            f"model folder {folder}: not a saved dpcore classifier (no {MANIFEST}; "
            "save one with `dpcore train --save-model` or dpcore.release.saved_model.save_classifier)"
        )
    try:
        manifest = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"file {path}: not JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"file {path}: not a {FORMAT} manifest")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"file {path}: format version {manifest['format_version']} is newer than this dpcore"
        )
    if manifest.get("weights") not in WEIGHTS:
        raise ValueError(f"file {path}, field weights: {manifest.get('weights')!r} is not one of {WEIGHTS}")
    needed = [HEAD, TOKENIZER] + {"adapters": [ADAPTERS], "encoder": [ENCODER], "merged": [ENCODER]}.get(
        manifest["weights"], []
    )
    missing = [p for p in needed if not (folder / p).exists()]
    if missing:
        raise ValueError(f"model folder {folder}: incomplete saved classifier, missing {', '.join(missing)}")
    return manifest


def _base_name(manifest: dict[str, Any]) -> str:
    base = manifest["base_model"]
    name = base["name"]
    # A relative folder saved from elsewhere: the absolute path recorded at save time.
    return base["path"] if base.get("path") and not Path(name).is_dir() else name


def _check_base(manifest: dict[str, Any], folder: Path) -> str:
    name = _base_name(manifest)
    want = manifest["base_model"].get("sha256")
    if want is not None:
        got = _base_sha256(name)
        if got is not None and got != want:
            raise ValueError(
                f"model folder {folder}: base encoder {name!r} is not the one the model was trained on "
                f"(weights SHA-256 {got[:12]}..., expected {want[:12]}...)"
            )
    return name


def load_classifier(
    folder: str | Path,
    *,
    merge: bool = False,
    fast: bool = False,
    device: str = "cpu",
    precision: str = "auto",
) -> SavedClassifier:
    """Load a folder written by :func:`save_classifier`.

    By default the model computes exactly what the trained model did (bit for bit, on the same machine).
    ``merge=True`` merges LoRA adapters into the encoder; ``fast=True`` merges them and, on CPU, runs the
    encoder's linear layers through oneDNN (see :mod:`dpcore.release.inference`). Both are faster, and their
    probabilities agree with the exact model to float rounding (about 1e-6), not bit for bit.

    On the fast path ``precision`` (``auto``: the start-up probe's choice for this machine, see
    :mod:`dpcore.training.precision`) may be ``bfloat16``: autocast instead of the float32 oneDNN kernels,
    faster where the CPU has bfloat16 matrix units, with probabilities that agree to bfloat16 rounding
    (about 1e-2; the benchmark states the largest difference and label agreement). The exact path is
    always float32.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    cfg = manifest["config"]
    kind = manifest["weights"]
    with _quiet():
        if kind in ("adapters", "base"):
            name = _check_base(manifest, folder)
            backbone = load_backbone(name, num_layers=manifest["base_model"]["num_layers"])
            if kind == "adapters":
                backbone = PeftModel.from_pretrained(backbone, folder / ADAPTERS)
                if merge or fast:
                    backbone = backbone.merge_and_unload()
        else:
            backbone = load_backbone(str(folder / ENCODER))
    model = MultiLabelClassifier(
        backbone, num_labels=len(manifest["label_names"]), pooling=manifest["pooling"]
    )
    model.head.load_state_dict(load_file(str(folder / HEAD)))
    model.to(device).eval()
    if not fast and manifest.get("attention"):
        set_attention(model, manifest["attention"], torch.device(device))
    chosen = resolve_precision(precision, torch.device(device)) if fast else "float32"
    if fast and device == "cpu" and chosen == "float32":
        use_onednn_linear(model.backbone)
    privacy = manifest.get("privacy")
    known = {f.name for f in dataclasses.fields(PrivacyReport)}
    return SavedClassifier(
        model=model,
        tokenizer=AutoTokenizer.from_pretrained(folder / TOKENIZER),
        config=cfg,
        label_names=list(manifest["label_names"]),
        thresholds=[float(t) for t in manifest["thresholds"]],
        # Fields a later dpcore added are kept in the manifest but not forced into this version's report.
        privacy=PrivacyReport(**{k: v for k, v in privacy.items() if k in known}) if privacy else None,
        manifest=manifest,
        folder=folder,
        precision=chosen,
    )
