"""dpcore: differentially private LoRA fine-tuning for radiology report classification.

A package per layer, each importing only from the layers below it (``make lint`` checks this):

- foundations: :mod:`dpcore.labels`, :mod:`dpcore.config`, :mod:`dpcore.data`, :mod:`dpcore.privacy`,
  :mod:`dpcore.metrics`, :mod:`dpcore.models`, :mod:`dpcore.labeling`;
- the engine: :mod:`dpcore.training`;
- orchestration: :mod:`dpcore.pipeline` (splits, the public warm start, the results store);
- uses of it: :mod:`dpcore.study` (the paper's experiments), :mod:`dpcore.release` (a trained model saved,
  loaded and used), :mod:`dpcore.attacks` (what models remember), :mod:`dpcore.plots` (the book's figures);
- the command line: :mod:`dpcore.cli`.
"""

__version__ = "0.1.0"
