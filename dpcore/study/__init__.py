"""Studies, the paper's experiments as data: a named grid of run configurations in a YAML file
(``studies/<name>.yml``) with profiles (:mod:`~dpcore.study.runner`), run through the results store, the tidy
table of their results with bootstrap and seed intervals (:mod:`~dpcore.study.tables`), and the command
``dpcore study run|show`` (:mod:`~dpcore.study.cli`). A study sits beside the release and the attacks, above
the orchestration that trains each run.
"""

from dpcore.study.runner import (
    DEFAULT_PROFILE,
    Study,
    StudyError,
    plan,
    run_study,
    study_configs_table,
)
from dpcore.study.tables import (
    aggregate_seeds,
    describe,
    paired_interval,
    per_label_long,
    save_table,
    study_table,
)

__all__ = [
    "DEFAULT_PROFILE",
    "Study",
    "StudyError",
    "aggregate_seeds",
    "paired_interval",
    "describe",
    "per_label_long",
    "plan",
    "run_study",
    "save_table",
    "study_configs_table",
    "study_table",
]
