"""A store of run results on disk, keyed by the hash of each run's configuration.

Sweeps and notebooks ask the store before training, so the book never trains the same configuration
twice. A stored result made by different dpcore code (another ``code_fingerprint``) is not reused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from dpcore.config import RunConfig
from dpcore.training import RunResult

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # dpcore/


# Modules that cannot change what a training run computes: commands, presentation, the attacks (which read
# runs or train their own, never through the store) and the use of a saved model. Editing them must not
# retrain every stored run of the book's studies.
# Folders end in "/" (everything below them).
NOT_TRAINING = (
    "attacks/",
    "release/",
    "cli.py",
    "study/cli.py",
    "study/tables.py",
    "plots.py",
    "__main__.py",
)


def code_fingerprint(*, scope: str = "training") -> str:
    """Hash of dpcore's Python sources and data files: results from other code are not reused.

    ``scope="training"`` hashes the code a training run depends on (the results store's key);
    ``scope="all"`` hashes every file of the package (what a chapter's execution may depend on).
    """
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*")):
        name = path.relative_to(PACKAGE_DIR).as_posix()
        if scope == "training" and any(
            name.startswith(part) if part.endswith("/") else name == part for part in NOT_TRAINING
        ):
            continue
        if path.is_file() and path.suffix in {".py", ".yml", ".yaml", ".json", ".txt", ".csv"}:
            digest.update(name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class ResultStore:
    """``root/<config hash>.json`` for every finished run."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path_for(self, cfg: RunConfig) -> Path:
        return self.root / f"{cfg.config_hash()}.json"

    def get(self, cfg: RunConfig) -> RunResult | None:
        """The stored result of ``cfg``, if one exists and was made by this code."""
        path = self.path_for(cfg)
        if not path.is_file():
            return None
        result = RunResult.load(path)
        return result if result.code_fingerprint == code_fingerprint() else None

    def put(self, result: RunResult) -> Path:
        return result.save(self.root / f"{result.config_hash}.json")

    def get_or_run(self, cfg: RunConfig, run: Callable[[RunConfig], RunResult]) -> RunResult:
        """The stored result of ``cfg``, or ``run(cfg)`` stored for next time."""
        found = self.get(cfg)
        if found is not None:
            return found
        result = run(cfg)
        result.code_fingerprint = code_fingerprint()
        self.put(result)
        return result


def archived_runs(folder: str | Path, configs: list[RunConfig]) -> dict[str, RunResult]:
    """The results in ``folder`` (one RunResult JSON each) that are runs of ``configs``: config hash -> result.

    An archived run is matched by its configuration as this code reads it (fields added since it was trained
    take their defaults), not by the hash it was saved under: a new option whose default reproduces the old
    behaviour must not orphan the archive. A file whose configuration no longer parses is skipped.

    >>> import tempfile
    >>> archived_runs(tempfile.mkdtemp(), [RunConfig()])
    {}
    """
    wanted = {cfg.config_hash() for cfg in configs}
    found: dict[str, RunResult] = {}
    for path in sorted(Path(folder).glob("*.json")):
        if path.name == "provenance.json":
            continue
        result = RunResult.load(path)
        try:
            key = RunConfig.from_dict(result.config).config_hash()
        except (ValueError, TypeError):
            continue
        if key in wanted:
            found[key] = result
    return found
